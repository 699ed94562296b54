//! DPoP proofs (RFC 9449): a JWT the holder of a key signs for one request, carrying the
//! public half in its header. A proof is checked here as the RFC says (§4.3) and nothing
//! else: its type, an asymmetric algorithm keyturn accepts, a public `jwk` that verifies the
//! signature, the request's method and URL, a recent `iat`, a `jti`, and `ath` (the hash of
//! the access token it is presented with) where one is. That the `jti` was never seen before
//! is the store's part (one replay cache for the whole cluster); whether its `nonce` is one
//! the server handed out is the caller's (the proof's nonce is returned).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::clock::{to_unix, Instant};
use crate::keys::generate::PRIVATE_JWK_MEMBERS;

/// The `typ` of a DPoP proof's header.
pub const PROOF_TYP: &str = "dpop+jwt";

/// The algorithms a proof may be signed with: asymmetric only (never `none`, never HMAC).
pub const PROOF_ALGORITHMS: [Algorithm; 5] =
    [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256];

/// The largest proof accepted (a proof carries a public key; an RSA-4096 one fits easily).
pub const MAX_PROOF_BYTES: usize = 4 * 1024;

/// The longest `jti` accepted (the replay cache keeps it).
pub const MAX_JTI_LEN: usize = 128;

/// What the request a proof must be for looks like.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The HTTP method, as sent (`POST`).
    pub method: &'a str,
    /// The request's URL; its query and fragment are not compared.
    pub url: &'a str,
    /// The access token presented with the proof (at a resource server): `ath` must be its
    /// hash. `None` at the token endpoint, where no access token comes with it.
    pub access_token: Option<&'a str>,
    /// The key the proof must be made with (a bound token's `cnf.jkt`), when one is known
    /// before the proof is checked.
    pub key: Option<&'a str>,
}

/// A proof that passed every check but the replay cache's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key: what a bound token's `cnf.jkt` says.
    pub jkt: String,
    pub jti: String,
    /// When the holder says it made the proof.
    pub iat: Instant,
    /// The server nonce it carries, if any.
    pub nonce: Option<String>,
}

/// Why a proof was refused; the text says which check failed (never the proof itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DPoP proof: {0}")]
pub struct ProofError(pub String);

fn refused(why: impl Into<String>) -> ProofError {
    ProofError(why.into())
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Checks `proof` for the request `expected` describes, at `now`: its `iat` may be at most
/// `window` away from now, either way.
pub fn check(proof: &str, expected: &Expected<'_>, now: Instant, window: Duration) -> Result<Proof, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(refused(format!("larger than {MAX_PROOF_BYTES} bytes")));
    }
    let head = proof.split('.').next().unwrap_or_default();
    let raw: Value = URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refused("not a JWT"))?;
    if raw["typ"] != PROOF_TYP {
        return Err(refused(format!("typ must be {PROOF_TYP}")));
    }
    let jwk_raw = raw.get("jwk").and_then(Value::as_object).ok_or_else(|| refused("no jwk in its header"))?;
    // A private key in the header (RFC 9449 §4.3: the jwk "MUST NOT contain a private key").
    if PRIVATE_JWK_MEMBERS.iter().any(|k| jwk_raw.contains_key(*k)) {
        return Err(refused("its jwk holds private or symmetric key material"));
    }
    let header = jsonwebtoken::decode_header(proof).map_err(|_| refused("not a JWT"))?;
    if !PROOF_ALGORITHMS.contains(&header.alg) {
        return Err(refused(format!("alg {:?} is not accepted", header.alg)));
    }
    let jwk: Jwk = header.jwk.ok_or_else(|| refused("no jwk in its header"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| refused("its jwk is not a public key keyturn can use"))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(proof, &key, &validation)
        .map_err(|_| refused("its signature does not verify"))?
        .claims;

    let jti = claims.jti.filter(|j| !j.is_empty()).ok_or_else(|| refused("no jti"))?;
    if jti.len() > MAX_JTI_LEN {
        return Err(refused(format!("jti longer than {MAX_JTI_LEN} characters")));
    }
    if claims.htm.as_deref() != Some(expected.method) {
        return Err(refused(format!("htm is not {}", expected.method)));
    }
    let htu = claims.htu.ok_or_else(|| refused("no htu"))?;
    if !same_target(&htu, expected.url) {
        return Err(refused("htu is not this request's URL"));
    }
    let iat = claims.iat.ok_or_else(|| refused("no iat"))?;
    let skew = (iat - to_unix(now)).unsigned_abs();
    if skew > window.as_secs() {
        return Err(refused("iat is too far from now"));
    }
    match (expected.access_token, claims.ath.as_deref()) {
        (Some(token), Some(ath)) if ath == access_token_hash(token) => {}
        (Some(_), Some(_)) => return Err(refused("ath is not the hash of the access token")),
        (Some(_), None) => return Err(refused("no ath")),
        (None, _) => {}
    }
    if claims.nonce.as_ref().is_some_and(|n| n.len() > MAX_JTI_LEN) {
        return Err(refused(format!("nonce longer than {MAX_JTI_LEN} characters")));
    }
    let jkt = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|_| refused("its jwk has no thumbprint"))?;
    if expected.key.is_some_and(|k| k != jkt) {
        return Err(refused("it is made with another key than the token is bound to"));
    }
    let iat = time::OffsetDateTime::from_unix_timestamp(iat).map_err(|_| refused("iat is out of range"))?;
    Ok(Proof { jkt, jti, iat, nonce: claims.nonce })
}

/// `ath`: the base64url SHA-256 of an access token.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()))
}

/// Whether `htu` names `url`, their queries and fragments aside; the scheme and host compare
/// without regard to case (RFC 3986 §6.2.2.1), the path exactly.
fn same_target(htu: &str, url: &str) -> bool {
    fn split(u: &str) -> Option<(String, &str)> {
        let u = u.split(['?', '#']).next()?;
        let (scheme, rest) = u.split_once("://")?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        Some((format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()), path))
    }
    match (split(htu), split(url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
