//! Forward auth for gateways: nginx `auth_request`, Traefik `ForwardAuth`, Caddy
//! `forward_auth`, Envoy `ext_authz` (HTTP). The gateway hands keyturn the original request's
//! headers at `/auth/verify` (any method, any path below it: Envoy appends the original path);
//! keyturn reads its `Authorization: Bearer` token and answers
//!
//! - `200` when introspection would call it active (and it meets the audience and scopes the
//!   query asks for), with the identity in [`IDENTITY_HEADERS`] for the gateway to forward;
//! - `401` with `WWW-Authenticate: Bearer error="invalid_token"` otherwise;
//! - `403` with `WWW-Authenticate: Bearer error="insufficient_scope"` when it is active but
//!   lacks a required audience (`?aud=a,b`: any one of them) or scope (`?scope=read write`:
//!   every one of them; `aud` and `scope` may also repeat).
//!
//! Every answer carries `Cache-Control: no-store`, so no gateway caches a revoked token's
//! answer. The check touches only memory; failed tokens are not throttled (the gateway's one
//! address would lock out every client behind it).

use std::sync::Arc;

use rocket::http::{ContentType, Header, Method, Status};
use rocket::route::{Handler, Outcome};
use rocket::serde::json::serde_json::json;
use rocket::{Data, Request, Response, Route};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::credentials::Authorization;
use crate::service::introspect::{ForwardAuth, Requirements};
use crate::service::Tokens;

/// The response headers of an allowed request, and the claim each carries. Values outside
/// printable ASCII are percent-encoded. Every one is sent, empty when the token lacks the
/// claim, so a gateway that copies them replaces whatever the client sent under that name.
pub const IDENTITY_HEADERS: [(&str, &str); 6] = [
    ("X-Auth-Subject", "sub"),
    ("X-Auth-Client-Id", "client_id"),
    ("X-Auth-Scope", "scope"),
    ("X-Auth-Audience", "aud"),
    ("X-Auth-Token-Id", "jti"),
    ("X-Auth-Expires", "exp"),
];

const METHODS: [Method; 7] =
    [Method::Get, Method::Head, Method::Post, Method::Put, Method::Delete, Method::Patch, Method::Options];

pub fn routes() -> Vec<Route> {
    METHODS
        .iter()
        .flat_map(|m| [Route::new(*m, "/auth/verify", Verify), Route::new(*m, "/auth/verify/<_..>", Verify)])
        .collect()
}

#[derive(Clone)]
struct Verify;

#[rocket::async_trait]
impl Handler for Verify {
    async fn handle<'r>(&self, req: &'r Request<'_>, _data: Data<'r>) -> Outcome<'r> {
        let state = req.rocket();
        let (Some(tokens), Some(config)) = (state.state::<Arc<Tokens>>(), state.state::<Arc<crate::config::Config>>())
        else {
            return Outcome::Error(Status::InternalServerError);
        };
        if let Err(e) = tokens.require_fresh_state() {
            return Outcome::from(req, ApiError::from(e));
        }
        let required = requirements(req.uri().query().map(|q| q.as_str()).unwrap_or(""));
        let presented = token_of(req, config.forward_auth_cookie.as_deref());
        let answer = tokens.forward_auth(presented.map(|(token, _)| token), &required);
        // A token bound to a key (`cnf.jkt`) is good only with a proof of that key for the
        // request the gateway forwards (RFC 9449 §7).
        if let (ForwardAuth::Allowed(claims), Some((token, dpop))) = (&answer, presented) {
            if let Some(jkt) = claims.get("cnf").and_then(|c| c.get("jkt")).and_then(Value::as_str) {
                if let Err(why) = holder_proves(req, tokens, token, dpop, jkt).await {
                    return Outcome::Success(refuse_dpop(why, tokens.dpop_nonce()));
                }
            }
        }
        Outcome::Success(respond(answer))
    }
}

/// Whether the request carries a DPoP proof of the key `jkt` for the gateway's original
/// request and `token`, never used before; the error is the `WWW-Authenticate` error code.
async fn holder_proves(
    req: &Request<'_>,
    tokens: &Tokens,
    token: &str,
    dpop_scheme: bool,
    jkt: &str,
) -> Result<(), &'static str> {
    let mut proofs = req.headers().get("DPoP");
    let (Some(proof), None) = (proofs.next(), proofs.next()) else { return Err("invalid_dpop_proof") };
    if !dpop_scheme {
        return Err("invalid_token");
    }
    let (Some(method), Some(url)) = (original_method(req), original_url(req)) else { return Err("invalid_dpop_proof") };
    // The key is checked before the proof's jti is recorded: another key's proof spends nothing.
    let expected = crate::dpop::Expected { method: &method, url: &url, access_token: Some(token), key: Some(jkt) };
    match tokens.accept_proof(proof, &expected).await {
        Ok(_) => Ok(()),
        Err(crate::error::Error::UseDpopNonce { .. }) => Err("use_dpop_nonce"),
        _ => Err("invalid_dpop_proof"),
    }
}

/// The original request's method, as the gateway forwards it (`X-Forwarded-Method`:
/// Traefik, Caddy; `X-Original-Method`: nginx as deploy/ configures it).
fn original_method(req: &Request<'_>) -> Option<String> {
    let h = req.headers();
    h.get_one("X-Forwarded-Method").or_else(|| h.get_one("X-Original-Method")).map(str::to_ascii_uppercase)
}

/// The original request's URL: `X-Original-URL` whole, or `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `X-Forwarded-Uri` together.
fn original_url(req: &Request<'_>) -> Option<String> {
    let h = req.headers();
    if let Some(url) = h.get_one("X-Original-URL") {
        return Some(url.to_owned());
    }
    let (proto, host, uri) =
        (h.get_one("X-Forwarded-Proto")?, h.get_one("X-Forwarded-Host")?, h.get_one("X-Forwarded-Uri")?);
    Some(format!("{proto}://{host}{uri}"))
}

/// 401 with RFC 9449's challenge, and the nonce the next proof must carry when nonces are on.
fn refuse_dpop(error: &'static str, nonce: Option<String>) -> Response<'static> {
    let algs = crate::dpop::PROOF_ALGORITHMS.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" ");
    let text = json!({"error": error, "error_description": "the token is bound to a key: present it with `Authorization: DPoP` and a fresh DPoP proof of that key for this request"}).to_string();
    let mut res = Response::build();
    if let Some(nonce) = nonce {
        res.header(Header::new("DPoP-Nonce", nonce));
    }
    res.status(Status::Unauthorized)
        .header(Header::new("WWW-Authenticate", format!("DPoP error=\"{error}\", algs=\"{algs}\"")))
        .header(Header::new("Cache-Control", "no-store"))
        .header(ContentType::JSON)
        .sized_body(text.len(), std::io::Cursor::new(text.into_bytes()))
        .finalize()
}

/// The token to check, and whether it came under the `DPoP` scheme: the token of the
/// `Authorization` header (`Bearer` or `DPoP`); without that header, the value of the cookie
/// named by `forward_auth_cookie` (an app that keeps its access token in an HttpOnly
/// cookie), if it is set.
fn token_of<'r>(req: &'r Request<'_>, cookie: Option<&str>) -> Option<(&'r str, bool)> {
    match req.headers().get_one("Authorization") {
        Some(header) => match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("DPoP") && !token.trim().is_empty() => {
                Some((token.trim(), true))
            }
            _ => Authorization::bearer(Some(header)).map(|t| (t, false)),
        },
        None => cookie.and_then(|name| req.cookies().get(name)).map(|c| (c.value(), false)),
    }
}

/// The gateway's requirements from the query string.
fn requirements(query: &str) -> Requirements {
    let mut out = Requirements::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let list = match &*k {
            "aud" => &mut out.audiences,
            "scope" => &mut out.scopes,
            _ => continue,
        };
        list.extend(v.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned));
    }
    out
}

fn respond(answer: ForwardAuth) -> Response<'static> {
    let mut res = Response::build();
    res.header(Header::new("Cache-Control", "no-store")).header(Header::new("Pragma", "no-cache"));
    let body = match answer {
        ForwardAuth::Allowed(claims) => {
            for (name, claim) in IDENTITY_HEADERS {
                res.header(Header::new(name, header_value(&claims, claim).unwrap_or_default()));
            }
            res.status(Status::Ok);
            return res.sized_body(0, std::io::Cursor::new(Vec::new())).finalize();
        }
        ForwardAuth::Invalid(_) => {
            res.status(Status::Unauthorized).header(Header::new("WWW-Authenticate", "Bearer error=\"invalid_token\""));
            json!({"error": "invalid_token", "error_description": "the bearer token is missing, malformed, expired, revoked or not issued here"})
        }
        ForwardAuth::Insufficient { scope, .. } => {
            let challenge = match &scope {
                Some(s) => format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", s.replace(['"', '\\'], "")),
                None => "Bearer error=\"insufficient_scope\"".to_owned(),
            };
            res.status(Status::Forbidden).header(Header::new("WWW-Authenticate", challenge));
            json!({"error": "insufficient_scope", "error_description": "the token is not for the required audience or lacks a required scope"})
        }
    };
    let text = body.to_string();
    res.header(ContentType::JSON).sized_body(text.len(), std::io::Cursor::new(text.into_bytes())).finalize()
}

/// A claim as a header value: strings as they are, arrays joined by spaces, numbers as
/// digits; anything outside printable ASCII percent-encoded.
fn header_value(claims: &Map<String, Value>, claim: &str) -> Option<String> {
    let text = match claims.get(claim)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        _ => return None,
    };
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_come_from_repeated_or_listed_parameters() {
        let r = requirements("aud=orders-api,billing&scope=read%20write&scope=admin&other=x");
        assert_eq!(r.audiences, ["orders-api", "billing"]);
        assert_eq!(r.scopes, ["read", "write", "admin"]);
        assert_eq!(requirements(""), Requirements::default());
    }

    #[test]
    fn header_values_are_printable_ascii() {
        let claims: Map<String, Value> = serde_json::from_value(
            json!({"sub": "zoë\r\nX-Evil: 1", "aud": ["a", "b"], "exp": 1700000000, "scope": "read 100%"}),
        )
        .expect("claims");
        assert_eq!(header_value(&claims, "sub").as_deref(), Some("zo%C3%AB%0D%0AX-Evil: 1"));
        assert_eq!(header_value(&claims, "aud").as_deref(), Some("a b"));
        assert_eq!(header_value(&claims, "exp").as_deref(), Some("1700000000"));
        assert_eq!(header_value(&claims, "scope").as_deref(), Some("read 100%25"));
        assert_eq!(header_value(&claims, "client_id"), None);
    }
}
