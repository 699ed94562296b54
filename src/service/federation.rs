//! Workload identity federation: an administrator trusts an external issuer (a Kubernetes
//! cluster's service-account issuer, a CI system's OIDC issuer) — where its public keys are
//! and the audience its tokens must name — and maps its subjects to clients. A workload then
//! presents its own token from that issuer (RFC 7523 §2.1 `jwt-bearer`, or RFC 8693 token
//! exchange) and gets an access token for the mapped client: no secret is ever issued.
//!
//! A workload's token is a bearer credential it presents again and again until its issuer
//! rotates it (a projected service-account token lives an hour by default), so it is not
//! spent like a client assertion; it must be signed by the issuer's key, name the audience,
//! and be unexpired and at most a day long.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;

use super::client_keys::verify_published;
use super::clients::{enabled, AuthenticatedClient, Clients};
use super::{audited, Actor};
use crate::assertion::{self, Rules};
use crate::clock::{self, Clock};
use crate::error::{Error, Result};
use crate::remote_keys::{check_url, RemoteKeySets};
use crate::store::federation::{IssuerRow, SubjectRow};
use crate::store::{self, Store};

/// The longest-lived workload token accepted (its `exp` at most this far ahead).
pub const MAX_WORKLOAD_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// RFC 7523 §2.1's grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693's grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A trusted issuer as the API and CLI show it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct IssuerView {
    pub issuer: String,
    pub jwks_uri: String,
    pub audience: String,
    pub created_at: String,
    pub created_by: String,
    /// Each mapped subject and the client it acts as.
    pub subjects: Vec<SubjectView>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SubjectView {
    pub subject: String,
    pub client_id: String,
}

/// What a new trust says.
#[derive(Clone, Debug, Default)]
pub struct NewIssuer {
    pub issuer: String,
    /// Its key set's URL; discovered from the issuer's metadata when not given.
    pub jwks_uri: Option<String>,
    pub audience: String,
}

/// A trusted issuer as authentication needs it.
struct Trusted {
    jwks_uri: String,
    audience: Vec<String>,
    /// Subject → client id.
    subjects: HashMap<String, String>,
}

/// Trusted issuers and their subjects, all held in memory (refreshed when the database
/// changes) so a workload's exchange reads no database but its client's row.
pub struct Federation {
    clock: Clock,
    store: Store,
    clients: Arc<Clients>,
    remote_keys: Arc<RemoteKeySets>,
    /// Rebuilt after a change here, so the metadata's grant types follow at once.
    keys: Arc<super::Keys>,
    trusted: RwLock<Arc<HashMap<String, Trusted>>>,
}

impl Federation {
    pub(super) fn new(
        clock: &Clock,
        store: &Store,
        clients: &Arc<Clients>,
        remote_keys: &Arc<RemoteKeySets>,
        keys: &Arc<super::Keys>,
    ) -> Self {
        Federation {
            clock: clock.clone(),
            store: store.clone(),
            clients: clients.clone(),
            remote_keys: remote_keys.clone(),
            keys: keys.clone(),
            trusted: RwLock::default(),
        }
    }

    /// Whether any issuer is trusted (the metadata then offers the federation grants).
    pub fn enabled(&self) -> bool {
        !self.trusted.read().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Trusts an issuer, or changes its keys' URL or audience. Without a `jwks_uri` the
    /// issuer's discovery document is read now for it.
    pub async fn trust_issuer(&self, new: &NewIssuer, actor: &Actor) -> Result<IssuerView> {
        let mut problems = Vec::new();
        let issuer = new.issuer.trim().to_owned();
        if let Err(e) = check_url(&issuer) {
            problems.push(format!("issuer: {e}"));
        }
        if issuer.len() > 255 {
            problems.push("issuer: at most 255 characters".into());
        }
        let audience = new.audience.trim().to_owned();
        if audience.is_empty() || audience.len() > 255 || audience.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            problems.push("audience: give the audience the issuer's tokens name for keyturn (no spaces)".into());
        }
        if let Some(Err(e)) = new.jwks_uri.as_deref().map(check_url) {
            problems.push(format!("jwks_uri: {e}"));
        }
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        let jwks_uri = match &new.jwks_uri {
            Some(uri) => uri.clone(),
            None => self.remote_keys.discover(&issuer).await.map_err(|e| Error::Invalid(vec![e]))?,
        };
        let row =
            IssuerRow { issuer, jwks_uri, audience, created_at: self.clock.now(), created_by: actor.name.clone() };
        let (written, by) = (row.clone(), actor.clone());
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    let row = written;
                    let new = store::federation::put_issuer(tx, &row).await?;
                    let action = if new { "issuer.trust" } else { "issuer.update" };
                    let detail = format!("audience {}, keys at {}", row.audience, row.jwks_uri);
                    audited(tx, row.created_at, &by, action, Some(&row.issuer), Some(&detail)).await
                })
            })
            .await?;
        self.changed().await?;
        self.view(&row.issuer).await
    }

    /// Stops trusting an issuer; its subjects' mappings go with it.
    pub async fn forget_issuer(&self, issuer: &str, actor: &Actor) -> Result<()> {
        let (id, by, now) = (issuer.to_owned(), actor.clone(), self.clock.now());
        let removed = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let removed = store::federation::remove_issuer(tx, &id).await?;
                    if removed {
                        audited(tx, now, &by, "issuer.forget", Some(&id), None).await?;
                    }
                    Ok(removed)
                })
            })
            .await?;
        self.changed().await?;
        removed.then_some(()).ok_or_else(|| Error::NotFound(format!("{issuer} is not a trusted issuer")))
    }

    /// Lets the workload `subject` of `issuer` act as `client_id` (replacing any mapping).
    pub async fn map_subject(&self, issuer: &str, subject: &str, client_id: &str, actor: &Actor) -> Result<IssuerView> {
        if subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control) {
            return Err(Error::Invalid(vec!["subject: give the sub its tokens carry (1 to 255 characters)".into()]));
        }
        let client = self.clients.client_row(client_id).await?;
        if client.as_deref().and_then(enabled).is_none() {
            return Err(Error::NotFound(format!("no enabled client {client_id}")));
        }
        if !self.trusted.read().unwrap_or_else(PoisonError::into_inner).contains_key(issuer) {
            self.refresh().await;
        }
        if !self.trusted.read().unwrap_or_else(PoisonError::into_inner).contains_key(issuer) {
            return Err(Error::NotFound(format!("{issuer} is not a trusted issuer: trust it first")));
        }
        let row = SubjectRow {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            client_id: client_id.to_owned(),
            created_at: self.clock.now(),
            created_by: actor.name.clone(),
        };
        let by = actor.clone();
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    store::federation::put_subject(tx, &row).await?;
                    let detail = format!("subject {} acts as client {}", row.subject, row.client_id);
                    audited(tx, row.created_at, &by, "issuer.map", Some(&row.issuer), Some(&detail)).await
                })
            })
            .await?;
        self.refresh().await;
        self.view(issuer).await
    }

    /// Forgets what `subject` of `issuer` acts as.
    pub async fn unmap_subject(&self, issuer: &str, subject: &str, actor: &Actor) -> Result<()> {
        let (iss, sub, by, now) = (issuer.to_owned(), subject.to_owned(), actor.clone(), self.clock.now());
        let removed = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let removed = store::federation::remove_subject(tx, &iss, &sub).await?;
                    if removed {
                        audited(tx, now, &by, "issuer.unmap", Some(&iss), Some(&format!("subject {sub}"))).await?;
                    }
                    Ok(removed)
                })
            })
            .await?;
        self.refresh().await;
        removed.then_some(()).ok_or_else(|| Error::NotFound(format!("{subject} of {issuer} is not mapped")))
    }

    pub async fn list_issuers(&self) -> Result<Vec<IssuerView>> {
        let (issuers, subjects) = self.rows().await?;
        Ok(issuers
            .into_iter()
            .map(|i| IssuerView {
                subjects: subjects
                    .iter()
                    .filter(|s| s.issuer == i.issuer)
                    .map(|s| SubjectView { subject: s.subject.clone(), client_id: s.client_id.clone() })
                    .collect(),
                issuer: i.issuer,
                jwks_uri: i.jwks_uri,
                audience: i.audience,
                created_at: clock::rfc3339(i.created_at),
                created_by: i.created_by,
            })
            .collect())
    }

    /// Every trusted issuer and every mapped subject, in one read.
    async fn rows(&self) -> Result<(Vec<IssuerRow>, Vec<SubjectRow>)> {
        let read = self.store.read(|c| {
            Box::pin(async move { Ok((store::federation::issuers(c).await?, store::federation::subjects(c).await?)) })
        });
        Ok(read.await?)
    }

    async fn view(&self, issuer: &str) -> Result<IssuerView> {
        self.list_issuers()
            .await?
            .into_iter()
            .find(|i| i.issuer == issuer)
            .ok_or_else(|| Error::NotFound(format!("{issuer} is not a trusted issuer")))
    }

    /// Re-reads every trusted issuer and subject: at start, after a local change, and when
    /// another process changed the database. If they cannot be read, none is trusted.
    /// After a change made here: the issuers again, and the metadata that offers the grants.
    async fn changed(&self) -> Result<()> {
        self.refresh().await;
        self.keys.reload().await
    }

    pub(super) async fn refresh(&self) {
        let rows = self.rows().await.ok();
        let mut trusted = HashMap::new();
        if let Some((issuers, subjects)) = rows {
            for i in issuers {
                let subjects =
                    subjects.iter().filter(|s| s.issuer == i.issuer).map(|s| (s.subject.clone(), s.client_id.clone()));
                trusted.insert(
                    i.issuer.clone(),
                    Trusted { jwks_uri: i.jwks_uri, audience: vec![i.audience], subjects: subjects.collect() },
                );
            }
        }
        *self.trusted.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(trusted);
    }

    /// The client a workload's `token` (from a trusted issuer, for a mapped subject) acts as,
    /// or why not (`invalid_grant`: the reason names the check, never the token).
    pub async fn authenticate_workload(&self, token: &str) -> Result<AuthenticatedClient> {
        let refuse = |why: &str| Err(Error::InvalidGrant(format!("the workload's token is refused: {why}")));
        let Some((issuer, _)) = assertion::claimed_issuer(token) else { return refuse("not a JWT with an iss claim") };
        let trusted = self.trusted.read().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(from) = trusted.get(&issuer) else { return refuse("its issuer is not trusted") };
        let rules = Rules {
            issuer: &issuer,
            subject: None,
            audiences: &from.audience,
            max_lifetime: MAX_WORKLOAD_TOKEN_LIFETIME,
            require_jti: false,
        };
        let now = self.clock.now();
        let verified = match verify_published(&self.remote_keys, &from.jwks_uri, token, &rules, now).await {
            Ok(Ok(v)) => v,
            Ok(Err(why)) => return refuse(&why.to_string()),
            Err(why) => {
                tracing::warn!(issuer, "a workload's token could not be checked: {why}");
                return refuse("the issuer's keys cannot be fetched");
            }
        };
        let Some(client_id) = from.subjects.get(&verified.subject) else {
            tracing::info!(issuer, subject = %verified.subject, "a workload's token is refused: its subject is not mapped");
            return refuse("its subject is not mapped to a client");
        };
        match self.clients.client_row(client_id).await?.as_deref().and_then(enabled) {
            Some(client) => Ok(client),
            None => refuse("the client it maps to is disabled"),
        }
    }
}
