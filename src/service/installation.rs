//! Where the installation is, and what keeps a process from using the wrong one: a missing
//! database, one that `db copy` moved away, a cluster node without the shared secrets.

use super::{audited, Actor};
use crate::clock::Clock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::store::{self, meta, Store};

/// Where the configured database is: PostgreSQL when `database_url` is set, else the SQLite
/// file in the data dir.
pub fn database_location(config: &Config) -> Result<store::Location> {
    match &config.database_url {
        Some(url) => {
            let target = store::Target::parse(url.expose())
                .map_err(|e| Error::Invalid(vec![e]))?
                .with_deadline(config.database_timeout);
            Ok(store::Location::Postgres(Box::new(target)))
        }
        None => Ok(store::Location::File(DataDir::new(&config.data_dir).database)),
    }
}

/// The `meta` row `db copy` leaves in the database it copied: where to and when.
pub(super) const COPIED_AWAY_LABEL: &str = "copied-away-to";

/// Refuses a database marked by `db copy`, saying where it went and how to undo the mark.
pub(crate) async fn refuse_copied_away(store: &Store) -> Result<()> {
    let Some(mark) = store.read(move |c| Box::pin(async move { meta::get(c, COPIED_AWAY_LABEL).await })).await? else {
        return Ok(());
    };
    Err(Error::CopiedAway(format!(
        "the database {} was copied to {} by `keyturn db copy`, and the installation lives there now: serving or changing this copy as well would split it in two (two key sets, revocations one side never sees). Point database_url at the copy; or, to go back to this file and abandon the copy, run `keyturn db reuse` with this data dir. Nothing was changed",
        store.location(),
        String::from_utf8_lossy(&mark)
    )))
}

/// Takes back the mark `db copy` left in the SQLite database the configuration points at, so
/// it can be served again (audited). Returns where the copy had gone, or `None` when the
/// database carried no mark.
pub async fn reuse_copied_database(config: &Config, clock: &Clock) -> Result<Option<String>> {
    let location = database_location(config)?;
    installation_exists(config, &location).await?;
    let store = Store::open_at(&location)?;
    let now = clock.now();
    let mark = store
        .write(move |tx| {
            Box::pin(async move {
                let mark = meta::get(tx, COPIED_AWAY_LABEL).await?;
                if let Some(m) = &mark {
                    meta::delete(tx, COPIED_AWAY_LABEL).await?;
                    let detail = format!(
                        "the copy made to {} is abandoned; this database is served again",
                        String::from_utf8_lossy(m)
                    );
                    audited(tx, now, &Actor::cli(), "database.reuse", None, Some(&detail)).await?;
                }
                Ok(mark)
            })
        })
        .await?;
    Ok(mark.map(|m| String::from_utf8_lossy(&m).into_owned()))
}

/// Whether a keyturn installation exists where `config` points.
pub async fn installed(config: &Config) -> bool {
    match database_location(config) {
        Ok(location) => installation_exists(config, &location).await.is_ok(),
        Err(_) => false,
    }
}

/// Fails, saying where it looked, unless a keyturn database exists at `location`: a
/// non-empty SQLite file, or a PostgreSQL database holding keyturn's schema.
pub(crate) async fn installation_exists(config: &Config, location: &store::Location) -> Result<()> {
    match location {
        store::Location::File(path) => {
            if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
                return Ok(());
            }
            Err(Error::NotInstalled(format!(
                "no keyturn database at {} (data_dir = {}): run this command where the daemon runs, or point --config or KEYTURN_DATA_DIR at its data dir; `keyturn serve` or `keyturn init` creates a new installation",
                path.display(),
                config.data_dir.display()
            )))
        }
        store::Location::Postgres(_) => schema_present(&Store::open_at(location)?, location).await,
    }
}

/// Fails unless the PostgreSQL database `store` is connected to holds keyturn's schema.
pub(super) async fn schema_present(store: &Store, location: &store::Location) -> Result<()> {
    if store.schema_version().await? > 0 {
        return Ok(());
    }
    Err(Error::NotInstalled(format!(
        "the PostgreSQL database {location} holds no keyturn schema: check database_url; `keyturn serve` or `keyturn init` creates a new installation there (or `keyturn db copy` moves one in)"
    )))
}

/// Refuses to join a cluster without the cookie secret every node must share, so a dashboard
/// session works whichever node answers. (The key-encryption key is checked against the
/// cluster's check value: a node with another key refuses to start.)
pub(super) fn cluster_secrets_given(config: &Config) -> Result<()> {
    if config.secret_key.is_none() {
        return Err(Error::ClusterSetup(
            "with database_url set, every node needs the same cookie secret: set secret_key or secret_key_file (`head -c 32 /dev/urandom | base64`) to the same value on every node".into(),
        ));
    }
    Ok(())
}
