//! The documents made from the published keys: the JWKS and the discovery metadata.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::generate::PublicJwk;
use crate::keys::jwks::{self, Document};
use crate::keys::{Algorithm, KeyRecord};

/// The JWKS of every published key, grouped by algorithm, oldest first within each; with
/// each key's certificate (`x5c`, `x5t#S256`) unless `x5c` is off.
pub(super) fn serialize_jwks(keys: &[KeyRecord], x5c: bool) -> Result<Document> {
    let mut published: Vec<&KeyRecord> = keys.iter().filter(|k| k.state.is_published()).collect();
    published.sort_by(|a, b| (a.alg, a.published_at, &a.kid).cmp(&(b.alg, b.published_at, &b.kid)));
    let jwks: Vec<PublicJwk> = published
        .iter()
        .map(|k| {
            let mut jwk = PublicJwk::parse(&k.public_jwk).map_err(|reason| Error::KeyDoesNotLoad {
                kid: k.kid.clone(),
                reason: format!("stored public key: {reason}"),
            })?;
            if !x5c {
                jwk.x5c.clear();
                jwk.x5t_s256.clear();
            }
            Ok(jwk)
        })
        .collect::<Result<_>>()?;
    Ok(jwks::serialize(&jwks.iter().collect::<Vec<_>>()))
}

/// The token endpoint's URL: what the metadata advertises and what a DPoP proof for it names.
pub(super) fn token_endpoint(config: &Config) -> String {
    format!("{}/oauth/token", config.issuer)
}

/// The grant types: a workload's own token is exchanged only once an issuer is trusted.
fn grant_types(federated: bool) -> Vec<&'static str> {
    let mut grants = vec!["client_credentials", "refresh_token"];
    if federated {
        grants.extend([super::federation::JWT_BEARER_GRANT, super::federation::TOKEN_EXCHANGE_GRANT]);
    }
    grants
}

/// What a client assertion's `aud` may name (RFC 7523 §3, OIDC Core §9): the issuer, or the
/// endpoint it authenticates at.
pub(super) fn assertion_audiences(config: &Config) -> Vec<String> {
    let at = |path: &str| format!("{}{path}", config.issuer);
    vec![config.issuer.clone(), token_endpoint(config), at("/oauth/introspect"), at("/oauth/revoke")]
}

/// The discovery documents: RFC 8414 authorization-server metadata, and the same metadata
/// at the OpenID Connect path for resource-server libraries that only look there.
///
/// Everything in them is true. keyturn has no authorization endpoint, so no grant type it
/// lists uses one and the only response type is `none` (RFC 8414 and strict validators
/// require a non-empty list). Introspection lists the registered client authentication
/// methods only (an API key as Bearer works too, but is no registered method). keyturn issues
/// no ID tokens, so the document at the OpenID path is not OpenID Provider metadata (no
/// `subject_types_supported`, no authorization endpoint): it only adds
/// `id_token_signing_alg_values_supported`, which resource-server libraries
/// (express-oauth2-jwt-bearer) read as the issuer's signing algorithms, and which is
/// therefore the algorithms of the keys in the published JWKS, not the configuration: a
/// retired key of an algorithm no longer configured still verifies its tokens.
pub(super) fn discovery(config: &Config, keys: &[KeyRecord], openid: bool, federated: bool) -> Document {
    let client_auth = ["client_secret_basic", "client_secret_post", "private_key_jwt"];
    let assertion_algs = crate::assertion::ASSERTION_ALGORITHMS.map(|a| format!("{a:?}"));
    let mut doc = serde_json::json!({
        "issuer": config.issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", config.issuer),
        "response_types_supported": ["none"],
        "token_endpoint": token_endpoint(config),
        "introspection_endpoint": format!("{}/oauth/introspect", config.issuer),
        "revocation_endpoint": format!("{}/oauth/revoke", config.issuer),
        "grant_types_supported": grant_types(federated),
        "token_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_methods_supported": client_auth,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        // RFC 9449 §5.1: a DPoP proof at the token endpoint binds the token to its key.
        "dpop_signing_alg_values_supported": crate::dpop::PROOF_ALGORITHMS.map(|a| format!("{a:?}")),
    });
    if openid {
        // The configured ones first, in their order, then any other still published.
        let published: std::collections::BTreeSet<Algorithm> =
            keys.iter().filter(|k| k.state.is_published()).map(|k| k.alg).collect();
        let mut algs: Vec<Algorithm> = config.algorithms.iter().copied().filter(|a| published.contains(a)).collect();
        algs.extend(published.iter().filter(|a| !config.algorithms.contains(a)));
        doc["id_token_signing_alg_values_supported"] =
            serde_json::json!(algs.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    }
    Document::new(serde_json::to_vec(&doc).unwrap_or_default())
}
