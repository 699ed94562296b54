//! Custody of the key-encryption key: finding or creating the key file at start-up (and
//! refusing a data dir whose key file has lost its database), the check value that detects a
//! replaced key before any private key is opened, opening sealed private keys, and
//! `kek rotate` with the recovery of an interrupted rotation or first start.

use std::path::{Path, PathBuf};

use super::{audited, Actor, Keys};
use crate::datadir::{self, DataDir};
use crate::error::{Error, Result};
use crate::keys::generate::{PrivateKey, PublicJwk};
use crate::keys::sealed::Kek;
use crate::keys::KeyRecord;
use crate::store::{self, meta};

/// A label sealed under the KEK at first start, so a replaced KEK file is detected even
/// before any key has been opened.
pub(super) const CHECK_LABEL: &str = "keyturn-kek-check";

/// Refuses to start when the data dir holds the key-encryption key keyturn made for it but no
/// database (or an empty one): the database was lost or moved, and starting afresh would
/// silently replace every key, client and API key. A key file that keyturn made exists only
/// once its database recorded it (`adopt_new`), so this is never an interrupted first start.
/// A key given from outside the data dir may start a new database: that is how deployments
/// hand it over on the first start.
pub(super) fn refuse_lost_database(kek_file: &Path, data_dir: &DataDir) -> Result<()> {
    let in_data_dir = match (kek_file.parent().map(std::fs::canonicalize), std::fs::canonicalize(&data_dir.root)) {
        (Some(Ok(parent)), Ok(root)) => parent == root,
        _ => false,
    };
    let database_missing = std::fs::metadata(&data_dir.database).map(|m| m.len() == 0).unwrap_or(true);
    if in_data_dir && database_missing && kek_file.exists() {
        return Err(Error::DataDir {
            path: data_dir.database.clone(),
            reason: format!(
                "is missing or empty beside the key-encryption key {kek}: the database was lost or moved. Restore it (from a backup, or `litestream restore`); to start over with new keys instead, delete {kek}. Nothing was changed",
                kek = kek_file.display()
            ),
        });
    }
    Ok(())
}

/// Gives a new key (made by `custody` or `rotate_kek`) its real name, once the database holds
/// its check value.
pub(super) fn adopt_new(kek_file: &Path) -> Result<()> {
    std::fs::rename(pending_path(kek_file), kek_file)
        .map_err(|e| Error::Kek { path: kek_file.to_owned(), reason: format!("replacing the key file: {e}") })
}

/// The KEK for a database whose check value is `stored_check`, and whether it is new (then it
/// waits under its pending name until the database records it; see `adopt_new`): an existing
/// database must open with the existing key; a key is created only when nothing was ever
/// sealed. Finishes or discards an interrupted `kek rotate` or first start first.
pub(super) fn custody(kek_file: &Path, stored_check: Option<&[u8]>) -> Result<(Kek, bool)> {
    finish_rotation(kek_file, stored_check)?;
    if let Some(check) = stored_check {
        return Ok((kek_of_database(kek_file, check)?, false));
    }
    if kek_file.exists() {
        return Ok((datadir::read_kek(kek_file)?, false));
    }
    // A pending file left by an interrupted first start never sealed anything.
    let pending = pending_path(kek_file);
    let _ = std::fs::remove_file(&pending);
    Ok((datadir::create_kek(&pending)?, true))
}

/// The key in `kek_file`, which must open the database's check value `check`: a missing
/// file, one that is not a key, and another key are each refused by name. Reads only.
fn kek_of_database(kek_file: &Path, check: &[u8]) -> Result<Kek> {
    if !kek_file.exists() {
        return Err(Error::Kek {
            path: kek_file.to_owned(),
            reason: "is missing, but the database holds keys sealed under a key-encryption key; restore the file or point KEYTURN_KEK_FILE at it. Nothing was changed".into(),
        });
    }
    let kek = datadir::read_kek(kek_file)?;
    if kek.open(CHECK_LABEL, check).is_err() {
        return Err(Error::KekMismatch { path: kek_file.to_owned(), what: "the database's check value".into() });
    }
    Ok(kek)
}

/// A new check value sealed under `kek`.
pub(super) fn check_value(kek: &Kek, kek_file: &Path) -> Result<Vec<u8>> {
    kek.seal(CHECK_LABEL, b"keyturn").map_err(|e| Error::Kek { path: kek_file.to_owned(), reason: e.to_string() })
}

/// What `config check` finds of the installation, changing nothing: the database the
/// settings point at is opened, and the key-encryption key is read and tried against the
/// database's check value. The answer is a line to print, or the problem in the words
/// start-up would use.
pub async fn check_installation(config: &crate::config::Config) -> Result<String> {
    let location = super::database_location(config)?;
    let kek_file = &config.kek_file;
    match super::installation_exists(config, &location).await {
        Ok(()) => {}
        Err(Error::NotInstalled(_)) => {
            if let store::Location::File(_) = location {
                refuse_lost_database(kek_file, &DataDir::new(&config.data_dir))?;
            }
            let kek = if kek_file.exists() {
                datadir::read_kek(kek_file)?;
                format!("the key-encryption key {} will seal its keys", kek_file.display())
            } else {
                format!("a new key-encryption key will be made at {}", kek_file.display())
            };
            return Ok(format!(
                "no keyturn database yet at {location}: `keyturn serve` or `keyturn init` creates it; {kek}"
            ));
        }
        Err(e) => return Err(e),
    }
    let store = store::Store::open_at(&location)?;
    super::refuse_copied_away(&store).await?;
    let version = store.schema_version().await?;
    let check = store.read(move |c| Box::pin(async move { meta::get(c, CHECK_LABEL).await })).await?;
    let Some(check) = check else {
        return Ok(format!("database {location} (schema version {version}) holds no sealed key yet"));
    };
    kek_of_database(kek_file, &check)?;
    Ok(format!(
        "database {location} (schema version {version}): the key-encryption key {} opens its keys",
        kek_file.display()
    ))
}

impl Keys {
    /// Fails unless this process's key-encryption key still opens the database's check value:
    /// after a `kek rotate` elsewhere, a process holding the old key must not seal new keys.
    pub(super) async fn ensure_kek_current(&self) -> Result<()> {
        let check = self.store.read(move |c| Box::pin(async move { meta::get(c, CHECK_LABEL).await })).await?;
        match check {
            Some(c) if self.kek.open(CHECK_LABEL, &c).is_err() => Err(Error::KekMismatch {
                path: self.config.kek_file.clone(),
                what: "the database's check value (the key-encryption key was rotated by another process; restart this one)".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Re-seals every private key under a new key-encryption key in one transaction, then
    /// replaces the key file atomically. Run it with no daemon on the data dir. Interrupted,
    /// it leaves a state that starts with either key (see `finish_rotation`).
    pub async fn rotate_kek(&self, actor: &Actor) -> Result<()> {
        let now = self.clock.now();
        if let Some((holder, until)) = self.store.read(|c| Box::pin(store::lease::current(c))).await? {
            if holder != self.holder && until > now {
                return Err(Error::Conflict("a keyturn daemon is running on this database (it holds the rotator lease): stop every keyturn process first".into()));
            }
        }
        self.ensure_kek_current().await?;
        let kek_err = |e: crate::keys::sealed::SealError| Error::Kek {
            path: self.config.kek_file.clone(),
            reason: e.to_string(),
        };
        let bytes = Kek::generate_bytes().map_err(kek_err)?;
        let new = Kek::from_bytes(bytes.as_ref()).map_err(kek_err)?;
        let pending = pending_path(&self.config.kek_file);
        datadir::write_secret_file(&pending, bytes.as_ref())
            .map_err(|e| Error::Kek { path: pending.clone(), reason: format!("cannot be written: {e}") })?;
        let check = check_value(&new, &self.config.kek_file)?;
        let rows = self.store.read(|c| Box::pin(store::keys::live(c))).await?;
        let mut resealed = Vec::new();
        // Keys a token holds have nothing sealed here.
        for row in rows.iter().filter(|r| r.record.custody == crate::keys::Custody::Software) {
            if let Some(sealed) = &row.sealed_private {
                let der = self.kek.open(row.record.kid.as_str(), sealed).map_err(kek_err)?;
                resealed.push((row.record.kid.clone(), new.seal(row.record.kid.as_str(), &der).map_err(kek_err)?));
            }
        }
        let by = actor.clone();
        let count = resealed.len();
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    for (kid, sealed) in &resealed {
                        store::keys::reseal(tx, kid, sealed).await?;
                    }
                    meta::set(tx, CHECK_LABEL, &check).await?;
                    audited(tx, now, &by, "kek.rotate", None, Some(&format!("{count} private keys re-sealed"))).await
                })
            })
            .await?;
        adopt_new(&self.config.kek_file)
    }
}

/// Where `kek rotate` writes the new key before the database is re-sealed under it.
pub fn pending_path(kek_file: &Path) -> PathBuf {
    let mut name = kek_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".new");
    kek_file.with_file_name(name)
}

/// Completes or discards an interrupted `kek rotate`: if the database's check value opens
/// under the pending key, the re-sealing committed and the pending file replaces the key
/// file; if it opens under the current key, the pending file is stale and removed.
fn finish_rotation(kek_file: &Path, check: Option<&[u8]>) -> Result<()> {
    let pending = pending_path(kek_file);
    let (Some(check), true) = (check, pending.exists()) else { return Ok(()) };
    let opens = |path: &Path| datadir::read_kek(path).map(|k| k.open(CHECK_LABEL, check).is_ok()).unwrap_or(false);
    if opens(&pending) && !opens(kek_file) {
        std::fs::rename(&pending, kek_file).map_err(|e| Error::Kek {
            path: kek_file.to_owned(),
            reason: format!("finishing an interrupted rotation: {e}"),
        })?;
        tracing::warn!(path = %kek_file.display(), "finished an interrupted key-encryption key rotation");
    } else if opens(kek_file) {
        let _ = std::fs::remove_file(&pending);
        tracing::warn!(path = %pending.display(), "removed the new key-encryption key of a rotation that did not commit");
    }
    Ok(())
}

/// Opens a sealed private key and checks it is the key its record describes.
pub(super) fn open_private(kek: &Kek, record: &KeyRecord, sealed: &[u8]) -> Result<PrivateKey> {
    // The KEK itself was verified against the check value first, so a key that does not
    // open means its row was altered: a flipped byte, or another key's ciphertext moved in.
    let der = kek.open(record.kid.as_str(), sealed).map_err(|e| Error::KeyDoesNotLoad {
        kid: record.kid.clone(),
        reason: format!(
            "its sealed private key does not open under the key-encryption key ({e}); the key-encryption key itself is right, so the database row was altered or holds another key's ciphertext"
        ),
    })?;
    let private = PrivateKey::from_der(record.alg, der);
    let public = PublicJwk::parse(&record.public_jwk).map_err(|reason| Error::KeyDoesNotLoad {
        kid: record.kid.clone(),
        reason: format!("stored public key: {reason}"),
    })?;
    private
        .check_matches(&record.kid, &public)
        .map_err(|e| Error::KeyDoesNotLoad { kid: record.kid.clone(), reason: e.to_string() })?;
    Ok(private)
}
