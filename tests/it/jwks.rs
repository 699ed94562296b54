//! `GET /.well-known/jwks.json`: what real JWT libraries need, and caching.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use keyturn::keys::Algorithm;
use keyturn::service::tokens::IssueRequest;
use keyturn::service::Actor;
use serde_json::Value;

use crate::support::{self, fake_clock, get_json, http, kids};

const ALL: &str = "ES256,ES384,EdDSA,RS256,PS256";

/// Issues (and records) a token for `sub` with audience `api`, the way every token is made.
async fn issue(server: &keyturn::Server, alg: Algorithm, sub: &str) -> (String, String) {
    let req = IssueRequest { sub: sub.into(), aud: vec!["api".into()], alg: Some(alg), ..IssueRequest::default() };
    let t = server.service.tokens().issue_token(&req, &Actor::system()).await.expect("issue");
    (t.access_token, t.kid)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_algorithm_verifies_with_only_the_fetched_jwks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = support::start(dir.path(), &[("KEYTURN_ALGORITHMS", ALL)], fake_clock()).await;
    let raw = http().get(format!("{}/.well-known/jwks.json", server.url())).send().await.expect("get");
    let set: JwkSet = serde_json::from_slice(&raw.bytes().await.expect("body")).expect("a JWKS jsonwebtoken parses");
    assert_eq!(set.keys.len(), 10, "one active and one pending key per algorithm");

    for alg in Algorithm::ALL {
        let (token, kid) = issue(&server, alg, "alice").await;
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()), "{alg}: header names the kid");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        // The verifier's only knowledge: the JWKS it fetched and the kid in the header.
        let jwk = set.find(kid.as_str()).unwrap_or_else(|| panic!("{alg}: kid {kid} is published"));
        let key = DecodingKey::from_jwk(jwk).expect("decoding key from JWK");
        let mut validation = Validation::new(alg.jwt());
        validation.set_audience(&["api"]);
        // The fake clock issues tokens in the past of the wall clock jsonwebtoken reads.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation)
            .unwrap_or_else(|e| panic!("{alg}: token does not verify with the published JWK: {e}"));
        assert_eq!(data.claims["sub"], "alice");
        // And the wrong key of the same algorithm refuses it.
        let other = set
            .keys
            .iter()
            .find(|k| {
                k.common.key_id.as_deref() != Some(kid.as_str()) && k.common.key_algorithm == jwk.common.key_algorithm
            })
            .expect("pending key");
        let other_key = DecodingKey::from_jwk(other).expect("decoding key");
        assert!(
            jsonwebtoken::decode::<Value>(&token, &other_key, &validation).is_err(),
            "{alg}: the other key must not verify"
        );
    }
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_members_are_public_and_certificates_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = support::start(dir.path(), &[("KEYTURN_ALGORITHMS", ALL)], fake_clock()).await;
    let jwks = get_json(&format!("{}/.well-known/jwks.json", server.url())).await;
    let allowed = ["kty", "use", "alg", "kid", "crv", "x", "y", "n", "e", "x5c", "x5t#S256"];
    for jwk in jwks["keys"].as_array().expect("keys") {
        let obj = jwk.as_object().expect("object");
        for member in obj.keys() {
            assert!(allowed.contains(&member.as_str()), "unexpected (possibly private) member {member} in {jwk}");
        }
        for required in ["kty", "kid", "alg", "use", "x5c", "x5t#S256"] {
            assert!(obj.contains_key(required), "missing {required} in {jwk}");
        }
        assert_eq!(jwk["use"], "sig");
        let cert = STANDARD.decode(jwk["x5c"][0].as_str().expect("x5c")).expect("x5c is base64 DER");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &cert);
        assert_eq!(jwk["x5t#S256"], URL_SAFE_NO_PAD.encode(digest.as_ref()), "x5t#S256 is the certificate's digest");
        // The certificate carries this very public key.
        let b64 = |m: &str| URL_SAFE_NO_PAD.decode(jwk[m].as_str().expect(m)).expect("base64url");
        let public: Vec<u8> = match jwk["kty"].as_str() {
            Some("EC") => [vec![4u8], b64("x"), b64("y")].concat(),
            Some("OKP") => b64("x"),
            Some("RSA") => b64("n"),
            other => panic!("unexpected kty {other:?}"),
        };
        assert!(
            cert.windows(public.len()).any(|w| w == public.as_slice()),
            "certificate of {} lacks its public key",
            jwk["kid"]
        );
        // The subject names the issuer.
        let issuer = server.service.config().issuer.as_bytes().to_vec();
        assert!(cert.windows(issuer.len()).any(|w| w == issuer.as_slice()), "certificate subject names the issuer");
        // kid is the RFC 7638 thumbprint, recomputed independently here.
        let canonical = match jwk["kty"].as_str() {
            Some("EC") => format!(r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#, jwk["crv"], jwk["x"], jwk["y"]),
            Some("OKP") => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, jwk["crv"], jwk["x"]),
            _ => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, jwk["e"], jwk["n"]),
        };
        let thumb = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        assert_eq!(jwk["kid"], URL_SAFE_NO_PAD.encode(thumb.as_ref()), "kid is the RFC 7638 thumbprint");
    }
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn etag_and_not_modified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        support::start(dir.path(), &[("KEYTURN_JWKS_MAX_AGE", "120s"), ("KEYTURN_PUBLISH_LEAD", "15m")], fake_clock())
            .await;
    let url = format!("{}/.well-known/jwks.json", server.url());
    let first = http().get(&url).send().await.expect("get");
    assert_eq!(first.status(), 200);
    let h = first.headers().clone();
    assert_eq!(h["content-type"], "application/jwk-set+json");
    assert_eq!(h["cache-control"], "public, max-age=120");
    let etag = h["etag"].to_str().expect("etag").to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "strong ETag: {etag}");
    let body = first.bytes().await.expect("body");

    let again = http().get(&url).send().await.expect("get");
    assert_eq!(again.headers()["etag"].to_str().expect("etag"), etag, "same key set, same ETag");
    assert_eq!(again.bytes().await.expect("body"), body, "same bytes");

    for inm in [etag.clone(), format!("W/{etag}"), format!("\"nope\", {etag}"), "*".to_owned()] {
        let res = http().get(&url).header("If-None-Match", &inm).send().await.expect("get");
        assert_eq!(res.status(), 304, "If-None-Match: {inm}");
        assert_eq!(res.headers()["etag"].to_str().expect("etag"), etag);
        assert_eq!(res.headers()["cache-control"], "public, max-age=120");
        assert!(res.bytes().await.expect("body").is_empty(), "304 has no body");
    }
    let stale = http().get(&url).header("If-None-Match", "\"stale\"").send().await.expect("get");
    assert_eq!(stale.status(), 200);
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_the_same_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("KEYTURN_ALGORITHMS", "ES256,EdDSA,RS256")];
    let server = support::start(dir.path(), &env, fake_clock()).await;
    let url = format!("{}/.well-known/jwks.json", server.url());
    let before = get_json(&url).await;
    let etag_before = http().get(&url).send().await.expect("get").headers()["etag"].clone();
    server.stop().await.expect("stop");

    let server = support::start(dir.path(), &env, fake_clock()).await;
    let url = format!("{}/.well-known/jwks.json", server.url());
    let after = get_json(&url).await;
    assert_eq!(kids(&before), kids(&after), "a restart loads the same keys");
    assert_eq!(before, after);
    assert_eq!(http().get(&url).send().await.expect("get").headers()["etag"], etag_before);
    // The reloaded active key still signs tokens the published key verifies.
    let (token, kid) = issue(&server, Algorithm::EdDSA, "x").await;
    assert!(kids(&after).contains(&kid.to_string()));
    let set: JwkSet = serde_json::from_value(after).expect("jwks");
    let key = DecodingKey::from_jwk(set.find(kid.as_str()).expect("published")).expect("key");
    let mut v = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.validate_aud = false;
    v.validate_exp = false;
    jsonwebtoken::decode::<Value>(&token, &key, &v).expect("verifies after restart");
    server.stop().await.expect("stop");
}
