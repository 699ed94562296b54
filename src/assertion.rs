//! Signed JWTs that others present to keyturn as proof of who they are: a client's
//! `client_assertion` (RFC 7523 §2.2, `private_key_jwt`) and a workload's identity token from
//! a trusted issuer (RFC 7523 §2.1, RFC 8693). Checked here against the public keys the
//! caller found for the issuer, as the RFCs say and nothing else: an asymmetric algorithm, a
//! key of the set that verifies the signature, the issuer, the subject where one is expected,
//! an audience keyturn answers to, an `exp` in the future and not too far in it, an `iat` not
//! in the future. That a `jti` was never seen before is the store's part (the replay cache).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::generate::PRIVATE_JWK_MEMBERS;

/// The algorithms an assertion may be signed with: asymmetric only (never `none`, never
/// HMAC, whose key would be a shared secret).
pub const ASSERTION_ALGORITHMS: [Algorithm; 7] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
];

/// The largest assertion accepted (RSA-4096 signatures and a few claims fit easily; a
/// Kubernetes service-account token is about 1 KiB).
pub const MAX_ASSERTION_BYTES: usize = 8 * 1024;

/// The longest `jti` accepted (the replay cache keeps it).
pub const MAX_JTI_LEN: usize = 128;

/// How far clocks may disagree: an `iat` this far in the future, or an `exp` this far in the
/// past, is still accepted.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// What an assertion must say.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    /// The `iss` it must carry.
    pub issuer: &'a str,
    /// The `sub` it must carry, when one is fixed (a client assertion's is its client id).
    pub subject: Option<&'a str>,
    /// Its `aud` must name one of these.
    pub audiences: &'a [String],
    /// The furthest its `exp` may be from now.
    pub max_lifetime: Duration,
    /// Whether a `jti` is required (for a client assertion it is: RFC 7523 §3 leaves it
    /// optional, OIDC Core §9 requires it, and it is what stops a replay).
    pub require_jti: bool,
}

/// An assertion that passed every check but the replay cache's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    pub jti: Option<String>,
    pub expires_at: Instant,
    /// The `kid` of the key that verified it, if the key had one.
    pub kid: Option<String>,
    /// Every claim, for the caller's own rules (scopes asked for, a workload's claims).
    pub claims: Value,
}

/// Why an assertion was refused; the text says which check failed (never the assertion).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// No key of the set fits the assertion's `kid` (or, without one, its algorithm): the
    /// issuer may have rotated its keys, so fetching its set again may help.
    #[error("no key of the issuer's key set verifies it")]
    UnknownKey,
    #[error("{0}")]
    Invalid(String),
}

fn invalid(why: impl Into<String>) -> AssertionError {
    AssertionError::Invalid(why.into())
}

/// The unverified claims `iss` and `sub`, to find whose keys to check an assertion with.
/// `None` when it is not a JWT with string claims.
pub fn claimed_issuer(assertion: &str) -> Option<(String, Option<String>)> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return None;
    }
    let payload = assertion.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let iss = claims.get("iss")?.as_str()?.to_owned();
    let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    Some((iss, sub))
}

#[derive(Deserialize)]
struct Registered {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn names(&self, any: &[String]) -> bool {
        match self {
            Audience::One(a) => any.contains(a),
            Audience::Many(list) => list.iter().any(|a| any.contains(a)),
        }
    }
}

/// Checks `assertion` against `keys` and `rules` at `now`.
pub fn verify(assertion: &str, keys: &JwkSet, rules: &Rules<'_>, now: Instant) -> Result<Verified, AssertionError> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(invalid(format!("larger than {MAX_ASSERTION_BYTES} bytes")));
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| invalid("not a signed JWT"))?;
    if !ASSERTION_ALGORITHMS.contains(&header.alg) {
        return Err(invalid(format!("alg {:?} is not accepted: sign with an asymmetric key", header.alg)));
    }
    let jwk = choose_key(keys, header.kid.as_deref(), header.alg).ok_or(AssertionError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid("the issuer's key cannot verify signatures"))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|_| invalid("its signature does not verify"))?
        .claims;
    let registered: Registered =
        serde_json::from_value(claims.clone()).map_err(|_| invalid("its registered claims have the wrong types"))?;

    if registered.iss.as_deref() != Some(rules.issuer) {
        return Err(invalid("iss is not the expected issuer"));
    }
    let subject = registered.sub.filter(|s| !s.is_empty()).ok_or_else(|| invalid("no sub"))?;
    if rules.subject.is_some_and(|expected| expected != subject) {
        return Err(invalid("sub is not the client id"));
    }
    if !registered.aud.is_some_and(|aud| aud.names(rules.audiences)) {
        return Err(invalid("aud does not name this server"));
    }
    let unix_now = to_unix(now);
    let leeway = LEEWAY.as_secs() as i64;
    let exp = registered.exp.ok_or_else(|| invalid("no exp"))?;
    if exp + leeway <= unix_now {
        return Err(invalid("it has expired"));
    }
    if exp - unix_now > rules.max_lifetime.as_secs() as i64 + leeway {
        return Err(invalid(format!("exp is more than {} s away: make it short-lived", rules.max_lifetime.as_secs())));
    }
    if registered.iat.is_some_and(|iat| iat > unix_now + leeway) {
        return Err(invalid("iat is in the future"));
    }
    if registered.nbf.is_some_and(|nbf| nbf > unix_now + leeway) {
        return Err(invalid("it is not valid yet (nbf)"));
    }
    let jti = registered.jti.filter(|j| !j.is_empty());
    match &jti {
        None if rules.require_jti => return Err(invalid("no jti")),
        Some(j) if j.len() > MAX_JTI_LEN => return Err(invalid(format!("jti longer than {MAX_JTI_LEN} characters"))),
        _ => {}
    }
    Ok(Verified { subject, jti, expires_at: from_unix(exp), kid: jwk.common.key_id.clone(), claims })
}

/// The key named by `kid`; without a `kid`, the one key that can do `alg` (a set with two
/// such keys must name which).
fn choose_key<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<&'a Jwk> {
    match kid {
        Some(kid) => keys.keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)),
        None => {
            let mut fitting = keys.keys.iter().filter(|k| fits(k, alg));
            let first = fitting.next()?;
            fitting.next().is_none().then_some(first)
        }
    }
}

/// Whether `key` is of the family `alg` signs with (and says no other algorithm).
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    let family = matches!(
        (&key.algorithm, alg),
        (P::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
            | (P::OctetKeyPair(_), Algorithm::EdDSA)
            | (P::RSA(_), Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256)
    );
    let said = key.common.key_algorithm.map(|a| format!("{a:?}"));
    family && said.is_none_or(|a| a == format!("{alg:?}"))
}

/// Checks a key set a client registers: JSON `{"keys": [...]}`, at most `max_keys` keys, each
/// a public asymmetric key keyturn can verify with (no private or symmetric material).
pub fn check_public_key_set(set: &Value, max_keys: usize) -> Result<JwkSet, String> {
    let keys = set.get("keys").and_then(Value::as_array).ok_or("a JWKS is an object with a \"keys\" array")?;
    if keys.is_empty() || keys.len() > max_keys {
        return Err(format!("give 1 to {max_keys} keys"));
    }
    for key in keys {
        let fields = key.as_object().ok_or("each key is a JSON object")?;
        if PRIVATE_JWK_MEMBERS.iter().any(|f| fields.contains_key(*f)) {
            return Err("a key holds private or symmetric material: register public keys only".into());
        }
    }
    let parsed: JwkSet =
        serde_json::from_value(set.clone()).map_err(|e| format!("not a JWKS keyturn can read: {e}"))?;
    for key in &parsed.keys {
        DecodingKey::from_jwk(key).map_err(|_| "a key cannot verify signatures (unsupported type or curve)")?;
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
