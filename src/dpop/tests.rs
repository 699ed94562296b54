//! Each check of a DPoP proof, one refusal per row, against real keys (aws-lc-rs).

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use time::macros::datetime;

use super::*;

const URL: &str = "https://keyturn.example/oauth/token";
const NOW: Instant = datetime!(2026-12-07 12:00:00 UTC);

/// A P-256 key: what signs, and its public JWK.
struct Holder {
    key: EncodingKey,
    jwk: Value,
}

fn holder() -> Holder {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pair");
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    Holder { key: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
}

fn claims() -> Value {
    json!({"jti": "p-1", "htm": "POST", "htu": URL, "iat": to_unix(NOW)})
}

fn sign(h: &Holder, jwk: &Value, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(PROOF_TYP.into());
    header.jwk = Some(serde_json::from_value(jwk.clone()).expect("jwk"));
    jsonwebtoken::encode(&header, claims, &h.key).expect("sign")
}

/// A proof with `raw_header` as its header, signed by `key` (ES256) or not at all.
fn forged(raw_header: &Value, claims: &Value, key: Option<&EncodingKey>) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let input = format!("{}.{}", part(raw_header), part(claims));
    let signature = key
        .map_or_else(String::new, |k| jsonwebtoken::crypto::sign(input.as_bytes(), k, Algorithm::ES256).expect("sign"));
    format!("{input}.{signature}")
}

const AT_TOKEN_ENDPOINT: Expected<'static> = Expected { method: "POST", url: URL, access_token: None, key: None };
const WINDOW: Duration = Duration::from_secs(60);

#[test]
fn a_proof_for_this_request_passes_and_names_its_key() {
    let h = holder();
    let proof = sign(&h, &h.jwk, &claims());
    let checked = check(&proof, &AT_TOKEN_ENDPOINT, NOW, WINDOW).expect("valid");
    let jwk: Jwk = serde_json::from_value(h.jwk.clone()).expect("jwk");
    assert_eq!(checked.jkt, jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint"));
    assert_eq!(checked.jti, "p-1");
    // The query and fragment are not compared; the scheme and host compare without case.
    let elsewhere = Expected { url: "HTTPS://Keyturn.Example/oauth/token?x=1#f", ..AT_TOKEN_ENDPOINT };
    assert!(check(&proof, &elsewhere, NOW, WINDOW).is_ok());
    // At a resource server: ath is the access token's hash.
    let mut with_ath = claims();
    with_ath["ath"] = Value::from(access_token_hash("the-token"));
    let proof = sign(&h, &h.jwk, &with_ath);
    let at_api = Expected { method: "GET", url: URL, access_token: Some("the-token"), key: None };
    let mut get = with_ath.clone();
    get["htm"] = Value::from("GET");
    assert!(check(&sign(&h, &h.jwk, &get), &at_api, NOW, WINDOW).is_ok());
    assert!(check(&proof, &at_api, NOW, WINDOW).is_err(), "htm POST for a GET");
    // Bound to this key: passes; bound to another: refused.
    let get_proof = sign(&h, &h.jwk, &get);
    let this_key = checked.jkt.clone();
    assert!(check(&get_proof, &Expected { key: Some(&this_key), ..at_api }, NOW, WINDOW).is_ok());
    let refused = check(&get_proof, &Expected { key: Some("another-thumbprint"), ..at_api }, NOW, WINDOW);
    assert!(refused.expect_err("another key").to_string().contains("another key"));
}

#[test]
fn every_check_refuses_what_it_should() {
    let h = holder();
    let other = holder();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&h, &h.jwk, &c)
    };
    let mut jwk_with_d = h.jwk.clone();
    jwk_with_d["d"] = Value::from("AAAA");
    let mut wrong_typ = Header::new(Algorithm::ES256);
    wrong_typ.typ = Some("JWT".into());
    wrong_typ.jwk = Some(serde_json::from_value(h.jwk.clone()).expect("jwk"));
    let mut hmac = Header::new(Algorithm::HS256);
    hmac.typ = Some(PROOF_TYP.into());
    hmac.jwk = Some(serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0"})).expect("jwk"));
    let mut hmac_ec_key = Header::new(Algorithm::HS256);
    hmac_ec_key.typ = Some(PROOF_TYP.into());
    hmac_ec_key.jwk = Some(serde_json::from_value(h.jwk.clone()).expect("jwk"));
    let none = forged(&json!({"typ": PROOF_TYP, "alg": "none", "jwk": h.jwk}), &claims(), None);
    let private = forged(&json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": jwk_with_d}), &claims(), Some(&h.key));
    let rows: Vec<(&str, String, &str)> = vec![
        ("another method", with(&|c| c["htm"] = "GET".into()), "htm"),
        ("another URL", with(&|c| c["htu"] = "https://keyturn.example/oauth/revoke".into()), "htu"),
        ("another host", with(&|c| c["htu"] = "https://evil.example/oauth/token".into()), "htu"),
        ("an old iat", with(&|c| c["iat"] = (to_unix(NOW) - 61).into()), "iat"),
        ("a future iat", with(&|c| c["iat"] = (to_unix(NOW) + 61).into()), "iat"),
        ("no jti", with(&|c| drop(c.as_object_mut().expect("obj").remove("jti"))), "jti"),
        ("a huge jti", with(&|c| c["jti"] = "j".repeat(200).into()), "jti"),
        ("no iat", with(&|c| drop(c.as_object_mut().expect("obj").remove("iat"))), "iat"),
        ("signed by another key than its jwk", sign(&other, &h.jwk, &claims()), "signature"),
        ("a private key in its jwk", private, "private"),
        ("typ JWT", jsonwebtoken::encode(&wrong_typ, &claims(), &h.key).expect("sign"), "typ"),
        (
            "HMAC with a symmetric jwk",
            jsonwebtoken::encode(&hmac, &claims(), &EncodingKey::from_secret(b"secret")).expect("sign"),
            "symmetric",
        ),
        (
            "HMAC keyed with the public key",
            jsonwebtoken::encode(&hmac_ec_key, &claims(), &EncodingKey::from_secret(b"secret")).expect("sign"),
            "alg",
        ),
        ("alg none", none, "JWT"),
        ("not a JWT", "abc".into(), "JWT"),
        ("too large", "a".repeat(MAX_PROOF_BYTES + 1), "larger"),
    ];
    for (what, proof, says) in rows {
        let err = check(&proof, &AT_TOKEN_ENDPOINT, NOW, WINDOW).expect_err(what);
        assert!(err.to_string().contains(says), "{what}: {err}");
    }
    // At a resource server: ath missing, or for another token; a nonce missing or stale.
    let at_api = Expected { method: "POST", url: URL, access_token: Some("the-token"), key: None };
    let err = check(&sign(&h, &h.jwk, &claims()), &at_api, NOW, WINDOW).expect_err("no ath");
    assert!(err.to_string().contains("ath"), "{err}");
    let other_token = with(&|c| c["ath"] = access_token_hash("another-token").into());
    assert!(check(&other_token, &at_api, NOW, WINDOW).expect_err("ath").to_string().contains("ath"));
    // The nonce is handed back for the server to judge; an absurd one is refused here.
    let nonced = check(&with(&|c| c["nonce"] = "n-2".into()), &AT_TOKEN_ENDPOINT, NOW, WINDOW).expect("valid");
    assert_eq!(nonced.nonce.as_deref(), Some("n-2"));
    let long = with(&|c| c["nonce"] = "n".repeat(MAX_JTI_LEN + 1).into());
    assert!(check(&long, &AT_TOKEN_ENDPOINT, NOW, WINDOW).expect_err("nonce").to_string().contains("nonce"));
}
