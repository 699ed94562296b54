//! Introspection (RFC 7662): is this access token one keyturn issued, unexpired and not
//! revoked? Verification follows RFC 8725: the algorithm comes from the key named by `kid`,
//! never from the header; `none`, HMAC and any `crit` header are refused; `jku`, `x5u` and
//! embedded `jwk` headers are ignored. Times are checked against the service's clock.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::clients::AuthenticatedClient;
use super::Tokens;
use crate::clock::from_unix;
use crate::keys::signer::ACCESS_TOKEN_TYP;
use crate::revocation::TokenFacts;

/// The answer: `{"active": false}` or `{"active": true, …claims}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Introspection {
    pub active: bool,
    /// The claims (with `kid`), shared with the cache of verified signatures.
    pub claims: Arc<Map<String, Value>>,
    /// Why it is inactive, for logs and tests; never sent to the caller.
    pub reason: &'static str,
}

impl Introspection {
    fn inactive(reason: &'static str) -> Self {
        Introspection { active: false, claims: Arc::default(), reason }
    }

    /// The RFC 7662 response body as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing a map of strings and JSON values cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"active":false}"#.to_owned())
    }
}

/// The RFC 7662 response body: `{"active": false}`, or `active`, `token_type` and the claims,
/// written straight from the shared claims (introspection is a hot path: no copy of them).
impl serde::Serialize for Introspection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if !self.active {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry("active", &false)?;
            return map.end();
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("active", &true)?;
        // A token bound to a key (RFC 9449 `cnf.jkt`) is a DPoP token.
        let bound = self.claims.get("cnf").and_then(|c| c.get("jkt")).is_some();
        map.serialize_entry("token_type", if bound { "DPoP" } else { "Bearer" })?;
        for (name, value) in self.claims.iter().filter(|(name, _)| !matches!(name.as_str(), "active" | "token_type")) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Tokens {
    /// Fails when this node's memory may miss revocations made elsewhere: see
    /// [`super::Shared::require_fresh_state`]. Introspection and forward auth ask first.
    pub fn require_fresh_state(&self) -> crate::error::Result<()> {
        self.shared.require_fresh_state()
    }

    /// Introspects an access token (and counts the answer for `/metrics`).
    pub fn introspect(&self, token: &str) -> Introspection {
        let answer = self.introspect_uncounted(token);
        self.metrics.introspected(answer.active);
        answer
    }

    /// Introspects for an OAuth client: it is told only about tokens issued to it
    /// (`client_id`) or addressed to one of its audiences; any other token is inactive to it,
    /// so one client cannot read another's tokens and claims.
    pub fn introspect_for_client(&self, token: &str, client: &AuthenticatedClient) -> Introspection {
        let mut answer = self.introspect_uncounted(token);
        if answer.active {
            let own = answer.claims.get("client_id").and_then(Value::as_str) == Some(client.client_id.as_str());
            if !own && !audiences(&answer.claims).any(|a| client.audiences.iter().any(|c| c == a)) {
                answer = Introspection::inactive("neither issued to nor addressed to this client");
            }
        }
        self.metrics.introspected(answer.active);
        answer
    }

    /// Forward auth (`/auth/verify`): the same checks as introspection, from memory, on the
    /// token the gateway passed on (from `Authorization: Bearer`, or the configured cookie),
    /// then the audience and scopes the gateway requires.
    pub fn forward_auth(&self, token: Option<&str>, required: &Requirements) -> ForwardAuth {
        let answer = match token {
            None => ForwardAuth::Invalid("no bearer token"),
            Some(token) => {
                let i = self.introspect_uncounted(token);
                if !i.active {
                    ForwardAuth::Invalid(i.reason)
                } else if !required.audiences.is_empty()
                    && !audiences(&i.claims).any(|a| required.audiences.iter().any(|r| r == a))
                {
                    ForwardAuth::Insufficient { scope: None }
                } else {
                    let granted: Vec<&str> =
                        i.claims.get("scope").and_then(Value::as_str).unwrap_or("").split(' ').collect();
                    if required.scopes.iter().all(|s| granted.contains(&s.as_str())) {
                        ForwardAuth::Allowed(i.claims)
                    } else {
                        let scope = Some(required.scopes.join(" "));
                        ForwardAuth::Insufficient { scope }
                    }
                }
            }
        };
        self.metrics.forward_auth(answer.result());
        answer
    }

    fn introspect_uncounted(&self, token: &str) -> Introspection {
        let published = self.shared.published();
        let v = match self.verified(token, &published) {
            Ok(v) => v,
            Err(reason) => return Introspection::inactive(reason),
        };
        let now = crate::clock::to_unix(self.clock.now());
        if now >= v.exp {
            return Introspection::inactive("expired");
        }
        if v.nbf.is_some_and(|nbf| now < nbf) {
            return Introspection::inactive("not yet valid");
        }
        let facts = TokenFacts {
            jti: &v.jti,
            sub: &v.sub,
            client_id: v.client_id.as_deref(),
            kid: &v.kid,
            sid: v.sid.as_deref(),
            iat: from_unix(v.iat),
        };
        if self.shared.revoked().check(&facts).is_some() {
            return Introspection::inactive("revoked");
        }
        Introspection { active: true, claims: v.claims.clone(), reason: "" }
    }

    /// The token's verified claims: from the cache of verified signatures when this very
    /// token was verified before under a key still published (a kid is its key's thumbprint,
    /// so the same kid is the same key), else verified now and remembered. Time and
    /// revocation are the caller's to check, every time.
    fn verified(&self, token: &str, published: &super::Published) -> Result<Arc<Verified>, &'static str> {
        if token.len() > super::tokens::MAX_TOKEN_BYTES {
            return Err("too long");
        }
        let digest: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| "digest")?;
        let cached = self.verified.map.read().unwrap_or_else(PoisonError::into_inner).get(&digest).cloned();
        if let Some(v) = cached {
            return if published.verifier(&v.kid).is_some() { Ok(v) } else { Err("unknown or unpublished key") };
        }
        let v = Arc::new(self.verify_signature(token, published)?);
        let mut map = self.verified.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= VERIFIED_CACHE_MAX {
            // Bounded: start over rather than grow (housekeeping also drops expired ones).
            map.clear();
        }
        map.insert(digest, v.clone());
        Ok(v)
    }

    /// Checks the token's form, header and signature (with the key named by `kid`, in that
    /// key's algorithm) and its issuer, and reads the claims every answer needs.
    fn verify_signature(&self, token: &str, published: &super::Published) -> Result<Verified, &'static str> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            // Refresh tokens and anything else that is not a compact JWS.
            return Err("not a JWS");
        };
        let Some(header) =
            URL_SAFE_NO_PAD.decode(header_b64).ok().and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        else {
            return Err("malformed header");
        };
        if header.contains_key("crit") {
            return Err("crit header");
        }
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
        if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) && !typ.eq_ignore_ascii_case("application/at+jwt") {
            return Err("not an access token (typ)");
        }
        let Some(kid) = header.get("kid").and_then(Value::as_str) else { return Err("no kid") };
        let Some((alg, key)) = published.verifier(kid) else {
            return Err("unknown or unpublished key");
        };
        let mut validation = jsonwebtoken::Validation::new(alg.jwt());
        // exp and nbf are checked against the service's clock, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        // `iss` must be present and ours: jsonwebtoken checks an issuer only when the claim
        // is there unless it is required. The other claims are checked below.
        validation.set_required_spec_claims(&["iss"]);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        let mut claims = match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
            Ok(data) => data.claims,
            Err(_) => return Err("signature, algorithm or issuer"),
        };
        let int = |name: &str| claims.get(name).and_then(Value::as_i64);
        let (Some(exp), Some(iat), nbf) = (int("exp"), int("iat"), int("nbf")) else {
            return Err("missing exp or iat");
        };
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(jti), Some(sub), client_id, sid) = (text("jti"), text("sub"), text("client_id"), text("sid")) else {
            return Err("missing jti or sub");
        };
        claims.insert("kid".into(), Value::from(kid));
        Ok(Verified { kid: kid.to_owned(), claims: Arc::new(claims), exp, iat, nbf, jti, sub, client_id, sid })
    }

    /// Drops verified signatures of tokens that have expired (housekeeping).
    pub(super) fn prune_verified(&self) {
        let now = crate::clock::to_unix(self.clock.now());
        self.verified.map.write().unwrap_or_else(PoisonError::into_inner).retain(|_, v| v.exp > now);
    }
}

/// How many verified signatures are remembered at most (about 1 KB each).
const VERIFIED_CACHE_MAX: usize = 10_000;

/// A token whose signature, header and issuer were checked, with the claims every answer
/// needs. Never a verdict: expiry and revocation are checked on every use.
#[derive(Debug)]
pub(super) struct Verified {
    kid: String,
    /// The token's claims, with `kid` added (the introspection answer's body).
    claims: Arc<Map<String, Value>>,
    exp: i64,
    iat: i64,
    nbf: Option<i64>,
    jti: String,
    sub: String,
    client_id: Option<String>,
    sid: Option<String>,
}

/// Verified signatures by the SHA-256 of the whole token, so a repeated token (a gateway
/// asks about the same one on every request) costs a hash and a lookup, not an ECDSA check.
#[derive(Debug, Default)]
pub(super) struct VerifiedCache {
    map: RwLock<HashMap<[u8; 32], Arc<Verified>>>,
}

/// What a gateway requires of a token at `/auth/verify`, from its query: any one of
/// `audiences` (when some are given) and every one of `scopes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
}

/// The answer to a forward-auth request.
#[derive(Clone, Debug, PartialEq)]
pub enum ForwardAuth {
    /// 200: the token is active and meets the requirements; its claims.
    Allowed(Arc<Map<String, Value>>),
    /// 401 `invalid_token`: missing, malformed, unverifiable, expired or revoked (why, for
    /// logs and tests only).
    Invalid(&'static str),
    /// 403 `insufficient_scope`: active, but not for the required audience or scopes.
    Insufficient { scope: Option<String> },
}

impl ForwardAuth {
    /// The label of `keyturn_forward_auth_total`.
    pub fn result(&self) -> &'static str {
        match self {
            ForwardAuth::Allowed(_) => "allowed",
            ForwardAuth::Invalid(_) => "invalid_token",
            ForwardAuth::Insufficient { .. } => "insufficient_scope",
        }
    }
}

/// A token's audiences: `aud` as a string or an array of strings.
fn audiences(claims: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let (one, many) = match claims.get("aud") {
        Some(Value::String(a)) => (Some(a.as_str()), None),
        Some(Value::Array(list)) => (None, Some(list.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}
