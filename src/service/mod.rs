//! The service: what keyturn does, by capability, with no HTTP in it.
//!
//! Each capability is a type holding what it needs: [`Keys`] (signing keys, rotation, the
//! policy and the published snapshot), [`Tokens`] (issuance, refresh, sessions,
//! introspection), [`Revocations`], [`Clients`] (OAuth clients, API keys, the failed
//! authentication throttle), [`Admins`] and [`Audit`]. They share the in-memory state in
//! [`Shared`]. [`Keyturn`] opens an installation, builds them together and runs the work
//! that spans them (following other processes' changes, housekeeping, readiness).
//! Each turns domain decisions (`keys::lifecycle::plan`) into transactions with their audit
//! records.
//!
//! Their methods are async and never block the runtime's threads: database work awaits the
//! store (whose SQLite connections live on threads of their own), and the few CPU-heavy
//! steps (argon2, key generation, RSA signatures) run on the blocking pool. The request hot
//! paths that need no database (`introspect`, `authenticate_api_key_cached`) are plain
//! functions over memory.

pub mod admins;
pub mod apikeys;
pub mod audit;
mod cache;
pub mod client_keys;
pub mod clients;
mod custody;
mod documents;
pub mod dpop;
pub mod federation;
mod installation;
pub mod introspect;
pub mod issued;
pub mod kek;
pub mod key_changes;
pub mod keyset;
pub mod overview;
pub mod policy;
mod refresh;
pub mod revocations;
pub mod rotation;
pub mod sessions;
pub mod shared;
pub mod throttle;
pub mod tokens;

#[cfg(test)]
mod tests;

pub use admins::Admins;
pub use audit::Audit;
pub use clients::Clients;
use installation::{cluster_secrets_given, schema_present, COPIED_AWAY_LABEL};
pub use installation::{database_location, installed, reuse_copied_database};
pub(crate) use installation::{installation_exists, refuse_copied_away};
pub use keyset::Keys;
pub use revocations::Revocations;
pub use shared::Shared;
pub use tokens::Tokens;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jsonwebtoken::DecodingKey;

use crate::clock::{Clock, Instant};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::keys::jwks::{self, Document};
use crate::keys::lifecycle::Policy;
use crate::keys::signer::SigningKey;
use crate::keys::{Algorithm, KeyId, KeyRecord};
use crate::store::{self, meta, Store};

/// Below this much free space on the database's disk, keyturn reports itself not ready: a
/// token is answered only once recorded, and the next group commit may not fit.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Who did something, and from where: every audit record names both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub source: Option<String>,
}

impl Actor {
    /// keyturn itself (the scheduler, start-up).
    pub fn system() -> Self {
        Actor { name: "system".into(), source: None }
    }

    /// A dashboard administrator.
    pub fn admin(name: &str, source: Option<String>) -> Self {
        Actor { name: format!("admin:{name}"), source }
    }

    /// A caller authenticated by an API key.
    pub fn api_key(name: &str, source: Option<String>) -> Self {
        Actor { name: format!("apikey:{name}"), source }
    }

    /// The command line on this host.
    pub fn cli() -> Self {
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
        Actor { name: format!("cli:{user}"), source: Some("local".into()) }
    }
}

/// What the web layer serves: made once per key-set change, shared by reference.
#[derive(Debug)]
pub struct Published {
    /// Every live key (pending, active, retired), oldest first.
    pub keys: Vec<KeyRecord>,
    pub policy: Policy,
    pub jwks: Document,
    pub openid_configuration: Document,
    pub oauth_metadata: Document,
    signers: BTreeMap<Algorithm, Arc<SigningKey>>,
    /// Verification keys of every published key, by kid, with the algorithm each is for:
    /// a token's algorithm comes from its key, never from its header.
    verifiers: HashMap<String, (Algorithm, Arc<DecodingKey>)>,
}

impl Published {
    /// The active key of `alg`, if any.
    pub fn signer(&self, alg: Algorithm) -> Option<&Arc<SigningKey>> {
        self.signers.get(&alg)
    }

    /// The verification key and algorithm of a published key.
    pub fn verifier(&self, kid: &str) -> Option<&(Algorithm, Arc<DecodingKey>)> {
        self.verifiers.get(kid)
    }

    /// The record of a live key.
    pub fn key(&self, kid: &KeyId) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| &k.kid == kid)
    }
}

/// The daemon: the capabilities, built together on one installation, and the periodic work
/// that spans them (following other processes' changes, housekeeping, readiness, the
/// overview). Handlers take the capability they use, not this.
pub struct Keyturn {
    config: Arc<Config>,
    clock: Clock,
    store: Store,
    data_dir: DataDir,
    metrics: Arc<crate::metrics::Metrics>,
    shared: Arc<Shared>,
    keys: Arc<Keys>,
    tokens: Arc<Tokens>,
    revocations: Arc<Revocations>,
    clients: Arc<Clients>,
    federation: Arc<federation::Federation>,
    admins: Arc<Admins>,
    audit: Arc<Audit>,
    /// When revocations were last pruned.
    last_prune: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Keyturn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyturn").field("store", &self.store).field("holder", &self.keys.holder).finish_non_exhaustive()
    }
}

impl Keyturn {
    /// Opens the data dir and database, checks every stored key against the key-encryption
    /// key, and brings each configured algorithm to one active and one pending key (applying
    /// any rotation that fell due while the daemon was down, once).
    ///
    /// Everything that can refuse is checked before anything is written, so a refusal
    /// leaves the data dir as it was. Creates the installation (data dir, key-encryption
    /// key, database, keys) when there is none: `serve` and `init` open this way.
    pub async fn open(config: Config, clock: Clock) -> Result<Keyturn> {
        Keyturn::open_with(config, clock, true).await
    }

    /// Opens an installation that exists, for the commands that only read or change one
    /// (`keys list`, `token issue`, `apikey create`, …): with no keyturn database where the
    /// settings point, it says where it looked and creates nothing, so a command run from
    /// the wrong directory never makes keys no server publishes.
    pub async fn open_existing(config: Config, clock: Clock) -> Result<Keyturn> {
        Keyturn::open_with(config, clock, false).await
    }

    async fn open_with(config: Config, clock: Clock, create: bool) -> Result<Keyturn> {
        crate::keys::install_crypto_provider();
        // A token the settings name must open (module, token, PIN) and do every configured
        // algorithm before anything is touched.
        let token = custody::Custodian::open_token(&config).await?;
        let data_dir = DataDir::new(&config.data_dir);
        let location = database_location(&config)?;
        // Without `create`, the installation must be there before anything is made: a SQLite
        // file is looked for, a PostgreSQL database opened (once) and asked for its schema.
        let opened = match (&location, create) {
            (_, true) => None,
            (store::Location::File(_), false) => {
                installation_exists(&config, &location).await?;
                None
            }
            (store::Location::Postgres(_), false) => {
                let store = Store::open_at(&location)?;
                schema_present(&store, &location).await?;
                Some(store)
            }
        };
        data_dir.prepare()?;
        match &location {
            store::Location::File(_) => kek::refuse_lost_database(&config.kek_file, &data_dir)?,
            store::Location::Postgres(_) => cluster_secrets_given(&config)?,
        }
        let store = match opened {
            Some(store) => store,
            None => Store::open_at(&location)?,
        };

        let stored_check = store.read(|c| Box::pin(meta::get(c, kek::CHECK_LABEL))).await?;
        refuse_copied_away(&store).await?;
        let (kek, new_kek) = kek::custody(&config.kek_file, stored_check.as_deref())?;

        store.migrate().await?;
        // Every key row must be readable, whatever its state: a row whose state cannot be
        // read would silently leave the key set (and its tokens unverifiable) if only the
        // live states were read.
        let keys = store
            .read(|c| Box::pin(store::keys::all(c)))
            .await
            .map_err(|e| Error::KeyStoreUnreadable(e.to_string()))?;
        let (config, kek) = (Arc::new(config), Arc::new(kek));
        let custodian = custody::Custodian::new(config.clone(), kek.clone(), token);
        for row in keys.iter().filter(|r| r.record.state.is_published()) {
            custodian.check(row)?;
        }
        if stored_check.is_none() {
            // Nodes starting together on a new database: the first check value written
            // stands, and every other node's key must open it.
            let check = kek::check_value(&kek, &config.kek_file)?;
            let stored = store
                .write(move |tx| {
                    Box::pin(async move {
                        meta::set_if_absent(tx, kek::CHECK_LABEL, &check).await?;
                        meta::get(tx, kek::CHECK_LABEL).await
                    })
                })
                .await?;
            if stored.as_deref().is_none_or(|c| kek.open(kek::CHECK_LABEL, c).is_err()) {
                return Err(Error::KekMismatch {
                    path: config.kek_file.clone(),
                    what: "the check value another node wrote to this new database".into(),
                });
            }
        }
        if new_kek {
            // The database now knows the new key: only now does it take its real name, so a
            // key file beside a database always belongs to it (see `refuse_lost_database`).
            kek::adopt_new(&config.kek_file)?;
        }

        let policy = policy::effective(&config, &store.read(|c| Box::pin(store::settings::all(c))).await?, None);
        let empty = Published {
            keys: Vec::new(),
            policy,
            jwks: jwks::serialize(&[]),
            openid_configuration: Document::new(b"{}".to_vec()),
            oauth_metadata: Document::new(b"{}".to_vec()),
            signers: BTreeMap::new(),
            verifiers: HashMap::new(),
        };
        let shared = Arc::new(Shared::new(
            empty,
            revocations::load_index(&store).await?,
            store.dialect(),
            config.max_revocation_lag,
        ));
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let keys = Arc::new(Keys::new(config.clone(), clock.clone(), store.clone(), shared.clone(), kek, custodian));
        let tokens = Arc::new(Tokens::new(&config, &clock, &store, &metrics, &shared, &keys));
        let revocations = Arc::new(Revocations::new(&clock, &store, &shared, &keys, &tokens));
        let remote_keys = Arc::new(
            crate::remote_keys::RemoteKeySets::new(clock.clone(), config.trusted_ca_file.as_deref())
                .map_err(Error::HttpClient)?,
        );
        let clients = Arc::new(Clients::new(&config, &clock, &store, &metrics, &shared, &revocations, &remote_keys));
        let federation = Arc::new(federation::Federation::new(&clock, &store, &clients, &remote_keys, &keys));
        let admins = Arc::new(Admins::new(store.clone(), clock.clone(), metrics.clone(), config.issuer.clone()));
        let audit = Arc::new(Audit::new(store.clone()));
        let service = Keyturn {
            config,
            clock,
            store,
            data_dir,
            metrics,
            shared,
            keys,
            tokens,
            revocations,
            clients,
            federation,
            admins,
            audit,
            last_prune: Mutex::new(None),
        };
        service.keys.reload().await?;
        service.clients.forget_api_keys().await;
        service.clients.refresh_clients().await;
        service.federation.refresh().await;
        service.tick().await?;
        Ok(service)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The settings, shared.
    pub fn config_handle(&self) -> Arc<Config> {
        self.config.clone()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Copies the database to `dest` (which must not exist), consistent while this and other
    /// processes serve and rotate.
    pub async fn backup_to(&self, dest: &std::path::Path) -> Result<()> {
        Ok(self.store.backup_to(dest).await?)
    }

    /// Copies this (SQLite) database into the empty PostgreSQL database at `url`: keys stay
    /// sealed under the same key-encryption key, with the same kids; revocations, clients,
    /// API keys, administrators, settings and the audit log come along, and the copy is
    /// audited in the new database. Returns each table's row count.
    ///
    /// The source is then marked as copied away (audited there too): a node started on it
    /// again refuses, since two live copies would be two installations — two key sets, and
    /// revocations each side never hears of. `keyturn db reuse` takes the mark back.
    pub async fn copy_database_to(
        &self,
        url: &crate::config::DatabaseUrl,
        by: &Actor,
    ) -> Result<Vec<(&'static str, u64)>> {
        let target = store::Target::parse(url.expose()).map_err(|e| Error::Invalid(vec![e]))?;
        let to = Store::open_at(&store::Location::Postgres(Box::new(target)))?;
        to.migrate().await?;
        let (now, from) = (self.clock.now(), self.store.location());
        let copier = by.clone();
        let counts = store::copy::copy_into(&self.store, &to, move |tx| {
            Box::pin(async move {
                audited(tx, now, &copier, "database.copy", None, Some(&format!("copied from {from}"))).await
            })
        })
        .await?;
        let mark = format!("{} at {}", url.shown, crate::clock::rfc3339(now));
        let by = by.clone();
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    meta::set(tx, COPIED_AWAY_LABEL, mark.as_bytes()).await?;
                    audited(
                        tx,
                        now,
                        &by,
                        "database.copied_away",
                        None,
                        Some(&format!("copied to {mark}; this database is no longer served")),
                    )
                    .await
                })
            })
            .await?;
        Ok(counts)
    }

    /// Where the database is, fit for logs and messages (never a password).
    pub fn database_shown(&self) -> String {
        self.store.location()
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The current snapshot: live keys, policy, JWKS, discovery and signers.
    pub fn published(&self) -> Arc<Published> {
        self.shared.published()
    }

    /// The timing policy in force.
    pub fn policy(&self) -> Policy {
        self.shared.policy()
    }

    /// The process's counters.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The in-memory state the capabilities share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The signing keys: rotation, key revocation, the policy, the published snapshot.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// Issuance, refresh, sessions, introspection and the issued-token list.
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// Revocations: made, fed to verifiers, pruned.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// OAuth clients and API keys, and who may authenticate.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    pub fn federation(&self) -> &Arc<federation::Federation> {
        &self.federation
    }

    /// The dashboard's administrators.
    pub fn admins(&self) -> &Arc<Admins> {
        &self.admins
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Follows what other processes committed: when the database changed since the snapshot
    /// was last rebuilt, re-reads API keys, clients, the key set and new revocations.
    pub async fn reload_if_changed(&self) -> Result<bool> {
        let asked = crate::clock::Stamp::now();
        let changed = match self.keys.seen() {
            Some(mark) => self.store.changed_since(mark).await?,
            None => true,
        };
        if changed {
            self.clients.forget_api_keys().await;
            self.clients.refresh_clients().await;
            self.federation.refresh().await;
            self.keys.reload().await?;
            self.revocations.load_new_revocations().await?;
        }
        self.shared.synced(asked);
        Ok(changed)
    }

    /// Woken when another node announces a change (PostgreSQL); `None` on SQLite, where
    /// housekeeping's check each second is how changes arrive.
    pub fn change_notices(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.store.change_notices()
    }

    /// Whether the daemon can serve: the database answers and every configured algorithm
    /// has an active key. The error says what is missing.
    pub async fn readiness(&self) -> std::result::Result<(), String> {
        // First what verifiers must know: introspection and /auth/verify refuse meanwhile.
        self.shared.require_fresh_state().map_err(|e| e.to_string())?;
        self.store.ping().await.map_err(|e| format!("database: {e}"))?;
        if let Some(why) = self.store.write_failure() {
            return Err(format!("the database cannot take writes: {why}"));
        }
        if let Some(free) = self.store.free_bytes().filter(|free| *free < MIN_FREE_BYTES) {
            return Err(format!("the database cannot take writes: its disk has {free} bytes free"));
        }
        let published = self.published();
        let missing: Vec<_> =
            self.config.algorithms.iter().filter(|a| published.signer(**a).is_none()).map(|a| a.as_str()).collect();
        if !missing.is_empty() {
            return Err(format!("no active key for {}", missing.join(", ")));
        }
        // A key a token holds must still be there and usable: keyturn never signs with
        // another key than the published active one, so without it the algorithm cannot issue.
        for alg in &self.config.algorithms {
            if let Some(signer) = published.signer(*alg).filter(|s| s.held_by_token()) {
                self.keys.custodian.usable(signer.kid()).await.map_err(|e| format!("{alg}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// For `config check`: opens the PKCS#11 token the settings name, if any, and says what it
/// can do (the PIN is read from its file, never shown).
pub async fn check_key_custody(config: &Config) -> Result<Option<String>> {
    let Some(token) = custody::Custodian::open_token(config).await? else { return Ok(None) };
    let algorithms: Vec<&str> = config.algorithms.iter().map(|a| a.as_str()).collect();
    Ok(Some(format!("PKCS#11 token '{}' opens, and can make and use keys of {}", token.label(), algorithms.join(", "))))
}

/// The algorithm to use: the one asked for if configured, else the first configured.
pub fn resolve_alg(config: &Config, alg: Option<Algorithm>) -> Result<Algorithm> {
    let alg = alg.unwrap_or(config.algorithms[0]);
    if !config.algorithms.contains(&alg) {
        return Err(Error::AlgorithmNotConfigured(alg));
    }
    Ok(alg)
}

/// Appends the audit record of `actor` doing `action` (to `target`) inside the caller's
/// transaction, so it commits with the change or not at all (DESIGN.md invariant 7).
pub(crate) async fn audited(
    tx: &store::Tx<'_>,
    now: Instant,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
) -> store::Result<()> {
    store::audit::record(tx, now, &actor.name, action, target, actor.source.as_deref(), detail).await
}

/// The stored form of a high-entropy secret (API key, client secret, refresh token): its
/// SHA-256. They carry 256 random bits, so a slow password hash would add nothing.
pub(crate) fn secret_digest(secret: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// Whether `presented` is the secret whose digest is `stored`, compared in constant time.
pub(crate) fn secret_matches(stored: &[u8], presented: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(stored, &secret_digest(presented)).is_ok()
}

/// Random identifier: `bytes` random bytes, base64url.
pub fn random_id(bytes: usize) -> String {
    use base64::Engine as _;
    let mut buf = vec![0u8; bytes];
    // The system RNG failing is not recoverable; aws-lc aborts before returning an error.
    let _ = aws_lc_rs::rand::fill(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
