//! The records keyturn keeps of what it did — every issued token (never the token itself) and
//! every audit entry — and the queries that list them. Plain data, like `keys::KeyRecord`: the
//! store reads and writes them, the service decides what they mean, the web shows them.

use serde::Serialize;

use crate::clock::{self, Instant};
use crate::keys::KeyId;

/// What is recorded about an issued token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub jti: String,
    pub sub: String,
    pub kid: KeyId,
    pub aud: Vec<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub iat: Instant,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub exp: Instant,
    pub issued_by: String,
    /// The refresh family the token came from, if any.
    #[serde(skip)]
    pub family: Option<String>,
}

/// Which tokens a listing shows, by lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Not yet expired (revoked ones included: revocation is shown per token).
    Unexpired,
    Expired,
}

/// A listing of issued-token records: the API's and the dashboard's filters.
#[derive(Clone, Debug, Default)]
pub struct TokenQuery {
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub kid: Option<String>,
    pub lifetime: Option<Lifetime>,
    /// Page cursor: records before this one.
    pub before: Option<i64>,
    pub limit: u32,
}

/// One audit record: who did what to which target, when, and from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// The page cursor of this record.
    pub id: i64,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub at: Instant,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub detail: Option<String>,
}

/// Which audit records to list: every field narrows the search.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Part of the actor's name.
    pub actor: Option<String>,
    /// The start of the action (`key.` finds every key action).
    pub action: Option<String>,
    pub from: Option<Instant>,
    pub to: Option<Instant>,
    /// Page cursor: records older than this id.
    pub before: Option<i64>,
    pub limit: u32,
}
