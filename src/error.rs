//! The domain error. The web layer maps it to JSON (API) or pages (dashboard); the CLI
//! prints it. No variant carries a secret.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::keys::generate::KeyError;
use crate::keys::{Algorithm, KeyId};
use crate::store::StoreError;

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
    #[error("key {kid} failed to load: {reason}; refusing to sign with it. Nothing was changed")]
    KeyDoesNotLoad { kid: KeyId, reason: String },
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
