//! Each check of an assertion, one refusal per row, against real keys (aws-lc-rs).

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use time::macros::datetime;

use super::*;

const NOW: Instant = datetime!(2026-12-07 12:00:00 UTC);
const CLIENT: &str = "kc_client";

/// A P-256 key: what signs, and its public JWK named `kid`.
struct Signer {
    key: EncodingKey,
    jwk: Value,
}

fn signer(kid: &str) -> Signer {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pair");
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    Signer { key: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
}

fn set(signers: &[&Signer]) -> JwkSet {
    serde_json::from_value(json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()})).expect("set")
}

fn claims() -> Value {
    let now = to_unix(NOW);
    json!({"iss": CLIENT, "sub": CLIENT, "aud": "https://keyturn.example/oauth/token", "exp": now + 60, "iat": now, "jti": "a-1"})
}

fn sign(s: &Signer, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &s.key).expect("sign")
}

fn audiences() -> Vec<String> {
    vec!["https://keyturn.example".into(), "https://keyturn.example/oauth/token".into()]
}

fn check(assertion: &str, keys: &JwkSet) -> Result<Verified, AssertionError> {
    let aud = audiences();
    let rules = Rules {
        issuer: CLIENT,
        subject: Some(CLIENT),
        audiences: &aud,
        max_lifetime: Duration::from_secs(3600),
        require_jti: true,
    };
    verify(assertion, keys, &rules, NOW)
}

fn refusal(assertion: &str, keys: &JwkSet) -> String {
    check(assertion, keys).expect_err("refused").to_string()
}

#[test]
fn a_client_assertion_passes_and_says_its_jti_expiry_and_key() {
    let s = signer("k1");
    let verified = check(&sign(&s, Some("k1"), &claims()), &set(&[&s])).expect("valid");
    assert_eq!(verified.subject, CLIENT);
    assert_eq!(verified.jti.as_deref(), Some("a-1"));
    assert_eq!(verified.expires_at, NOW + Duration::from_secs(60));
    assert_eq!(verified.kid.as_deref(), Some("k1"));
    assert_eq!(claimed_issuer(&sign(&s, None, &claims())), Some((CLIENT.to_owned(), Some(CLIENT.to_owned()))));
}

#[test]
fn the_audience_may_be_the_issuer_or_the_endpoint_and_a_list() {
    let s = signer("k1");
    for aud in [json!("https://keyturn.example"), json!(["https://other", "https://keyturn.example/oauth/token"])] {
        let mut c = claims();
        c["aud"] = aud;
        check(&sign(&s, Some("k1"), &c), &set(&[&s])).expect("valid");
    }
}

#[test]
fn a_key_set_without_kids_is_used_when_one_key_fits() {
    let mut s = signer("");
    s.jwk.as_object_mut().expect("object").remove("kid");
    check(&sign(&s, None, &claims()), &set(&[&s])).expect("the one EC key");
    let mut t = signer("");
    t.jwk.as_object_mut().expect("object").remove("kid");
    assert_eq!(check(&sign(&s, None, &claims()), &set(&[&s, &t])), Err(AssertionError::UnknownKey), "two could");
}

#[test]
fn a_kid_the_set_lacks_is_an_unknown_key_so_the_set_may_be_fetched_again() {
    let (old, new) = (signer("old"), signer("new"));
    assert_eq!(check(&sign(&new, Some("new"), &claims()), &set(&[&old])), Err(AssertionError::UnknownKey));
    // Another key's kid on this key's signature: the signature does not verify.
    assert!(refusal(&sign(&new, Some("old"), &claims()), &set(&[&old])).contains("signature"));
}

#[test]
fn every_claim_is_checked() {
    let s = signer("k1");
    let keys = set(&[&s]);
    let now = to_unix(NOW);
    let cases: [(&str, Value, &str); 10] = [
        ("iss", json!("kc_other"), "iss"),
        ("sub", json!("kc_other"), "sub"),
        ("aud", json!("https://elsewhere.example/oauth/token"), "aud"),
        ("aud", json!(["https://elsewhere.example"]), "aud"),
        ("exp", json!(now - 31), "expired"),
        ("exp", json!(now + 3600 + 31), "short-lived"),
        ("exp", Value::Null, "no exp"),
        ("iat", json!(now + 31), "iat"),
        ("nbf", json!(now + 31), "nbf"),
        ("jti", Value::Null, "no jti"),
    ];
    for (claim, value, why) in cases {
        let mut c = claims();
        if value.is_null() {
            c.as_object_mut().expect("object").remove(claim);
        } else {
            c[claim] = value;
        }
        let refused = refusal(&sign(&s, Some("k1"), &c), &keys);
        assert!(refused.contains(why), "{claim}: {refused}");
    }
    let mut c = claims();
    c["jti"] = json!("j".repeat(MAX_JTI_LEN + 1));
    assert!(refusal(&sign(&s, Some("k1"), &c), &keys).contains("jti longer"));
    let mut c = claims();
    c["exp"] = json!("tomorrow");
    assert!(refusal(&sign(&s, Some("k1"), &c), &keys).contains("types"));
}

#[test]
fn hmac_none_and_oversized_assertions_are_refused() {
    let s = signer("k1");
    let keys = set(&[&s]);
    let hmac = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(b"shared"))
        .expect("sign");
    assert!(refusal(&hmac, &keys).contains("HS256"));
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let none = format!("{}.{}.", part(&json!({"alg": "none", "kid": "k1"})), part(&claims()));
    assert!(refusal(&none, &keys).contains("not a signed JWT"), "{}", refusal(&none, &keys));
    assert!(refusal(&"a".repeat(MAX_ASSERTION_BYTES + 1), &keys).contains("larger"));
    assert!(refusal("not.a.jwt", &keys).contains("not a signed JWT"));
    // A signature stripped from a valid assertion.
    let valid = sign(&s, Some("k1"), &claims());
    let stripped = format!("{}.", valid.rsplit_once('.').expect("three parts").0);
    assert!(refusal(&stripped, &keys).contains("signature"));
}

#[test]
fn a_registered_key_set_holds_public_asymmetric_keys_only() {
    let s = signer("k1");
    check_public_key_set(&json!({"keys": [s.jwk.clone()]}), 10).expect("public EC key");
    let mut private = s.jwk.clone();
    private["d"] = json!("AAAA");
    let refusals = [
        (json!({"keys": [private]}), "private"),
        (json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), "symmetric"),
        (json!({"keys": []}), "1 to 10"),
        (json!({"keys": vec![s.jwk.clone(); 11]}), "1 to 10"),
        (json!([s.jwk.clone()]), "\"keys\" array"),
        (json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA"}]}), "cannot verify"),
        (json!({"keys": [{"kty": "XX"}]}), "cannot verify"),
        (json!({"keys": [{"kty": "EC", "crv": 5, "kid": []}]}), "JWKS"),
        (json!({"keys": ["a"]}), "JSON object"),
    ];
    for (set, why) in refusals {
        let refused = check_public_key_set(&set, 10).expect_err("refused");
        assert!(refused.contains(why), "{set}: {refused}");
    }
}
