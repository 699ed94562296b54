//! API keys: created from the command line (or by an admin), shown once, stored as a hash.
//!
//! A key reads `kt_<id>.<secret>`: the id finds the row, the secret (256 random bits) is
//! compared by its SHA-256 in constant time.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use zeroize::Zeroizing;

use super::revocations::RevokeTarget;
use super::{audited, random_id, secret_digest, secret_matches, Actor, Clients};
use crate::error::{Error, Result};
use crate::store::{self, apikeys::ApiKeyRow};

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Mint tokens.
    Issuer,
    /// Read revocations and introspect tokens.
    Verifier,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Issuer => "issuer",
            Role::Verifier => "verifier",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "issuer" => Ok(Role::Issuer),
            "verifier" => Ok(Role::Verifier),
            other => Err(format!("unknown role '{other}': use admin, issuer or verifier")),
        }
    }
}

/// An authenticated API key (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyIdentity {
    pub id: String,
    pub name: String,
    pub role: Role,
}

const PREFIX: &str = "kt_";

impl Clients {
    /// Creates an API key. The returned secret is the only copy: it is stored as a hash.
    pub async fn create_api_key(
        &self,
        role: Role,
        name: &str,
        actor: &Actor,
    ) -> Result<(ApiKeyIdentity, Zeroizing<String>)> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(Error::Invalid(vec!["name: use 1 to 64 letters, digits, '.', '_' or '-'".into()]));
        }
        let id = random_id(9);
        let secret = Zeroizing::new(random_id(32));
        let now = self.clock.now();
        let row = ApiKeyRow {
            id: id.clone(),
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            secret_hash: secret_digest(&secret),
            created_at: now,
            created_by: actor.name.clone(),
            revoked_at: None,
            last_used_at: None,
        };
        let by = actor.clone();
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    store::apikeys::insert(tx, &row).await?;
                    audited(
                        tx,
                        now,
                        &by,
                        "apikey.create",
                        Some(&row.id),
                        Some(&format!("{} key '{}'", row.role, row.name)),
                    )
                    .await
                })
            })
            .await?;
        let full = Zeroizing::new(format!("{PREFIX}{id}.{}", secret.as_str()));
        Ok((ApiKeyIdentity { id, name: name.to_owned(), role }, full))
    }

    /// The identity behind a presented key, or `None` if it is unknown, wrong or revoked.
    /// Reads the database unless the key's row is cached (and caches it).
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Option<ApiKeyIdentity>> {
        let Some((id, secret)) = split_presented(presented) else { return Ok(None) };
        // A row read before a concurrent forget must not be cached after it.
        let generation = self.api_keys.generation();
        let looked_up = id.to_owned();
        let Some(row) =
            self.store.read(move |c| Box::pin(async move { store::apikeys::get(c, &looked_up).await })).await?
        else {
            return Ok(None);
        };
        let role = row.role.parse().map_err(|e: String| Error::Store(store::StoreError::Corrupt(e)))?;
        let cached = Arc::new(CachedKey {
            identity: ApiKeyIdentity { id: row.id, name: row.name, role },
            secret_hash: row.secret_hash,
            revoked: row.revoked_at.is_some(),
        });
        self.api_keys.remember(generation, id.to_owned(), cached.clone());
        Ok(cached.check(secret))
    }

    /// [`Clients::authenticate_api_key`] from memory alone, for the request path: the answer,
    /// or `None` when the key's row is not cached and the database must be asked.
    pub fn authenticate_api_key_cached(&self, presented: &str) -> Option<Option<ApiKeyIdentity>> {
        let Some((id, secret)) = split_presented(presented) else { return Some(None) };
        let cached = self.api_keys.get(id)?;
        Some(cached.check(secret))
    }

    /// Re-reads every API key row into memory: after this process changed one, and whenever
    /// another process committed (so a key revoked by the CLI or another node stops within
    /// the follow interval, about a second). Holding them all means a node keeps
    /// authenticating its callers while the database is briefly away; if they cannot be
    /// read, the cache is emptied instead, so nothing stale is trusted.
    pub(super) async fn forget_api_keys(&self) {
        let rows = self.store.read(|c| Box::pin(store::apikeys::list(c))).await.ok();
        self.api_keys.replace(rows.map(|rows| {
            rows.into_iter().filter_map(|row| {
                let role = row.role.parse().ok()?;
                let identity = ApiKeyIdentity { id: row.id.clone(), name: row.name, role };
                Some((row.id, CachedKey { identity, secret_hash: row.secret_hash, revoked: row.revoked_at.is_some() }))
            })
        }));
    }
}

/// API key rows as last read, by id, so authenticating a request needs no database read.
pub(super) type ApiKeyCache = super::cache::RowCache<CachedKey>;

/// An API key's row as authentication needs it.
pub(super) struct CachedKey {
    identity: ApiKeyIdentity,
    secret_hash: Vec<u8>,
    revoked: bool,
}

impl CachedKey {
    fn check(&self, secret: &str) -> Option<ApiKeyIdentity> {
        (secret_matches(&self.secret_hash, secret) && !self.revoked).then(|| self.identity.clone())
    }
}

/// `kt_<id>.<secret>` split into id and secret, or `None` when it cannot be a key.
fn split_presented(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.strip_prefix(PREFIX)?.split_once('.')?;
    (id.len() <= 64 && secret.len() <= 128).then_some((id, secret))
}

/// An API key as lists show it (never its secret).
#[derive(Clone, Debug, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
    /// When it last authenticated a request (to the minute), if ever.
    pub last_used_at: Option<String>,
}

/// How often one node notes an API key's use in the database.
const USE_NOTED_EVERY: time::Duration = time::Duration::MINUTE;

impl Clients {
    /// Notes that the key `id` authenticated a request: written at most once a minute per
    /// node, so the dashboard can say when each key was last used without a write per call.
    pub async fn note_api_key_use(&self, id: &str) {
        let now = self.clock.now();
        {
            let mut noted = self.api_key_uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if noted.get(id).is_some_and(|at| now - *at < USE_NOTED_EVERY) {
                return;
            }
            noted.insert(id.to_owned(), now);
        }
        let id = id.to_owned();
        if let Err(e) =
            self.store.write(move |tx| Box::pin(async move { store::apikeys::used(tx, &id, now).await })).await
        {
            tracing::debug!("noting an API key's use: {e}");
        }
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyView>> {
        Ok(self
            .store
            .read(|c| Box::pin(store::apikeys::list(c)))
            .await?
            .into_iter()
            .map(|k| ApiKeyView {
                id: k.id,
                name: k.name,
                role: k.role,
                created_at: crate::clock::rfc3339(k.created_at),
                created_by: k.created_by,
                revoked_at: k.revoked_at.map(crate::clock::rfc3339),
                last_used_at: k.last_used_at.map(crate::clock::rfc3339),
            })
            .collect())
    }

    /// Revokes an API key: it stops authenticating at once.
    pub async fn revoke_api_key(&self, id: &str, actor: &Actor) -> Result<()> {
        let now = self.clock.now();
        let (id, by) = (id.to_owned(), actor.clone());
        let revoked = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    if !store::apikeys::revoke(tx, &id, now).await? {
                        return Ok(None);
                    }
                    audited(tx, now, &by, "apikey.revoke", Some(&id), None).await?;
                    Ok(store::apikeys::get(tx, &id).await?.map(|row| row.name))
                })
            })
            .await?;
        self.forget_api_keys().await;
        let name = revoked.ok_or_else(|| Error::NotFound("no such active API key".into()))?;
        // What the key minted ends with it: its tokens carry `client_id` "apikey:<name>",
        // and revoking that client covers their access tokens and their refresh families.
        let minter = Actor::api_key(&name, None).name;
        self.revocations.revoke(&RevokeTarget::Client(minter), "its API key was revoked", actor).await?;
        Ok(())
    }
}
