//! The OAuth endpoints: `/oauth/token` (RFC 6749: client_credentials and refresh_token),
//! `/oauth/revoke` (RFC 7009) and `/oauth/introspect` (RFC 7662). Bodies are
//! `application/x-www-form-urlencoded`, parsed strictly: wrong content type, a body over the
//! limit, invalid UTF-8 or a repeated parameter is `invalid_request`, and changes nothing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rocket::data::Data;
use rocket::http::{ContentType, Header, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::response::{self, Responder};
use rocket::{post, routes, Request, Response, Route, State};
use serde_json::Value;

use super::api::Caller;
use super::error::ApiError;
use super::source::ClientAddress;
use crate::credentials::Authorization;
use crate::service::apikeys::Role;
use crate::service::client_keys::CLIENT_ASSERTION_TYPE;
use crate::service::clients::AuthenticatedClient;
use crate::service::federation::{Federation, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT};
use crate::service::throttle::Credential;
use crate::service::tokens::Target;
use crate::service::{Clients, Revocations, Tokens};

pub fn routes() -> Vec<Route> {
    routes![token, revoke, introspect]
}

/// The raw `Authorization` header, if any.
pub struct AuthHeader(Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AuthHeader {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(AuthHeader(req.headers().get_one("Authorization").map(str::to_owned)))
    }
}

/// The `DPoP` header (RFC 9449): `Err` when there are several.
pub struct DpopHeader(Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for DpopHeader {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let mut all = req.headers().get("DPoP");
        let first = all.next().map(str::to_owned);
        // Several proofs: none is taken (RFC 9449 §4.3: exactly one).
        let proof = if all.next().is_some() { Some(String::new()) } else { first };
        Outcome::Success(DpopHeader(proof))
    }
}

/// Reads a form body strictly.
async fn read_form(ct: Option<&ContentType>, data: Data<'_>) -> Result<HashMap<String, String>, ApiError> {
    if !ct.is_some_and(|c| c.is_form()) {
        return Err(ApiError::new(
            Status::UnsupportedMediaType,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let body = data
        .open(super::body_limit())
        .into_bytes()
        .await
        .map_err(|_| ApiError::invalid_request("the body could not be read"))?;
    if !body.is_complete() {
        let why = format!("the body is larger than {}", super::BODY_LIMIT);
        return Err(ApiError::new(Status::PayloadTooLarge, "invalid_request", why));
    }
    let bytes = body.into_inner();
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Err(ApiError::invalid_request("the body is not valid UTF-8"));
    };
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (form_decode(k), form_decode(v));
        // Decoding writes U+FFFD where the bytes were not UTF-8.
        if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
            return Err(ApiError::invalid_request("a parameter is not valid UTF-8 once decoded"));
        }
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(ApiError::invalid_request(format!("parameter '{k}' is repeated")));
        }
    }
    Ok(out)
}

/// One form-urlencoded name or value, decoded (`+` is a space, `%XX` a byte; bytes that are
/// not UTF-8 become U+FFFD). Most (grant types, tokens, base64url secrets) have nothing to
/// decode and are borrowed as they are.
fn form_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return Cow::Borrowed(raw);
    }
    // A lone component parsed as the value of a pair: an `=` inside it stays part of it.
    let decoded = form_urlencoded::parse(format!("x={raw}").as_bytes()).next().map(|(_, v)| v.into_owned());
    Cow::Owned(decoded.unwrap_or_default())
}

/// How a client proved who it is.
enum Presented {
    /// `client_secret_basic` or `client_secret_post`: its id and secret.
    Secret(String, String),
    /// `private_key_jwt`: an assertion it signed, and the `client_id` sent with it, if any.
    Assertion(Option<String>, String),
}

/// Client credentials presented by `client_secret_basic`, `client_secret_post` or
/// `private_key_jwt` (RFC 7523 §2.2); more than one method is refused (RFC 6749 §2.3).
fn client_credentials(auth: &AuthHeader, form: &HashMap<String, String>) -> Result<Option<Presented>, ApiError> {
    let basic = match auth.0.as_deref().map(Authorization::parse) {
        Some(Authorization::Basic(encoded)) => {
            let decoded = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::invalid_client("malformed Basic credentials"))?;
            let (id, secret) =
                decoded.split_once(':').ok_or_else(|| ApiError::invalid_client("malformed Basic credentials"))?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded.
            Some(Presented::Secret(form_decode(id).into_owned(), form_decode(secret).into_owned()))
        }
        _ => None,
    };
    let post = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Some(Presented::Secret(id.clone(), secret.clone())),
        (None, Some(_)) => return Err(ApiError::invalid_request("client_secret without client_id")),
        _ => None,
    };
    let assertion = match (form.get("client_assertion_type"), form.get("client_assertion")) {
        (Some(t), Some(a)) if t == CLIENT_ASSERTION_TYPE => {
            Some(Presented::Assertion(form.get("client_id").cloned(), a.clone()))
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_request(format!("client_assertion_type must be {CLIENT_ASSERTION_TYPE}")))
        }
        (None, Some(_)) | (Some(_), None) => {
            return Err(ApiError::invalid_request("client_assertion and client_assertion_type come together"))
        }
        (None, None) => None,
    };
    match [basic, post, assertion].into_iter().flatten().collect::<Vec<_>>() {
        found if found.len() > 1 => Err(ApiError::invalid_request("use one client authentication method, not two")),
        mut found => Ok(found.pop()),
    }
}

/// Authenticates the client from memory (or the database, or its published keys), or
/// answers `invalid_client` — or 429 when its address failed too often (checked before the
/// credential is, so a refusal reveals nothing).
async fn authenticate(
    clients: &Clients,
    creds: Option<Presented>,
    from: ClientAddress,
) -> Result<AuthenticatedClient, ApiError> {
    if let Some(wait) = clients.auth_refused(from.0, Credential::Client) {
        return Err(ApiError::throttled(wait.as_secs()));
    }
    let found = match creds {
        None => return Err(ApiError::invalid_client("client authentication is required")),
        Some(Presented::Secret(id, secret)) => match clients.authenticate_client_cached(&id, &secret) {
            Some(answer) => answer,
            None => clients.authenticate_client(&id, &secret).await.map_err(ApiError::from)?,
        },
        Some(Presented::Assertion(id, assertion)) => {
            clients.authenticate_assertion(id.as_deref(), &assertion).await.map_err(ApiError::from)?
        }
    };
    match found {
        Some(client) => Ok(client),
        None => match clients.auth_failed(from.0, Credential::Client) {
            Some(wait) => Err(ApiError::throttled(wait.as_secs())),
            None => Err(ApiError::invalid_client("client authentication failed")),
        },
    }
}

/// A token or introspection response: JSON text, never cached; with the DPoP nonce for the
/// client's next proof when nonces are on (RFC 9449 §8.2).
pub struct NoStore(String, Option<String>);

impl<'r> Responder<'r, 'static> for NoStore {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let mut res = Response::build();
        if let Some(nonce) = self.1 {
            res.header(Header::new("DPoP-Nonce", nonce));
        }
        res.header(ContentType::JSON)
            .header(Header::new("Cache-Control", "no-store"))
            .header(Header::new("Pragma", "no-cache"))
            .sized_body(self.0.len(), std::io::Cursor::new(self.0))
            .ok()
    }
}

/// RFC 8693's token types keyturn takes as a subject token, and the one it issues.
const SUBJECT_TOKEN_TYPES: [&str; 2] =
    ["urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"];
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The workload's own token: RFC 7523's `assertion`, or RFC 8693's `subject_token` of a JWT
/// type (with no actor token, and asking for an access token if it asks for a type).
fn workload_token(form: &HashMap<String, String>, exchange: bool) -> Result<String, ApiError> {
    if !exchange {
        return form.get("assertion").cloned().ok_or_else(|| ApiError::invalid_request("assertion is required"));
    }
    let token_type = form.get("subject_token_type").map(String::as_str);
    if !token_type.is_some_and(|t| SUBJECT_TOKEN_TYPES.contains(&t)) {
        return Err(ApiError::invalid_request(format!(
            "subject_token_type must be one of {}",
            SUBJECT_TOKEN_TYPES.join(", ")
        )));
    }
    if form.get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(ApiError::invalid_request(format!(
            "requested_token_type: keyturn issues {ACCESS_TOKEN_TYPE} only"
        )));
    }
    if form.contains_key("actor_token") {
        return Err(ApiError::invalid_request("actor_token (delegation) is not supported"));
    }
    form.get("subject_token").cloned().ok_or_else(|| ApiError::invalid_request("subject_token is required"))
}

/// The client a workload's token acts as; a refusal counts against its address like a wrong
/// secret, and an address over the limit is refused before the token is looked at.
async fn authenticate_workload(
    clients: &Clients,
    federation: &Federation,
    token: &str,
    from: ClientAddress,
) -> Result<AuthenticatedClient, ApiError> {
    if let Some(wait) = clients.auth_refused(from.0, Credential::Client) {
        return Err(ApiError::throttled(wait.as_secs()));
    }
    match federation.authenticate_workload(token).await {
        Err(refused @ crate::error::Error::InvalidGrant(_)) => match clients.auth_failed(from.0, Credential::Client) {
            Some(wait) => Err(ApiError::throttled(wait.as_secs())),
            None => Err(ApiError::from(refused)),
        },
        other => other.map_err(ApiError::from),
    }
}

#[post("/oauth/token", data = "<data>")]
#[allow(clippy::too_many_arguments)]
async fn token(
    clients: &State<Arc<Clients>>,
    federation: &State<Arc<Federation>>,
    tokens: &State<Arc<Tokens>>,
    auth: AuthHeader,
    dpop: DpopHeader,
    from: ClientAddress,
    ct: Option<&ContentType>,
    data: Data<'_>,
) -> Result<NoStore, ApiError> {
    let form = read_form(ct, data).await?;
    let creds = client_credentials(&auth, &form)?;
    let grant = form.get("grant_type").ok_or_else(|| ApiError::invalid_request("grant_type is required"))?;
    // A DPoP proof binds the access token to the proof's key (RFC 9449 §5). It is checked
    // now and spent (its jti recorded) only once the client, the workload or the refresh
    // token it comes with is found good, so a refused request records nothing.
    let proof = match &dpop.0 {
        Some(proof) => {
            let url = tokens.token_endpoint();
            let expected = crate::dpop::Expected { method: "POST", url: &url, access_token: None, key: None };
            Some(tokens.check_proof(proof, &expected)?)
        }
        None => None,
    };
    let proof = &proof;
    let proof_key = || async move {
        match proof {
            Some(p) => {
                tokens.spend_proof(p).await?;
                Ok::<_, ApiError>(Some(p.jkt.clone()))
            }
            None => Ok(None),
        }
    };
    // A client's token, for the client that authenticated or the one a workload acts as.
    let form = &form;
    let proof_key = &proof_key;
    let for_client = |client: AuthenticatedClient| async move {
        let bound_to = proof_key().await?;
        if client.dpop_required && bound_to.is_none() {
            return Err(ApiError::from(crate::error::Error::InvalidDpopProof(
                "this client must present a DPoP proof with its token requests".into(),
            )));
        }
        let scope = form.get("scope").cloned();
        let target = match (form.get("audience"), form.get("resource")) {
            (Some(a), Some(r)) if a != r => {
                return Err(ApiError::invalid_request("audience and resource name different targets: give one"))
            }
            (_, Some(r)) => Some(Target::Resource(r.clone())),
            (Some(a), None) => Some(Target::Audience(a.clone())),
            (None, None) => None,
        };
        let issued = tokens.client_credentials(&client, scope.as_deref(), target.as_ref(), bound_to.as_deref()).await?;
        Ok((issued, bound_to))
    };
    let mut exchanged = false;
    let (issued, bound_to) = match grant.as_str() {
        "client_credentials" => for_client(authenticate(clients, creds, from).await?).await?,
        JWT_BEARER_GRANT | TOKEN_EXCHANGE_GRANT => {
            if creds.is_some() {
                return Err(ApiError::invalid_request(
                    "a workload's token is its credential: send no client authentication with it",
                ));
            }
            exchanged = grant == TOKEN_EXCHANGE_GRANT;
            let workload_token = workload_token(form, exchanged)?;
            for_client(authenticate_workload(clients, federation, &workload_token, from).await?).await?
        }
        "refresh_token" => {
            let client = match creds {
                Some(c) => Some(authenticate(clients, Some(c), from).await?),
                None => None,
            };
            let presented = form
                .get("refresh_token")
                .cloned()
                .ok_or_else(|| ApiError::invalid_request("refresh_token is required"))?;
            let issued = tokens.redeem_refresh(&presented, client.as_ref(), proof.as_ref()).await?;
            (issued, proof.as_ref().map(|p| p.jkt.clone()))
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(ApiError::new(
                Status::BadRequest,
                "unsupported_grant_type",
                format!("grant_type '{shown}' is not supported: use client_credentials or refresh_token (or, once an issuer is trusted, jwt-bearer or token-exchange)"),
            ));
        }
    };
    let mut body = serde_json::json!({
        "access_token": issued.access_token,
        "token_type": if bound_to.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": issued.expires_in,
    });
    if let Some(s) = issued.scope {
        body["scope"] = Value::from(s);
    }
    if let Some(r) = issued.refresh_token {
        body["refresh_token"] = Value::from(r);
    }
    if let Some(sid) = issued.session_id {
        body["session_id"] = Value::from(sid);
    }
    if exchanged {
        body["issued_token_type"] = Value::from(ACCESS_TOKEN_TYPE);
    }
    Ok(NoStore(body.to_string(), tokens.dpop_nonce()))
}

/// RFC 7009: a client revokes one of its tokens, or an app with its issuer API key
/// (`Authorization: Bearer kt_…`) revokes a token it minted — a token of a session ends the
/// whole session (logout). The answer is 200 whether or not the token was valid or the
/// caller's, so it reveals nothing.
#[post("/oauth/revoke", data = "<data>")]
async fn revoke(
    clients: &State<Arc<Clients>>,
    revocations: &State<Arc<Revocations>>,
    auth: AuthHeader,
    from: ClientAddress,
    caller: Result<Caller, ApiError>,
    ct: Option<&ContentType>,
    data: Data<'_>,
) -> Result<Status, ApiError> {
    let form = read_form(ct, data).await?;
    if Authorization::bearer(auth.0.as_deref()).is_some() {
        // An API key: the guard refused it (401, 429, or 503 when it could not be looked
        // up), or it is an issuer's or an administrator's.
        let caller = caller?;
        caller.require(&[Role::Issuer])?;
        let token = form.get("token").cloned().ok_or_else(|| ApiError::invalid_request("token is required"))?;
        let viewer = caller.session_viewer();
        let actor = caller.actor();
        revocations.revoke_for_api_key(&token, &viewer, &actor).await.map_err(ApiError::from)?;
        return Ok(Status::Ok);
    }
    let creds = client_credentials(&auth, &form)?;
    let client = authenticate(clients, creds, from).await?;
    let token = form.get("token").cloned().ok_or_else(|| ApiError::invalid_request("token is required"))?;
    revocations.revoke_for_client(&token, &client).await.map_err(ApiError::from)?;
    Ok(Status::Ok)
}

/// RFC 7662: a verifier (API key of role verifier or admin) or a client asks whether a
/// token is active. A client is told only about tokens issued to it or addressed to one of
/// its audiences; any other token is `{"active": false}` to it.
#[post("/oauth/introspect", data = "<data>")]
async fn introspect(
    clients: &State<Arc<Clients>>,
    tokens: &State<Arc<Tokens>>,
    auth: AuthHeader,
    from: ClientAddress,
    caller: Result<Caller, ApiError>,
    ct: Option<&ContentType>,
    data: Data<'_>,
) -> Result<NoStore, ApiError> {
    let form = read_form(ct, data).await?;
    let bearer = Authorization::bearer(auth.0.as_deref()).is_some();
    let client = if bearer {
        // An API key: the guard's refusal (401, 429, or 503 when it could not be looked up).
        caller?.require(&[Role::Verifier])?;
        None
    } else {
        Some(authenticate(clients, client_credentials(&auth, &form)?, from).await?)
    };
    let token = form.get("token").cloned().ok_or_else(|| ApiError::invalid_request("token is required"))?;
    tokens.require_fresh_state()?;
    // Verification is microseconds of CPU and touches only memory: no blocking thread.
    let answer = match client {
        Some(c) => tokens.introspect_for_client(&token, &c),
        None => tokens.introspect(&token),
    };
    Ok(NoStore(answer.to_json(), None))
}
