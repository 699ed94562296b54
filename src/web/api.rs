//! `/api/v1`: the administrative and issuing API, authenticated with API keys
//! (`Authorization: Bearer kt_…`). A missing or wrong key is 401, a key of the wrong role
//! is 403; every error is JSON.

use std::net::IpAddr;
use std::sync::Arc;

use rocket::http::{ContentType, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::serde::json::Json;
use rocket::{get, post, put, routes, Request, Route, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::source::ClientAddress;
use super::wellknown::{Cached, IfNoneMatch};
use crate::credentials::Authorization;
use crate::duration::parse_duration;
use crate::keys::jwks::Document;
use crate::keys::{Algorithm, KeyId};
use crate::records::{Lifetime, TokenQuery};
use crate::service::apikeys::{ApiKeyIdentity, Role};
use crate::service::clients::{NewClient, NewCredential};
use crate::service::policy::PolicyChange;
use crate::service::revocations::RevokeTarget;
use crate::service::rotation::RotateMode;
use crate::service::throttle::Credential;
use crate::service::tokens::{IssueRequest, IssuedToken};
use crate::service::Actor;
use crate::service::{Audit, Clients, Keys, Revocations, Tokens};

pub fn routes() -> Vec<Route> {
    routes![
        list_keys,
        rotate,
        revoke_key,
        get_schedule,
        put_schedule,
        audit,
        issue_token,
        list_tokens,
        create_client,
        list_clients,
        disable_client,
        create_revocation,
        list_sessions,
        end_session,
        end_sessions_of,
        revocation_feed
    ]
}

/// An authenticated API caller.
pub struct Caller {
    pub key: ApiKeyIdentity,
    pub source: Option<IpAddr>,
}

impl Caller {
    /// The caller as an audit actor.
    pub fn actor(&self) -> Actor {
        Actor::api_key(&self.key.name, self.source.map(|ip| ip.to_string()))
    }

    /// Whose sessions the caller may see and end: every one for an administrator, else the
    /// ones its key minted.
    pub fn session_viewer(&self) -> crate::service::sessions::Viewer {
        if self.key.role == Role::Admin {
            crate::service::sessions::Viewer::Admin
        } else {
            crate::service::sessions::Viewer::api_key(&self.key.id)
        }
    }

    /// Refuses (403) unless the caller is an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require(&[])
    }

    /// Refuses (403) unless the caller has one of `roles`; admin always may.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.key.role == Role::Admin || roles.contains(&self.key.role) {
            return Ok(());
        }
        let wanted: Vec<&str> = std::iter::once("admin").chain(roles.iter().map(|r| r.as_str())).collect();
        Err(ApiError::new(
            Status::Forbidden,
            "forbidden",
            format!("this API key has role '{}'; this call needs {}", self.key.role, wanted.join(" or ")),
        ))
    }
}

/// Requires `Content-Type: application/json` on a request with a JSON body: anything else
/// is refused with 415 before the body is read.
pub struct JsonContent;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for JsonContent {
    type Error = &'static str;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        if req.content_type().is_some_and(|c| c.is_json()) {
            Outcome::Success(JsonContent)
        } else {
            Outcome::Error((Status::UnsupportedMediaType, "the body must be application/json"))
        }
    }
}

/// Refuses a request with `refusal`, kept for the catcher (which renders it when the route
/// needs the guard) and handed to a route that takes the guard as a `Result`.
fn refuse<T>(req: &Request<'_>, refusal: ApiError) -> Outcome<T, ApiError> {
    let status = refusal.status;
    req.local_cache(|| super::error::GuardRefusal(Some(refusal.clone())));
    Outcome::Error((status, refusal))
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Caller {
    /// 401 (no, unknown, wrong or revoked key), 429 (this address failed too often) or 503
    /// (the key could not be looked up: the database is away — never a 401 then).
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let unauthorized = |why: &'static str| refuse(req, ApiError::new(Status::Unauthorized, "unauthorized", why));
        let Some(header) = req.headers().get_one("Authorization") else {
            return unauthorized("missing Authorization header: send 'Authorization: Bearer <API key>'");
        };
        let Authorization::Bearer(presented) = Authorization::parse(header) else {
            return unauthorized("the Authorization header must use the Bearer scheme");
        };
        let Some(clients) = req.rocket().state::<Arc<Clients>>() else {
            return refuse(req, ApiError::new(Status::InternalServerError, "server_error", "service missing"));
        };
        let source = ClientAddress::of(req).0;
        // An address that failed too often is refused before its key is looked at.
        if let Some(wait) = clients.auth_refused(source, Credential::ApiKey) {
            return refuse(req, ApiError::throttled(wait.as_secs().max(1)));
        }
        let found = match clients.authenticate_api_key_cached(presented) {
            Some(answer) => Ok(answer),
            None => {
                let presented = presented.to_owned();
                clients.authenticate_api_key(&presented).await.map_err(ApiError::from)
            }
        };
        match found {
            Ok(Some(key)) => {
                clients.note_api_key_use(&key.id).await;
                Outcome::Success(Caller { key, source })
            }
            Ok(None) => match clients.auth_failed(source, Credential::ApiKey) {
                Some(wait) => refuse(req, ApiError::throttled(wait.as_secs().max(1))),
                None => unauthorized("unknown, wrong or revoked API key"),
            },
            Err(e) => refuse(req, e),
        }
    }
}

fn parse_alg(alg: Option<&str>) -> Result<Option<Algorithm>, ApiError> {
    alg.map(|a| a.parse::<Algorithm>().map_err(|e| ApiError::new(Status::BadRequest, "invalid_request", e.to_string())))
        .transpose()
}

#[get("/api/v1/keys")]
async fn list_keys(keys: &State<Arc<Keys>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let keys = keys.list_keys().await.map_err(ApiError::from)?;
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    mode: RotateMode,
    alg: Option<String>,
    /// Say what the rotation would do (which key would sign, whether it was ever published)
    /// and change nothing.
    #[serde(default)]
    dry_run: bool,
}

#[post("/api/v1/keys/rotate", data = "<body>")]
async fn rotate(
    keys: &State<Arc<Keys>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<RotateBody>,
) -> Result<(Status, Json<Value>), ApiError> {
    caller.require_admin()?;
    let alg = parse_alg(body.alg.as_deref())?;
    let (mode, dry_run) = (body.mode, body.dry_run);
    let actor = caller.actor();
    if dry_run {
        let preview = keys.rotate_preview(alg, mode).map_err(ApiError::from)?;
        return Ok((Status::Ok, Json(json!(preview))));
    }
    let outcome = keys.rotate(alg, mode, &actor).await.map_err(ApiError::from)?;
    let status = if outcome.done { Status::Ok } else { Status::Accepted };
    Ok((status, Json(json!(outcome))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: String,
}

#[post("/api/v1/keys/<kid>/revoke", data = "<body>")]
async fn revoke_key(
    keys: &State<Arc<Keys>>,
    caller: Caller,
    _json: JsonContent,
    kid: &str,
    body: Json<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let kid = KeyId::new(kid);
    let actor = caller.actor();
    let reason = body.into_inner().reason;
    let outcome = keys.revoke_key(&kid, &reason, &actor).await.map_err(ApiError::from)?;
    Ok(Json(json!(outcome)))
}

#[get("/api/v1/schedule")]
async fn get_schedule(keys: &State<Arc<Keys>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(json!(keys.policy_view())))
}

#[put("/api/v1/schedule", data = "<body>")]
async fn put_schedule(
    keys: &State<Arc<Keys>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<PolicyChange>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let actor = caller.actor();
    let change = body.into_inner();
    let view = keys.update_policy(&change, &actor).await.map_err(ApiError::from)?;
    Ok(Json(json!(view)))
}

/// A query parameter as Rocket reads it, errors kept (`Option<T>` would turn a bad value into
/// "absent", so `?limit=-1` would silently mean the default).
type Query<'v, T> = rocket::form::Result<'v, T>;

/// A query parameter read strictly: absent is `None`; present but not a valid value is a 400
/// that names it.
fn strict<T>(name: &str, value: Query<'_, T>) -> Result<Option<T>, ApiError> {
    match value {
        Ok(v) => Ok(Some(v)),
        Err(errors) if errors.iter().all(|e| matches!(e.kind, rocket::form::error::ErrorKind::Missing)) => Ok(None),
        Err(_) => Err(ApiError::invalid_request(format!("`{name}` is not a valid value"))),
    }
}

#[get("/api/v1/audit?<before>&<limit>")]
async fn audit(
    audit: &State<Arc<Audit>>,
    caller: Caller,
    before: Query<'_, i64>,
    limit: Query<'_, u32>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let (before, limit) = (strict("before", before)?, strict("limit", limit)?);
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    let entries = audit.page(before, limit).await.map_err(ApiError::from)?;
    let next = if entries.len() as u32 == limit { entries.last().map(|e| e.id) } else { None };
    Ok(Json(json!({ "entries": entries, "next": next })))
}

/// One audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    sub: String,
    aud: Audience,
    ttl: Option<String>,
    alg: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
    #[serde(default)]
    refresh: bool,
    /// With `refresh`: a label for the session (the device or browser).
    session_label: Option<String>,
    /// Bind the token (and refresh token) to the DPoP key with this RFC 7638 thumbprint.
    dpop_jkt: Option<String>,
}

#[post("/api/v1/tokens", data = "<body>")]
async fn issue_token(
    tokens: &State<Arc<Tokens>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<TokenBody>,
) -> Result<Json<IssuedToken>, ApiError> {
    caller.require(&[Role::Issuer])?;
    let body = body.into_inner();
    let ttl = body
        .ttl
        .as_deref()
        .map(|t| {
            parse_duration(t).map_err(|e| ApiError::new(Status::BadRequest, "invalid_request", format!("ttl: {e}")))
        })
        .transpose()?;
    let req = IssueRequest {
        sub: body.sub,
        aud: match body.aud {
            Audience::One(a) => vec![a],
            Audience::Many(a) => a,
        },
        ttl,
        alg: parse_alg(body.alg.as_deref())?,
        scope: body.scope,
        client_id: None,
        claims: body.claims,
        refresh: body.refresh,
        session_label: body.session_label,
        session_owner: Some(crate::service::sessions::api_key_owner(&caller.key.id)),
        dpop_jkt: body.dpop_jkt,
    };
    Ok(Json(tokens.issue_token(&req, &caller.actor()).await.map_err(ApiError::from)?))
}

#[get("/api/v1/tokens?<sub>&<client_id>&<kid>&<active>&<before>&<limit>")]
#[allow(clippy::too_many_arguments)]
async fn list_tokens(
    tokens: &State<Arc<Tokens>>,
    caller: Caller,
    sub: Option<String>,
    client_id: Option<String>,
    kid: Option<String>,
    active: Option<&str>,
    before: Query<'_, i64>,
    limit: Query<'_, u32>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    // Read by hand: Rocket takes a missing `bool` for `false`.
    let active = match active {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::invalid_request("`active` is `true` or `false`")),
    };
    let (before, limit) = (strict("before", before)?, strict("limit", limit)?);
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    let query = TokenQuery {
        sub,
        client_id,
        kid,
        lifetime: active.map(|a| if a { Lifetime::Unexpired } else { Lifetime::Expired }),
        before,
        limit,
    };
    let tokens = tokens.list_tokens(&query).await.map_err(ApiError::from)?;
    let next = if tokens.len() as u32 == limit { tokens.last().map(|t| t.cursor) } else { None };
    Ok(Json(json!({ "tokens": tokens, "next": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    audiences: Vec<String>,
    max_ttl: Option<String>,
    /// Every token request must come with a DPoP proof.
    #[serde(default)]
    dpop_required: bool,
    /// private_key_jwt with these public keys instead of a secret.
    jwks: Option<Value>,
    /// private_key_jwt with the keys the client publishes at this URL instead of a secret.
    jwks_uri: Option<String>,
    /// No credential: only workloads of a trusted issuer mapped to it get its tokens.
    #[serde(default)]
    federated: bool,
}

#[post("/api/v1/clients", data = "<body>")]
async fn create_client(
    clients: &State<Arc<Clients>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<ClientBody>,
) -> Result<(Status, Json<Value>), ApiError> {
    caller.require_admin()?;
    let body = body.into_inner();
    let max_ttl = body
        .max_ttl
        .as_deref()
        .map(|t| {
            parse_duration(t).map_err(|e| ApiError::new(Status::BadRequest, "invalid_request", format!("max_ttl: {e}")))
        })
        .transpose()?;
    let new = NewClient {
        name: body.name,
        scopes: body.scopes,
        audiences: body.audiences,
        max_ttl,
        dpop_required: body.dpop_required,
        credential: match (body.jwks, body.jwks_uri, body.federated) {
            (Some(_), Some(_), _) => return Err(ApiError::invalid_request("give jwks or jwks_uri, not both")),
            (Some(_), _, true) | (_, Some(_), true) => {
                return Err(ApiError::invalid_request("a federated client has no keys: drop jwks and jwks_uri"))
            }
            (Some(set), None, false) => NewCredential::Jwks(set),
            (None, Some(url), false) => NewCredential::JwksUri(url),
            (None, None, true) => NewCredential::Federated,
            (None, None, false) => NewCredential::Secret,
        },
    };
    let actor = caller.actor();
    let (view, secret) = clients.create_client(&new, &actor).await.map_err(ApiError::from)?;
    let mut out = json!(view);
    if let Some(secret) = secret {
        out["client_secret"] = Value::from(secret.as_str());
    }
    Ok((Status::Created, Json(out)))
}

#[get("/api/v1/clients")]
async fn list_clients(clients: &State<Arc<Clients>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let clients = clients.list_clients().await.map_err(ApiError::from)?;
    Ok(Json(json!({ "clients": clients })))
}

#[post("/api/v1/clients/<client_id>/disable")]
async fn disable_client(
    clients: &State<Arc<Clients>>,
    caller: Caller,
    client_id: &str,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let (id, actor) = (client_id.to_owned(), caller.actor());
    let view = clients.disable_client(&id, &actor).await.map_err(ApiError::from)?;
    Ok(Json(json!(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationBody {
    jti: Option<String>,
    sub: Option<String>,
    client_id: Option<String>,
    kid: Option<String>,
    reason: String,
}

#[post("/api/v1/revocations", data = "<body>")]
async fn create_revocation(
    revocations: &State<Arc<Revocations>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<RevocationBody>,
) -> Result<(Status, Json<Value>), ApiError> {
    caller.require_admin()?;
    let b = body.into_inner();
    let targets: Vec<RevokeTarget> = [
        b.jti.map(RevokeTarget::Jti),
        b.sub.map(RevokeTarget::Sub),
        b.client_id.map(RevokeTarget::Client),
        b.kid.map(RevokeTarget::Kid),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [target] = <[RevokeTarget; 1]>::try_from(targets).map_err(|_| {
        ApiError::new(Status::BadRequest, "invalid_request", "give exactly one of jti, sub, client_id or kid")
    })?;
    let actor = caller.actor();
    let reason = b.reason;
    let entry = revocations.revoke(&target, &reason, &actor).await.map_err(ApiError::from)?;
    Ok((Status::Created, Json(json!(entry))))
}

/// Sessions the caller may see (an issuer key: those it minted; an administrator: all),
/// newest first; `?sub=` one subject's, `?active=true` running ones only.
#[get("/api/v1/sessions?<sub>&<active>")]
async fn list_sessions(
    tokens: &State<Arc<Tokens>>,
    caller: Caller,
    sub: Option<String>,
    active: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Issuer])?;
    let active = match active {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid_request("`active` is `true` or `false`")),
    };
    let viewer = caller.session_viewer();
    let sessions = tokens.list_sessions(&viewer, sub.as_deref(), active).await.map_err(ApiError::from)?;
    Ok(Json(json!({ "sessions": sessions })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndBody {
    sub: Option<String>,
    reason: Option<String>,
}

/// The reason of an end, or what an app's logout is.
fn end_reason(reason: Option<String>) -> String {
    reason.unwrap_or_else(|| "logged out".to_owned())
}

/// Ends one session the caller may end (per-device logout). Unknown, already ended or
/// another key's: 200 and nothing changes, as RFC 7009 answers.
#[post("/api/v1/sessions/<id>/end", data = "<body>")]
async fn end_session(
    tokens: &State<Arc<Tokens>>,
    caller: Caller,
    id: &str,
    _json: JsonContent,
    body: Json<EndBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Issuer])?;
    let body = body.into_inner();
    if body.sub.is_some() {
        return Err(ApiError::invalid_request("a session is named in the path; `sub` belongs to /api/v1/sessions/end"));
    }
    let (id, viewer, actor, reason) = (id.to_owned(), caller.session_viewer(), caller.actor(), end_reason(body.reason));
    tokens.end_session(&id, &viewer, &reason, &actor).await.map_err(ApiError::from)?;
    Ok(Json(json!({})))
}

/// Ends every running session of a subject the caller may end ("log out everywhere").
#[post("/api/v1/sessions/end", data = "<body>")]
async fn end_sessions_of(
    tokens: &State<Arc<Tokens>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<EndBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Issuer])?;
    let body = body.into_inner();
    let sub =
        body.sub.filter(|s| !s.trim().is_empty()).ok_or_else(|| ApiError::invalid_request("`sub` is required"))?;
    let (viewer, actor, reason) = (caller.session_viewer(), caller.actor(), end_reason(body.reason));
    let ended = tokens.end_sessions_of(&sub, &viewer, &reason, &actor).await.map_err(ApiError::from)?;
    Ok(Json(json!({ "ended": ended })))
}

/// The revocation feed: entries after `since`, and `next` to ask with. Cacheable: a strong
/// ETag (304 on `If-None-Match`) and a short max-age.
#[get("/api/v1/revocations?<since>&<limit>")]
async fn revocation_feed(
    revocations: &State<Arc<Revocations>>,
    caller: Caller,
    since: Query<'_, i64>,
    limit: Query<'_, u32>,
    inm: IfNoneMatch,
) -> Result<Cached, ApiError> {
    caller.require(&[Role::Verifier])?;
    let (since, limit) = (strict("since", since)?, strict("limit", limit)?);
    let since = since.unwrap_or(0).max(0);
    let limit = limit.unwrap_or(1000).clamp(1, 10_000);
    let (entries, next) = revocations.revocation_feed(since, limit).await.map_err(ApiError::from)?;
    let body = serde_json::to_vec(&json!({ "revocations": entries, "next": next })).unwrap_or_default();
    Ok(Cached::with_cache_control(
        Document::new(body),
        ContentType::JSON,
        "private, max-age=5".into(),
        inm.0.as_deref(),
    ))
}
