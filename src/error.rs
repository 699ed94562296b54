//! The domain error, and the store's error it wraps. The web layer maps them to JSON (API)
//! or pages (dashboard); the CLI prints them. No variant carries a secret.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::keys::generate::KeyError;
use crate::keys::{Algorithm, KeyId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("cannot listen on {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error("key-encryption key file {path}: {reason}")]
    Kek { path: PathBuf, reason: String },
    #[error("the key-encryption key in {path} does not decrypt {what}: it is the wrong or a replaced key file, or the database was altered. Restore the original key file (or point KEYTURN_KEK_FILE at it); nothing was changed")]
    KekMismatch { path: PathBuf, what: String },
    /// A cluster node lacks what every node must share.
    #[error("{0}. Nothing was changed")]
    ClusterSetup(String),
    #[error("{0}. Nothing was created")]
    NotInstalled(String),
    /// The HTTP client that fetches others' key sets could not be made (no TLS backend).
    #[error("{0}")]
    HttpClient(String),
    #[error("{0}")]
    CopiedAway(String),
    #[error("key {kid} failed to load: {reason}; refusing to sign with it. Nothing was changed")]
    KeyDoesNotLoad { kid: KeyId, reason: String },
    #[error("the key table cannot be read ({0}); refusing to start rather than drop the key from the key set. Restore the database from a backup; nothing was changed")]
    KeyStoreUnreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no active {0} key")]
    NoActiveKey(Algorithm),
    #[error("algorithm {0} is not configured")]
    AlgorithmNotConfigured(Algorithm),
    #[error("signing failed: {0}")]
    Sign(String),
    /// The key custodian (a PKCS#11 token) failed or refused: names the problem, never a PIN.
    #[error("key custody: {0}")]
    Custody(String),
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    /// RFC 6749 §5.2 `invalid_grant`: a refresh token that is unknown, spent, revoked or expired.
    #[error("{0}")]
    InvalidGrant(String),
    /// RFC 6749 §5.2 `invalid_scope`.
    #[error("{0}")]
    InvalidScope(String),
    /// RFC 8707 §2 `invalid_target`: a `resource` (or `audience`) the client may not get.
    #[error("{0}")]
    InvalidTarget(String),
    /// RFC 9449 §5 `invalid_dpop_proof`: a DPoP proof that fails a check, or was used before.
    #[error("{0}")]
    InvalidDpopProof(String),
    /// RFC 9449 §8 `use_dpop_nonce`: the proof lacks the server's current nonce; the client
    /// is handed `nonce` to make a new proof with.
    #[error("the DPoP proof must carry the server's nonce (DPoP-Nonce)")]
    UseDpopNonce { nonce: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A database failure, as the store reports it (the store converts its backend's errors
/// into it). Messages name what failed, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database backend's own error.
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    #[error("database {location} has schema version {found}, newer than this keyturn understands ({supported}); upgrade keyturn")]
    TooNew { location: String, found: i64, supported: i64 },
    #[error("cannot create database file {path}: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("inconsistent data in the database: {0}")]
    Corrupt(String),
    #[error("a state change lost a race: {0}")]
    Conflict(String),
    /// A refresh token was spent by a concurrent request first.
    #[error("the refresh token was already used")]
    RefreshSpent,
    /// A token was about to be recorded under a key that a rotation retired meanwhile.
    #[error("key {0} stopped signing")]
    KeyStoppedSigning(KeyId),
    #[error("the database task failed: {0}")]
    Task(String),
    /// The database cannot be reached (PostgreSQL down, unreachable, out of connections):
    /// the caller may retry shortly.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The server took the connection but refuses writes (SQLSTATE 25006: a standby, or a
    /// primary demoted by a failover). The store never lets it reach a caller: it drops the
    /// connection and every idle one, and answers [`StoreError::Unavailable`].
    #[error("the database server is read-only: {0}")]
    ReadOnly(String),
    /// The operation does not apply to this backend.
    #[error("{0}")]
    Unsupported(String),
}
