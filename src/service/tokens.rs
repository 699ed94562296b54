//! Token issuance: every access token is signed by the active key of its algorithm, carries
//! `kid` and a unique `jti`, expires before its key can leave the JWKS, and is recorded
//! (never the token itself) before it is returned. Refresh tokens are opaque, stored as
//! hashes, single use, rotated on every use; presenting a spent one revokes its family.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::clients::AuthenticatedClient;
use super::shared::Shared;
use super::{random_id, resolve_alg, secret_digest, Actor, Keys};
use crate::clock::Clock;
use crate::clock::{to_unix, Instant};
use crate::config::Config;
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::keys::signer::ACCESS_TOKEN_TYP;
use crate::keys::Algorithm;
use crate::metrics::Metrics;
use crate::records::TokenRecord;
use crate::store::Store;
use crate::store::{self, refresh::RefreshRow, StoreError};

/// The longest subject, audience, client id or scope accepted.
pub const MAX_VALUE_LEN: usize = 255;

/// The default token lifetime when a request names none (capped by `max_token_ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// Claims keyturn sets itself; a caller's custom claims may not name them.
pub const RESERVED_CLAIMS: [&str; 11] =
    ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "client_id", "scope", "sid", "cnf"];

/// The longest session label an app may give (a device or browser name).
pub const MAX_LABEL_LEN: usize = 200;

/// The largest serialized custom-claims object accepted.
pub const MAX_CLAIMS_BYTES: usize = 8 * 1024;

/// The largest access token keyturn issues, and the largest introspection accepts: one budget,
/// so a token keyturn answers is never one it would call inactive. Many gateways and header
/// limits (nginx's 8 KiB buffers, Apache's 8 KiB fields) want far less; 16 KiB is a ceiling,
/// not a target.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Refresh tokens start with this, so they are told apart from JWTs at a glance.
pub const REFRESH_PREFIX: &str = "ktr_";

/// Where a client asks its token to be valid: the `audience` parameter, or RFC 8707's
/// `resource`. Either must be one of the client's registered audiences, else
/// `invalid_target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Audience(String),
    Resource(String),
}

/// A request for an access token.
#[derive(Clone, Debug, Default)]
pub struct IssueRequest {
    pub sub: String,
    pub aud: Vec<String>,
    pub ttl: Option<Duration>,
    pub alg: Option<Algorithm>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    /// Custom claims; none may be reserved.
    pub claims: Map<String, Value>,
    /// Also issue a refresh token: the tokens minted with it and its successors form a
    /// session (`sid`).
    pub refresh: bool,
    /// A label for the session the app will recognise (the device or browser).
    pub session_label: Option<String>,
    /// Who owns the session (may list and end it): `apikey:<id>` for an API key; the actor
    /// when not given.
    pub session_owner: Option<String>,
    /// Bind the token (and the refresh token, if any) to the DPoP key with this RFC 7638
    /// thumbprint (RFC 9449 §10's `dpop_jkt`): a web app binds its users' tokens to a key
    /// their browser holds, and every verifier then asks for that key's proofs.
    pub dpop_jkt: Option<String>,
}

/// An issued access token (and refresh token, if asked for).
#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub kid: String,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The session the tokens belong to (`sid` in the access token), when a refresh token
    /// was issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// How a minted token relates to refresh tokens.
pub(super) enum RefreshPlan {
    None,
    /// Start a new family (its refresh tokens bound to a DPoP key, if `jkt`).
    NewFamily {
        jkt: Option<String>,
    },
    /// Continue a family: spend the presented refresh token, and record its successor.
    /// `ends_at`: its session's absolute end (none for families from before sessions).
    Continue {
        family: String,
        spent: Vec<u8>,
        successor: Zeroizing<String>,
        ends_at: Option<Instant>,
        /// The DPoP key the successor is bound to (a public holder's).
        jkt: Option<String>,
    },
    /// A retry of a refresh whose answer was lost: the successor already exists and is
    /// handed out again with a new access token; nothing is spent.
    Retry {
        family: String,
        successor: Zeroizing<String>,
        ends_at: Option<Instant>,
    },
}

fn check_value(name: &str, v: &str, problems: &mut Vec<String>) {
    if v.trim().is_empty() {
        problems.push(format!("{name} must not be empty"));
    } else if v.chars().count() > MAX_VALUE_LEN {
        problems.push(format!("{name} is longer than {MAX_VALUE_LEN} characters"));
    } else if v.chars().any(char::is_control) {
        problems.push(format!("{name} must not contain control characters"));
    }
}

/// Access and refresh tokens: issuance, refresh, sessions, introspection and the list of
/// issued tokens. Signs with the key [`Keys`] publishes.
pub struct Tokens {
    pub(super) config: Arc<Config>,
    pub(super) clock: Clock,
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shared: Arc<Shared>,
    pub(super) keys: Arc<Keys>,
    /// Signatures already verified, for repeated introspection and forward auth.
    pub(super) verified: super::introspect::VerifiedCache,
}

impl Tokens {
    pub(super) fn new(
        config: &Arc<Config>,
        clock: &Clock,
        store: &Store,
        metrics: &Arc<Metrics>,
        shared: &Arc<Shared>,
        keys: &Arc<Keys>,
    ) -> Tokens {
        Tokens {
            config: config.clone(),
            clock: clock.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            shared: shared.clone(),
            keys: keys.clone(),
            verified: super::introspect::VerifiedCache::default(),
        }
    }

    /// Validates and issues a token for a trusted caller (the API, the dashboard, the CLI).
    pub async fn issue_token(&self, req: &IssueRequest, actor: &Actor) -> Result<IssuedToken> {
        let (ttl, plan) = self.check_issue_request(req)?;
        if req.dpop_jkt.is_some() {
            let mut bound = req.clone();
            bind(&mut bound, req.dpop_jkt.as_deref());
            return self.mint(&bound, ttl, plan, actor).await;
        }
        self.mint(req, ttl, plan, actor).await
    }

    /// Checks an issuance request: the lifetime and refresh plan it asks for, or every
    /// problem with it.
    fn check_issue_request(&self, req: &IssueRequest) -> Result<(Duration, RefreshPlan)> {
        let published = self.shared.published();
        let policy = &published.policy;
        let mut problems = Vec::new();
        check_value("sub", &req.sub, &mut problems);
        if req.aud.is_empty() {
            problems.push("aud must name at least one audience".into());
        }
        for a in &req.aud {
            check_value("aud", a, &mut problems);
        }
        if let Some(s) = &req.scope {
            check_value("scope", s, &mut problems);
        }
        let reserved: Vec<&str> = RESERVED_CLAIMS.iter().copied().filter(|c| req.claims.contains_key(*c)).collect();
        if !reserved.is_empty() {
            problems.push(format!("claims may not set reserved claims: {}", reserved.join(", ")));
        }
        if req.claims.keys().any(|k| k.is_empty() || k.chars().count() > MAX_VALUE_LEN) {
            problems.push("claim names must be 1 to 255 characters".into());
        }
        if serde_json::to_vec(&req.claims).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_CLAIMS_BYTES {
            problems.push(format!("claims are larger than {MAX_CLAIMS_BYTES} bytes"));
        }
        let ttl = req.ttl.unwrap_or(DEFAULT_TTL.min(policy.max_token_ttl));
        if ttl.is_zero() {
            problems.push("ttl must be longer than 0s".into());
        }
        if ttl > policy.max_token_ttl {
            problems.push(format!(
                "ttl ({}) is longer than the maximum token lifetime ({})",
                format_duration(ttl),
                format_duration(policy.max_token_ttl)
            ));
        }
        if let Err(e) = resolve_alg(&self.config, req.alg) {
            problems.push(e.to_string());
        }
        if let Some(label) = &req.session_label {
            if !req.refresh {
                problems.push("session_label names a session: ask for one with \"refresh\": true".into());
            } else if label.chars().count() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
                problems.push(format!("session_label must be at most {MAX_LABEL_LEN} printable characters"));
            }
        }
        if req
            .dpop_jkt
            .as_deref()
            .is_some_and(|j| j.len() != 43 || !j.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            problems.push("dpop_jkt must be a key's RFC 7638 SHA-256 thumbprint (43 base64url characters)".into());
        }
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        let plan = if req.refresh { RefreshPlan::NewFamily { jkt: req.dpop_jkt.clone() } } else { RefreshPlan::None };
        Ok((ttl, plan))
    }

    /// OAuth `client_credentials`: a token for the client itself, within its allowed scopes
    /// and audiences, issued like [`Tokens::issue_token`].
    pub async fn client_credentials(
        &self,
        client: &AuthenticatedClient,
        scope: Option<&str>,
        target: Option<&Target>,
        bound_to: Option<&str>,
    ) -> Result<IssuedToken> {
        let scope = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            Some(requested) => {
                let unknown: Vec<&str> =
                    requested.split(' ').filter(|s| !s.is_empty() && !client.scopes.iter().any(|a| a == s)).collect();
                if !unknown.is_empty() {
                    return Err(Error::InvalidScope(format!(
                        "scope not allowed for this client: {}",
                        unknown.join(" ")
                    )));
                }
                Some(requested.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" "))
            }
            None => (!client.scopes.is_empty()).then(|| client.scopes.join(" ")),
        };
        let requested = target.map(|t| match t {
            Target::Audience(a) => ("audience", a.trim()),
            Target::Resource(r) => ("resource", r.trim()),
        });
        let aud = match requested {
            Some((_, a)) if client.audiences.iter().any(|x| x == a) => vec![a.to_owned()],
            Some((what, a)) => {
                let shown: String = a.chars().take(100).collect();
                return Err(Error::InvalidTarget(format!(
                    "{what} '{shown}' is not one this client may get tokens for"
                )));
            }
            None => client.audiences.clone(),
        };
        let ttl = client.max_ttl.min(self.shared.policy().max_token_ttl);
        let mut req = IssueRequest {
            sub: client.client_id.clone(),
            aud,
            scope,
            client_id: Some(client.client_id.clone()),
            ..IssueRequest::default()
        };
        bind(&mut req, bound_to);
        let actor = Actor { name: format!("client:{}", client.client_id), source: None };
        self.mint(&req, ttl, RefreshPlan::None, &actor).await
    }

    /// Signs, records and returns a token: the one issuance loop. A rotation can commit
    /// between signing and recording; then the record is refused (its key no longer signs),
    /// the snapshot is reloaded and the token is signed again with the new active key, so no
    /// token is recorded under a key that no longer signs. The record is a grouped write.
    pub(super) async fn mint(
        &self,
        req: &IssueRequest,
        ttl: Duration,
        plan: RefreshPlan,
        actor: &Actor,
    ) -> Result<IssuedToken> {
        let alg = resolve_alg(&self.config, req.alg)?;
        let refresh = refresh_parts(plan);
        for _ in 0..3 {
            let minted = self.mint_one(req, ttl, alg, &refresh, actor).await?;
            let recorded = self.store.record_token(minted.recording()).await;
            match self.settle(minted, recorded)? {
                Some(issued) => return Ok(issued),
                None => self.keys.reload().await?,
            }
        }
        Err(Error::NoActiveKey(alg))
    }

    /// Signs one token with the active key of `alg` and prepares its records.
    async fn mint_one(
        &self,
        req: &IssueRequest,
        ttl: Duration,
        alg: Algorithm,
        refresh: &Option<RefreshParts>,
        actor: &Actor,
    ) -> Result<Minted> {
        let client_id = req.client_id.clone().unwrap_or_else(|| actor.name.clone());
        let published = self.shared.published();
        let policy = &published.policy;
        let signer = published.signer(alg).ok_or(Error::NoActiveKey(alg))?.clone();
        let key = published.key(signer.kid()).ok_or(Error::NoActiveKey(alg))?;
        let now = self.clock.now();
        let exp = (now + ttl).min(policy.exp_limit(key));
        if exp <= now {
            return Err(Error::NoActiveKey(alg));
        }
        let jti = new_jti(now);
        let mut claims = req.claims.clone();
        claims.insert("iss".into(), Value::from(self.config.issuer.as_str()));
        claims.insert("sub".into(), Value::from(req.sub.as_str()));
        claims.insert(
            "aud".into(),
            if req.aud.len() == 1 { Value::from(req.aud[0].as_str()) } else { Value::from(req.aud.clone()) },
        );
        claims.insert("iat".into(), Value::from(to_unix(now)));
        claims.insert("nbf".into(), Value::from(to_unix(now)));
        claims.insert("exp".into(), Value::from(to_unix(exp)));
        claims.insert("jti".into(), Value::from(jti.as_str()));
        claims.insert("client_id".into(), Value::from(client_id.as_str()));
        if let Some(parts) = refresh {
            claims.insert("sid".into(), Value::from(parts.family.as_str()));
        }
        if let Some(s) = &req.scope {
            claims.insert("scope".into(), Value::from(s.as_str()));
        }
        let token = if signer.is_slow() {
            // RSA signs in milliseconds, EC and EdDSA in microseconds: only RSA (and a key in
            // a token, which may wait on hardware) leaves the async threads.
            let rsa = signer.clone();
            tokio::task::spawn_blocking(move || rsa.sign(ACCESS_TOKEN_TYP, &claims))
                .await
                .map_err(|e| Error::Sign(e.to_string()))?
        } else {
            signer.sign(ACCESS_TOKEN_TYP, &claims)
        }
        .map_err(|e| {
            if signer.held_by_token() {
                Error::Custody(e.to_string())
            } else {
                Error::Sign(e.to_string())
            }
        })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::Invalid(vec![format!(
                "the token would be {} bytes, more than the {MAX_TOKEN_BYTES} keyturn issues and introspects: ask for fewer audiences, a shorter scope or fewer claims",
                token.len()
            )]));
        }
        let record = TokenRecord {
            jti: jti.clone(),
            sub: req.sub.clone(),
            kid: signer.kid().clone(),
            aud: req.aud.clone(),
            client_id: Some(client_id.clone()),
            scope: req.scope.clone(),
            iat: now,
            exp,
            issued_by: actor.name.clone(),
            family: refresh.as_ref().map(|p| p.family.clone()),
        };
        let new_refresh = refresh.as_ref().map(|parts| {
            let token =
                parts.token.clone().unwrap_or_else(|| Zeroizing::new(format!("{REFRESH_PREFIX}{}", random_id(32))));
            let row = RefreshRow {
                token_hash: secret_digest(&token),
                family: parts.family.clone(),
                sub: req.sub.clone(),
                client_id: Some(client_id.clone()),
                aud: req.aud.clone(),
                scope: req.scope.clone(),
                // The caller's claims only: a binding (`cnf`) is the request's, each refresh
                // binds anew to its own proof's key.
                claims: {
                    let mut own = req.claims.clone();
                    own.remove("cnf");
                    (!own.is_empty()).then(|| Value::Object(own).to_string())
                },
                alg: Some(alg.as_str().to_owned()),
                issued_at: now,
                // The idle end, never past the session's absolute end.
                expires_at: (now + self.config.refresh_ttl)
                    .min(parts.ends_at.unwrap_or(now + self.config.session_lifetime)),
                used_at: None,
                jkt: parts.jkt.clone(),
                revoked_at: None,
            };
            (token, parts.record.then_some(row))
        });
        let session = refresh.as_ref().and_then(|parts| match (&parts.spend, parts.record) {
            // A new family: its session starts.
            (None, true) => Some(store::tokens::SessionWrite::Start(Box::new(store::sessions::SessionRow {
                id: parts.family.clone(),
                sub: req.sub.clone(),
                owner: req.session_owner.clone().unwrap_or_else(|| actor.name.clone()),
                minted_by: actor.name.clone(),
                label: req.session_label.clone(),
                ttl: req.ttl.map(|t| t.as_secs() as i64),
                started_at: now,
                refreshed_at: now,
                ends_at: now + self.config.session_lifetime,
                ended_at: None,
                end_reason: None,
                ended_by: None,
            }))),
            (Some(_), _) => Some(store::tokens::SessionWrite::Refreshed { id: parts.family.clone(), at: now }),
            (None, false) => None,
        });
        let spent = refresh.as_ref().and_then(|p| p.spend.clone());
        let session_id = refresh.as_ref().map(|p| p.family.clone());
        let bound = req.claims.contains_key("cnf");
        Ok(Minted { token, alg, record, new_refresh, spent, scope: req.scope.clone(), session, session_id, bound })
    }

    /// The answer for a minted token once its records were written (or not): the token,
    /// `None` when its key stopped signing meanwhile (reload and mint again), or the error.
    fn settle(&self, minted: Minted, recorded: Result<(), StoreError>) -> Result<Option<IssuedToken>> {
        match recorded {
            Ok(()) => {
                let Minted { token, alg, record, new_refresh, scope, session_id, .. } = minted;
                self.metrics.token_issued(&record.kid, alg);
                Ok(Some(IssuedToken {
                    access_token: token,
                    token_type: if minted.bound { "DPoP" } else { "Bearer" },
                    expires_in: (record.exp - record.iat).whole_seconds().max(0) as u64,
                    kid: record.kid.to_string(),
                    jti: record.jti,
                    scope,
                    refresh_token: new_refresh.map(|(t, _)| t.to_string()),
                    session_id,
                }))
            }
            Err(StoreError::RefreshSpent) => Err(Error::InvalidGrant("the refresh token was already used".into())),
            Err(StoreError::KeyStoppedSigning(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A token id: the issuing second and a per-process sequence number in fixed-width hex,
/// then 72 random bits. Unique like a random id, but ordered by time (and within a second by
/// issue order), so recording a token appends at the end of the `jti` index instead of
/// dirtying a random page of it (the issuance benchmark measures this: random ids made every
/// commit write a WAL frame per token).
fn new_jti(now: Instant) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:09x}{seq:08x}{}", to_unix(now).max(0), random_id(9))
}

/// What a minted token does with refresh tokens: the family it joins, the refresh token it
/// spends, the refresh token it hands out (a successor, or a fresh random one), and whether
/// that one is new and must be recorded.
struct RefreshParts {
    family: String,
    spend: Option<Vec<u8>>,
    token: Option<Zeroizing<String>>,
    record: bool,
    /// The session's absolute end, for a family that has one.
    ends_at: Option<Instant>,
    /// The DPoP key a new refresh token is bound to.
    jkt: Option<String>,
}

fn refresh_parts(plan: RefreshPlan) -> Option<RefreshParts> {
    match plan {
        RefreshPlan::None => None,
        RefreshPlan::NewFamily { jkt } => {
            Some(RefreshParts { family: random_id(18), spend: None, token: None, record: true, ends_at: None, jkt })
        }
        RefreshPlan::Continue { family, spent, successor, ends_at, jkt } => {
            Some(RefreshParts { family, spend: Some(spent), token: Some(successor), record: true, ends_at, jkt })
        }
        RefreshPlan::Retry { family, successor, ends_at } => {
            Some(RefreshParts { family, spend: None, token: Some(successor), record: false, ends_at, jkt: None })
        }
    }
}

/// A signed access token whose records are not yet written.
struct Minted {
    /// Bound to a DPoP key (`cnf.jkt`).
    bound: bool,
    token: String,
    alg: Algorithm,
    record: TokenRecord,
    /// The refresh token handed out, and its row when it is new.
    new_refresh: Option<(Zeroizing<String>, Option<RefreshRow>)>,
    spent: Option<Vec<u8>>,
    scope: Option<String>,
    /// What the recording writes of the token's session.
    session: Option<store::tokens::SessionWrite>,
    session_id: Option<String>,
}

impl Minted {
    /// What recording it writes (grouped with other answers' recordings): the presented
    /// refresh token spent, the token's record if its key still signs, the new refresh token.
    fn recording(&self) -> store::tokens::Recording {
        store::tokens::Recording {
            spends: self.spent.clone(),
            token: self.record.clone(),
            refresh: self.new_refresh.as_ref().and_then(|(_, row)| row.clone()),
            session: self.session.clone(),
        }
    }
}

/// Binds the token `req` asks for to the key whose RFC 7638 thumbprint is `jkt` (RFC 9449
/// §6.1: `cnf.jkt`), when the request came with a DPoP proof.
pub(super) fn bind(req: &mut IssueRequest, jkt: Option<&str>) {
    if let Some(jkt) = jkt {
        req.claims.insert("cnf".into(), serde_json::json!({ "jkt": jkt }));
    }
}
