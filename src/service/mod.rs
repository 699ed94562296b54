//! The one entry point that routes, the CLI and the scheduler call.
//!
//! `Keyturn` owns the store, the key-encryption key, the clock and the published snapshot.
//! It turns domain decisions (`keys::lifecycle::plan`) into transactions with their audit
//! records, and after each change rebuilds the in-memory snapshot the web layer serves from.
//!
//! Its methods are async and never block the runtime's threads: database work awaits the
//! store (whose SQLite connections live on threads of their own), and the few CPU-heavy
//! steps (argon2, key generation, RSA signatures) run on the blocking pool. The request hot
//! paths that need no database (`introspect`, `authenticate_api_key_cached`) are plain
//! functions over memory.

pub mod admins;
pub mod apikeys;
pub mod audit;
mod cache;
pub mod clients;
mod documents;
mod installation;
pub mod introspect;
pub mod issued;
pub mod kek;
pub mod key_changes;
pub mod overview;
pub mod policy;
pub mod revocations;
pub mod rotation;
pub mod sessions;
pub mod throttle;
pub mod tokens;

use documents::{discovery, serialize_jwks};
use installation::{cluster_secrets_given, schema_present, COPIED_AWAY_LABEL};
pub use installation::{database_location, installed, reuse_copied_database};
pub(crate) use installation::{installation_exists, refuse_copied_away};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use jsonwebtoken::DecodingKey;

use crate::clock::{Clock, Instant};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::error::{Error, Result};
use crate::keys::jwks::{self, Document};
use crate::keys::lifecycle::Policy;
use crate::keys::sealed::Kek;
use crate::keys::signer::SigningKey;
use crate::keys::{Algorithm, KeyId, KeyRecord, KeyState};
use crate::revocation::RevocationIndex;
use crate::store::{self, meta, ChangeMark, Store};

/// Below this much free space on the database's disk, keyturn reports itself not ready: a
/// token is answered only once recorded, and the next group commit may not fit.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// How long a cluster node keeps answering introspection from memory without hearing from
/// its database. Safe because a revocation exists only once the database recorded it: while
/// the database is down for every node, none can be made anywhere, so what a node holds is
/// complete. Only a node cut off alone could miss revocations made through other nodes, and
/// for at most this long, the same staleness a verifier polling the feed accepts; after it,
/// introspection answers 503 instead of guessing.
pub const SYNC_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

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

/// The keyturn service.
pub struct Keyturn {
    config: Arc<Config>,
    clock: Clock,
    store: Store,
    kek: Kek,
    data_dir: DataDir,
    published: RwLock<Arc<Published>>,
    /// This process's identity for the rotator lease.
    holder: String,
    /// Whether this process handed the lease over (a clean shutdown, `close`).
    lease_released: std::sync::atomic::AtomicBool,
    /// The store's mark of other processes' commits when the snapshot was last rebuilt: when
    /// another process (the CLI, a second daemon) commits, the snapshot is rebuilt too.
    seen: Mutex<Option<ChangeMark>>,
    /// Held through a reload, from its read to its install: two reloads at once (a local
    /// change and another node's notice) could otherwise finish out of order and leave the
    /// older state published.
    reloading: tokio::sync::Mutex<()>,
    /// Bumped whenever the policy changes, so the scheduler can follow a new cron expression.
    policy_version: tokio::sync::watch::Sender<u64>,
    /// Every revocation in force, for O(1) checks.
    revocations: Arc<RwLock<RevocationIndex>>,
    /// When revocations were last pruned.
    last_prune: Mutex<Option<Instant>>,
    /// Counters for `/metrics`.
    metrics: Arc<crate::metrics::Metrics>,
    /// The dashboard's administrators.
    admins: Arc<admins::Admins>,
    /// The audit log.
    audit: Arc<audit::Audit>,
    /// API key rows, so authenticating a request needs no database read.
    api_keys: apikeys::ApiKeyCache,
    /// OAuth client rows, for the same reason.
    clients: clients::ClientCache,
    /// Failed authentications per client address.
    throttle: throttle::Throttle,
    /// When this node last noted each API key's use in the database.
    api_key_uses: Mutex<HashMap<String, Instant>>,
    /// Signatures already verified, for repeated introspection and forward auth.
    verified: introspect::VerifiedCache,
    /// Since this node last compared its state with the database.
    synced: crate::clock::Watchdog,
}

impl std::fmt::Debug for Keyturn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyturn").field("store", &self.store).field("holder", &self.holder).finish_non_exhaustive()
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
        for row in keys.iter().filter(|r| r.record.state.is_published()) {
            if let Some(sealed) = &row.sealed_private {
                kek::open_private(&kek, &row.record, sealed)?;
            }
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
        let empty = Arc::new(Published {
            keys: Vec::new(),
            policy,
            jwks: jwks::serialize(&[]),
            openid_configuration: Document::new(b"{}".to_vec()),
            oauth_metadata: Document::new(b"{}".to_vec()),
            signers: BTreeMap::new(),
            verifiers: HashMap::new(),
        });
        let revocations = revocations::load_index(&store).await?;
        let throttle = throttle::Throttle::new(config.auth_failure_limit, config.auth_failure_window, clock.clone());
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let admins =
            Arc::new(admins::Admins::new(store.clone(), clock.clone(), metrics.clone(), config.issuer.clone()));
        let audit = Arc::new(audit::Audit::new(store.clone()));
        let service = Keyturn {
            config: Arc::new(config),
            clock,
            store,
            kek,
            data_dir,
            published: RwLock::new(empty),
            holder: random_id(12),
            lease_released: std::sync::atomic::AtomicBool::new(false),
            seen: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            policy_version: tokio::sync::watch::channel(0).0,
            revocations: Arc::new(RwLock::new(revocations)),
            last_prune: Mutex::new(None),
            metrics,
            admins,
            audit,
            api_keys: apikeys::ApiKeyCache::default(),
            clients: clients::ClientCache::default(),
            throttle,
            api_key_uses: Mutex::default(),
            verified: introspect::VerifiedCache::default(),
            synced: crate::clock::Watchdog::default(),
        };
        service.reload().await?;
        service.forget_api_keys().await;
        service.refresh_clients().await;
        service.tick().await?;
        Ok(service)
    }

    pub fn config(&self) -> &Config {
        &self.config
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
        self.published.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The timing policy in force.
    pub fn policy(&self) -> Policy {
        self.published().policy.clone()
    }

    /// Subscribes to policy changes (the scheduler follows the cron expression).
    pub fn watch_policy(&self) -> tokio::sync::watch::Receiver<u64> {
        self.policy_version.subscribe()
    }

    /// The process's counters.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The dashboard's administrators.
    pub fn admins(&self) -> &Arc<admins::Admins> {
        &self.admins
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<audit::Audit> {
        &self.audit
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Rebuilds the published snapshot from the database.
    pub async fn reload(&self) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let ((rows, stored), mark) = self
            .store
            .read_marked(|c| Box::pin(async move { Ok((store::keys::live(c).await?, store::settings::all(c).await?)) }))
            .await?;
        let current = self.published();
        let mut signers = BTreeMap::new();
        for row in &rows {
            if row.record.state != KeyState::Active {
                continue;
            }
            // Keep a signer already loaded for the same kid; open the others.
            if let Some(existing) = current.signers.get(&row.record.alg).filter(|s| *s.kid() == row.record.kid) {
                signers.insert(row.record.alg, existing.clone());
                continue;
            }
            let sealed = row.sealed_private.as_deref().ok_or_else(|| Error::KeyDoesNotLoad {
                kid: row.record.kid.clone(),
                reason: "an active key has no private key".into(),
            })?;
            let private = kek::open_private(&self.kek, &row.record, sealed)?;
            let signer = SigningKey::new(row.record.kid.clone(), row.record.alg, &private)
                .map_err(|e| Error::KeyDoesNotLoad { kid: row.record.kid.clone(), reason: e.to_string() })?;
            signers.insert(row.record.alg, Arc::new(signer));
        }
        let mut verifiers = HashMap::new();
        for row in rows.iter().filter(|r| r.record.state.is_published()) {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&row.record.public_jwk).map_err(|e| {
                Error::KeyDoesNotLoad { kid: row.record.kid.clone(), reason: format!("stored public key: {e}") }
            })?;
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| Error::KeyDoesNotLoad {
                kid: row.record.kid.clone(),
                reason: format!("stored public key: {e}"),
            })?;
            verifiers.insert(row.record.kid.to_string(), (row.record.alg, Arc::new(key)));
        }
        let keys: Vec<KeyRecord> = rows.into_iter().map(|r| r.record).collect();
        let policy = policy::effective(&self.config, &stored, Some(&current.policy));
        let policy_changed = policy != current.policy;
        let published = Published {
            jwks: serialize_jwks(&keys, self.config.jwks_x5c)?,
            openid_configuration: discovery(&self.config, &keys, true),
            oauth_metadata: discovery(&self.config, &keys, false),
            keys,
            policy,
            signers,
            verifiers,
        };
        *self.published.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(published);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(mark);
        if policy_changed {
            self.policy_version.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// Rebuilds the snapshot if another process changed the database since the last rebuild.
    pub async fn reload_if_changed(&self) -> Result<bool> {
        let seen = *self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = match seen {
            Some(mark) => self.store.changed_since(mark).await?,
            None => true,
        };
        if changed {
            self.forget_api_keys().await;
            self.refresh_clients().await;
            self.reload().await?;
            self.load_new_revocations().await?;
        }
        self.synced.reset();
        Ok(changed)
    }

    /// Woken when another node announces a change (PostgreSQL); `None` on SQLite, where
    /// housekeeping's check each second is how changes arrive.
    pub fn change_notices(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.store.change_notices()
    }

    /// Refuses answers from memory once this cluster node has gone [`SYNC_STALE_AFTER`]
    /// without hearing from its database. A single SQLite node's memory is always current.
    pub fn require_fresh_state(&self) -> Result<()> {
        let quiet = self.synced.elapsed();
        if self.store.dialect() == store::Dialect::Postgres && quiet > SYNC_STALE_AFTER {
            return Err(Error::Store(store::StoreError::Unavailable(format!(
                "this node has not reached the database for {}s; it does not answer from state that old",
                quiet.as_secs()
            ))));
        }
        Ok(())
    }

    /// How long `addr` must wait before it may authenticate again, when it failed too often.
    pub fn auth_refused(
        &self,
        addr: Option<std::net::IpAddr>,
        credential: throttle::Credential,
    ) -> Option<std::time::Duration> {
        let wait = self.auth_blocked(addr)?;
        self.metrics.auth_throttled(credential.as_str());
        Some(wait)
    }

    /// [`Self::auth_refused`] without counting a refusal (the caller already did).
    pub fn auth_blocked(&self, addr: Option<std::net::IpAddr>) -> Option<std::time::Duration> {
        self.throttle.refused(addr)
    }

    /// Counts a failed authentication from `addr`; returns how long it must now wait when
    /// this failure took it over `auth_failure_limit`.
    pub fn auth_failed(
        &self,
        addr: Option<std::net::IpAddr>,
        credential: throttle::Credential,
    ) -> Option<std::time::Duration> {
        let wait = self.throttle.failed(addr)?;
        self.metrics.auth_throttled(credential.as_str());
        if let Some(a) = addr {
            tracing::warn!(address = %a, credential = credential.as_str(), wait_secs = wait.as_secs(), "too many failed authentications from one address: refused with 429 until it waits");
        }
        Some(wait)
    }

    fn revocations_read(&self) -> RwLockReadGuard<'_, RevocationIndex> {
        self.revocations.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn revocations_write(&self) -> RwLockWriteGuard<'_, RevocationIndex> {
        self.revocations.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The algorithm to use: the one asked for if configured, else the first configured.
    pub fn resolve_alg(&self, alg: Option<Algorithm>) -> Result<Algorithm> {
        let alg = alg.unwrap_or(self.config.algorithms[0]);
        if !self.config.algorithms.contains(&alg) {
            return Err(Error::AlgorithmNotConfigured(alg));
        }
        Ok(alg)
    }

    /// Whether the daemon can serve: the database answers and every configured algorithm
    /// has an active key. The error says what is missing.
    pub async fn readiness(&self) -> std::result::Result<(), String> {
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
        Ok(())
    }
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
