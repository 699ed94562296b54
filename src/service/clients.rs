//! OAuth clients: registered with allowed scopes, audiences and a maximum token lifetime;
//! their secret is shown once and stored as a hash.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

use super::shared::Shared;
use super::{audited, random_id, secret_digest, secret_matches, Actor, Revocations};
use crate::clock::{self, Clock, Instant};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{self, clients::ClientRow, Store};

/// A client as the API and CLI show it (never its secret).
#[derive(Clone, Debug, Serialize)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub max_ttl: String,
    pub created_at: String,
    pub disabled_at: Option<String>,
    /// Whether its token requests must come with a DPoP proof.
    pub dpop_required: bool,
    /// How it authenticates: `client_secret_basic` (or `_post`), `private_key_jwt`, or `none`
    /// (only workloads of a trusted issuer mapped to it get its tokens).
    pub token_endpoint_auth_method: &'static str,
    /// Where it publishes its public keys (private_key_jwt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Its public keys, held here (private_key_jwt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
}

impl From<&ClientRow> for ClientView {
    fn from(c: &ClientRow) -> Self {
        ClientView {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            scopes: c.scopes.clone(),
            audiences: c.audiences.clone(),
            max_ttl: crate::duration::format_duration(Duration::from_secs(c.max_ttl_secs)),
            created_at: clock::rfc3339(c.created_at),
            disabled_at: c.disabled_at.map(clock::rfc3339),
            dpop_required: c.dpop_required,
            token_endpoint_auth_method: if c.jwks.is_some() || c.jwks_uri.is_some() {
                "private_key_jwt"
            } else if c.secret_hash.is_empty() {
                "none"
            } else {
                "client_secret_basic"
            },
            jwks_uri: c.jwks_uri.clone(),
            jwks: c.jwks.as_deref().and_then(|j| serde_json::from_str(j).ok()),
        }
    }
}

/// A client that proved its secret: what issuance and revocation need, and no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedClient {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    /// The longest token it may get (capped again by the policy's `max_token_ttl`).
    pub max_ttl: Duration,
    /// Its token requests must come with a DPoP proof.
    pub dpop_required: bool,
}

/// What a new client may do.
#[derive(Clone, Debug, Default)]
pub struct NewClient {
    pub name: String,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub max_ttl: Option<Duration>,
    /// Every token request must come with a DPoP proof (RFC 9449).
    pub dpop_required: bool,
    /// How it will prove who it is.
    pub credential: NewCredential,
}

/// How a new client will authenticate.
#[derive(Clone, Debug, Default)]
pub enum NewCredential {
    /// A secret keyturn makes and shows once (`client_secret_basic` or `_post`).
    #[default]
    Secret,
    /// private_key_jwt with these public keys (a JWKS), held here.
    Jwks(serde_json::Value),
    /// private_key_jwt with the keys the client publishes at this URL.
    JwksUri(String),
    /// No credential at all: only workloads of a trusted issuer mapped to it get its tokens
    /// (workload identity federation).
    Federated,
}

/// The most keys a client may register inline (a few for rotation is the use).
pub const MAX_CLIENT_KEYS: usize = 10;
/// The largest inline JWKS a client may register.
pub const MAX_CLIENT_JWKS_BYTES: usize = 16 * 1024;

/// A scope token or audience: printable, no spaces or quotes (RFC 6749 §3.3 for scopes).
fn valid_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}

/// Who may ask for tokens: OAuth clients and API keys, each secret stored as a hash and
/// every row held in memory so authenticating needs no database read, and the throttle on
/// failed authentications per address.
pub struct Clients {
    pub(super) clock: Clock,
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shared: Arc<Shared>,
    pub(super) revocations: Arc<Revocations>,
    /// OAuth client rows.
    client_rows: ClientCache,
    /// API key rows.
    pub(super) api_keys: super::apikeys::ApiKeyCache,
    /// When this node last noted each API key's use in the database.
    pub(super) api_key_uses: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Failed authentications per client address.
    pub(super) throttle: super::throttle::Throttle,
    /// Clients' published key sets (private_key_jwt with a `jwks_uri`).
    pub(super) remote_keys: Arc<crate::remote_keys::RemoteKeySets>,
    /// What a client assertion's `aud` may name: the issuer and the endpoints that take one.
    pub(super) assertion_audiences: Vec<String>,
}

impl Clients {
    pub(super) fn new(
        config: &Arc<Config>,
        clock: &Clock,
        store: &Store,
        metrics: &Arc<Metrics>,
        shared: &Arc<Shared>,
        revocations: &Arc<Revocations>,
        remote_keys: &Arc<crate::remote_keys::RemoteKeySets>,
    ) -> Clients {
        Clients {
            clock: clock.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            shared: shared.clone(),
            revocations: revocations.clone(),
            client_rows: ClientCache::default(),
            api_keys: super::apikeys::ApiKeyCache::default(),
            api_key_uses: std::sync::Mutex::default(),
            throttle: super::throttle::Throttle::new(
                config.auth_failure_limit,
                config.auth_failure_window,
                clock.clone(),
            ),
            remote_keys: remote_keys.clone(),
            assertion_audiences: super::documents::assertion_audiences(config),
        }
    }

    /// Registers a client. The returned secret (none for a client with public keys) is the
    /// only copy.
    pub async fn create_client(
        &self,
        new: &NewClient,
        actor: &Actor,
    ) -> Result<(ClientView, Option<Zeroizing<String>>)> {
        let mut problems = Vec::new();
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            problems.push("name: give 1 to 100 printable characters".to_owned());
        }
        for s in &new.scopes {
            if !valid_word(s) {
                problems.push(format!("scope {s:?}: use printable characters without spaces or quotes"));
            }
        }
        if new.audiences.is_empty() {
            problems.push("audiences: give at least one audience the client may request".into());
        }
        for a in &new.audiences {
            if !valid_word(a) {
                problems.push(format!("audience {a:?}: use printable characters without spaces or quotes"));
            }
        }
        let policy_max = self.shared.policy().max_token_ttl;
        let max_ttl = new.max_ttl.unwrap_or(policy_max);
        if max_ttl.is_zero() || max_ttl > policy_max {
            problems.push(format!(
                "max_ttl must be between 1s and the maximum token lifetime ({})",
                crate::duration::format_duration(policy_max)
            ));
        }
        let (jwks, jwks_uri) = match &new.credential {
            NewCredential::Secret | NewCredential::Federated => (None, None),
            NewCredential::Jwks(set) => match crate::assertion::check_public_key_set(set, MAX_CLIENT_KEYS) {
                Ok(_) => (Some(set.to_string()), None),
                Err(why) => {
                    problems.push(format!("jwks: {why}"));
                    (None, None)
                }
            },
            NewCredential::JwksUri(url) => match crate::remote_keys::check_url(url) {
                Ok(()) => (None, Some(url.clone())),
                Err(why) => {
                    problems.push(format!("jwks_uri: {why}"));
                    (None, None)
                }
            },
        };
        if jwks.as_ref().is_some_and(|j| j.len() > MAX_CLIENT_JWKS_BYTES) {
            problems.push(format!("jwks: larger than {MAX_CLIENT_JWKS_BYTES} bytes"));
        }
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        // A client with public keys has no secret: an empty digest matches none.
        let secret = matches!(new.credential, NewCredential::Secret).then(|| Zeroizing::new(random_id(32)));
        let now = self.clock.now();
        let row = ClientRow {
            client_id: format!("kc_{}", random_id(12)),
            name: name.to_owned(),
            secret_hash: secret.as_deref().map(|s| secret_digest(s)).unwrap_or_default(),
            scopes: new.scopes.clone(),
            audiences: new.audiences.clone(),
            max_ttl_secs: max_ttl.as_secs(),
            created_at: now,
            created_by: actor.name.clone(),
            disabled_at: None,
            dpop_required: new.dpop_required,
            jwks,
            jwks_uri,
        };
        let (by, written) = (actor.clone(), row.clone());
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    let row = written;
                    store::clients::insert(tx, &row).await?;
                    audited(
                        tx,
                        now,
                        &by,
                        "client.create",
                        Some(&row.client_id),
                        Some(&format!("client '{}'", row.name)),
                    )
                    .await
                })
            })
            .await?;
        self.refresh_clients().await;
        Ok((ClientView::from(&row), secret))
    }

    pub async fn list_clients(&self) -> Result<Vec<ClientView>> {
        Ok(self.store.read(|c| Box::pin(store::clients::list(c))).await?.iter().map(ClientView::from).collect())
    }

    /// Disables a client: it can no longer authenticate, and every token issued to it is
    /// revoked.
    pub async fn disable_client(&self, client_id: &str, actor: &Actor) -> Result<ClientView> {
        let now = self.clock.now();
        let by = actor.clone();
        let id = client_id.to_owned();
        let changed = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let changed = store::clients::disable(tx, &id, now).await?;
                    if changed {
                        audited(tx, now, &by, "client.disable", Some(&id), None).await?;
                    }
                    Ok(changed)
                })
            })
            .await?;
        self.refresh_clients().await;
        let row = self
            .store
            .read({
                let id = client_id.to_owned();
                move |c| Box::pin(async move { store::clients::get(c, &id).await })
            })
            .await?
            .ok_or_else(|| Error::NotFound(format!("no client {client_id}")))?;
        if !changed {
            return Err(Error::Conflict(format!("client {client_id} is already disabled")));
        }
        self.revocations
            .revoke(&super::revocations::RevokeTarget::Client(client_id.to_owned()), "client disabled", actor)
            .await?;
        Ok(ClientView::from(&row))
    }

    /// The enabled client with this id and secret, or `None` (one answer for every failure).
    /// Reads the row from the database and remembers it; [`Self::authenticate_client_cached`]
    /// answers from memory.
    pub async fn authenticate_client(&self, client_id: &str, secret: &str) -> Result<Option<AuthenticatedClient>> {
        if client_id.len() > 128 || secret.len() > 256 {
            return Ok(None);
        }
        Ok(self.client_row(client_id).await?.and_then(|row| check_client(&row, secret)))
    }

    /// The row of `client_id`, from memory or else from the database (then remembered).
    pub(super) async fn client_row(&self, client_id: &str) -> Result<Option<Arc<ClientRow>>> {
        if let Some(row) = self.client_rows.get(client_id) {
            return Ok(Some(row));
        }
        // A row read before a concurrent refresh must not be remembered after it.
        let generation = self.client_rows.generation();
        let id = client_id.to_owned();
        let Some(row) = self.store.read(move |c| Box::pin(async move { store::clients::get(c, &id).await })).await?
        else {
            return Ok(None);
        };
        let row = Arc::new(row);
        self.client_rows.remember(generation, row.client_id.clone(), row.clone());
        Ok(Some(row))
    }

    /// [`Self::authenticate_client`] from memory: `None` when the client is not in memory
    /// (then read it from the database), else the answer.
    pub fn authenticate_client_cached(&self, client_id: &str, secret: &str) -> Option<Option<AuthenticatedClient>> {
        if client_id.len() > 128 || secret.len() > 256 {
            return Some(None);
        }
        if let Some(row) = self.client_rows.get(client_id) {
            return Some(check_client(&row, secret));
        }
        // Every client was loaded at the last refresh: an unknown id costs no database read
        // unless one was registered since (by another process, before its notice arrived).
        None
    }

    /// Reloads every client into memory: at start, after a local change, and when another
    /// process changed the database.
    pub(super) async fn refresh_clients(&self) {
        let rows = self.store.read(|c| Box::pin(store::clients::list(c))).await.ok();
        self.client_rows.replace(rows.map(|rows| rows.into_iter().map(|row| (row.client_id.clone(), row))));
    }
}

fn check_client(row: &ClientRow, secret: &str) -> Option<AuthenticatedClient> {
    secret_matches(&row.secret_hash, secret).then(|| enabled(row)).flatten()
}

/// What an enabled client may do; `None` when it is disabled.
pub(super) fn enabled(row: &ClientRow) -> Option<AuthenticatedClient> {
    row.disabled_at.is_none().then(|| AuthenticatedClient {
        client_id: row.client_id.clone(),
        scopes: row.scopes.clone(),
        audiences: row.audiences.clone(),
        max_ttl: Duration::from_secs(row.max_ttl_secs),
        dpop_required: row.dpop_required,
    })
}

/// Client rows held in memory, so authenticating a client reads no database.
pub(super) type ClientCache = super::cache::RowCache<ClientRow>;
