//! The capabilities' rules, each through the capability that owns it, on a SQLite database
//! in a temp dir and a fake clock: no daemon, no HTTP.

use std::time::Duration;

use super::clients::{NewClient, NewCredential};
use super::revocations::RevokeTarget;
use super::throttle::Credential;
use super::tokens::IssueRequest;
use super::{Actor, Keyturn};
use crate::clock::Clock;
use crate::config::{self, Inputs};
use crate::error::Error;

/// A service on its own data dir, its clock at a fixed time.
async fn service(env: &[(&str, &str)]) -> (Keyturn, Clock, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vars: Vec<(String, String)> = vec![
        ("KEYTURN_DATA_DIR".into(), dir.path().display().to_string()),
        ("KEYTURN_ISSUER".into(), "https://kt.example".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config =
        config::load(&Inputs { config_path: None, cwd: dir.path().to_owned(), env: vars.into_iter().collect() })
            .expect("configuration");
    let clock = Clock::fake(crate::clock::from_unix(1_800_000_000));
    let service = Keyturn::open(config, clock.clone()).await.expect("open");
    (service, clock, dir)
}

fn request(sub: &str, refresh: bool) -> IssueRequest {
    IssueRequest { sub: sub.into(), aud: vec!["api".into()], refresh, ..IssueRequest::default() }
}

#[tokio::test]
async fn a_spent_refresh_token_replayed_after_the_grace_ends_its_whole_session() {
    let (k, clock, _dir) = service(&[("KEYTURN_REFRESH_GRACE", "10s")]).await;
    let tokens = k.tokens();
    let first = tokens.issue_token(&request("alice", true), &Actor::cli()).await.expect("issued");
    let spent = first.refresh_token.clone().expect("a refresh token");
    let second = tokens.redeem_refresh(&spent, None, None).await.expect("refreshed");
    // Within the grace, the same successor again (a retry whose answer was lost).
    let retry = tokens.redeem_refresh(&spent, None, None).await.expect("retried");
    assert_eq!(retry.refresh_token, second.refresh_token);
    assert!(tokens.introspect(&second.access_token).active);
    clock.advance(Duration::from_secs(11));
    let replay = tokens.redeem_refresh(&spent, None, None).await;
    assert!(matches!(replay, Err(Error::InvalidGrant(_))), "{replay:?}");
    for t in [&first, &second, &retry] {
        assert!(!tokens.introspect(&t.access_token).active, "the session's tokens are refused");
    }
    let successor = second.refresh_token.expect("successor");
    assert!(tokens.redeem_refresh(&successor, None, None).await.is_err(), "and its live refresh token stopped");
}

#[tokio::test]
async fn a_subject_revocation_covers_what_was_issued_until_then_and_nothing_after() {
    let (k, clock, _dir) = service(&[]).await;
    let before = k.tokens().issue_token(&request("bob", false), &Actor::cli()).await.expect("issued");
    let other = k.tokens().issue_token(&request("carol", false), &Actor::cli()).await.expect("issued");
    let entry = k.revocations().revoke(&RevokeTarget::Sub("bob".into()), "laptop stolen", &Actor::cli()).await;
    assert_eq!(entry.expect("revoked").kind, "sub");
    clock.advance(Duration::from_secs(1));
    let after = k.tokens().issue_token(&request("bob", false), &Actor::cli()).await.expect("issued");
    assert!(!k.tokens().introspect(&before.access_token).active);
    assert!(k.tokens().introspect(&other.access_token).active, "another subject is untouched");
    assert!(k.tokens().introspect(&after.access_token).active, "a token issued later is not born revoked");
    let unknown = k.revocations().revoke(&RevokeTarget::Jti("no-such-jti".into()), "typo", &Actor::cli()).await;
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
    let blank = k.revocations().revoke(&RevokeTarget::Sub("bob".into()), "  ", &Actor::cli()).await;
    assert!(matches!(blank, Err(Error::Invalid(_))), "a reason is required: {blank:?}");
}

#[tokio::test]
async fn a_client_authenticates_while_enabled_and_disabling_it_revokes_its_tokens() {
    let (k, _clock, _dir) = service(&[]).await;
    let new = NewClient {
        name: "billing".into(),
        scopes: vec!["read".into()],
        audiences: vec!["api".into()],
        max_ttl: None,
        dpop_required: false,
        credential: NewCredential::Secret,
    };
    let (view, secret) = k.clients().create_client(&new, &Actor::cli()).await.expect("created");
    let secret = secret.expect("a secret is made");
    let client = k.clients().authenticate_client(&view.client_id, &secret).await.expect("read").expect("its secret");
    assert_eq!(k.clients().authenticate_client_cached(&view.client_id, "wrong"), Some(None));
    let issued = k.tokens().client_credentials(&client, Some("read"), None, None).await.expect("issued");
    let refused = k.tokens().client_credentials(&client, Some("write"), None, None).await;
    assert!(matches!(refused, Err(Error::InvalidScope(_))), "{refused:?}");
    assert!(k.tokens().introspect(&issued.access_token).active);
    k.clients().disable_client(&view.client_id, &Actor::cli()).await.expect("disabled");
    assert_eq!(k.clients().authenticate_client(&view.client_id, &secret).await.expect("read"), None);
    assert!(!k.tokens().introspect(&issued.access_token).active, "its tokens are revoked with it");
}

#[tokio::test]
async fn a_client_with_public_keys_authenticates_once_per_assertion_and_never_with_a_secret() {
    let (k, clock, _dir) = service(&[]).await;
    let (signing, mut jwk) = p256();
    jwk["kid"] = "c1".into();
    let new = NewClient {
        name: "batch".into(),
        audiences: vec!["api".into()],
        credential: NewCredential::Jwks(serde_json::json!({"keys": [jwk]})),
        ..NewClient::default()
    };
    let (view, secret) = k.clients().create_client(&new, &Actor::cli()).await.expect("created");
    assert!(secret.is_none(), "no secret is made");
    assert_eq!(view.token_endpoint_auth_method, "private_key_jwt");
    let id = view.client_id.clone();
    let assertion = |jti: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("c1".into());
        let now = crate::clock::to_unix(clock.now());
        let claims = serde_json::json!({"iss": id, "sub": id, "aud": k.config().issuer, "iat": now, "exp": now + 60, "jti": jti});
        jsonwebtoken::encode(&header, &claims, &signing).expect("sign")
    };
    let first = assertion("one");
    let client = k.clients().authenticate_assertion(None, &first).await.expect("read").expect("authenticated");
    assert_eq!(client.client_id, view.client_id);
    assert_eq!(k.clients().authenticate_assertion(None, &first).await.expect("read"), None, "a replay");
    assert_eq!(k.clients().authenticate_assertion(Some("kc_other"), &assertion("two")).await.expect("read"), None);
    assert!(k
        .clients()
        .authenticate_assertion(Some(&view.client_id), &assertion("three"))
        .await
        .expect("read")
        .is_some());
    assert_eq!(k.clients().authenticate_client(&view.client_id, "").await.expect("read"), None, "no secret works");
    clock.advance(Duration::from_secs(120));
    assert_eq!(k.clients().authenticate_assertion(None, &first).await.expect("read"), None, "expired");
    k.clients().disable_client(&view.client_id, &Actor::cli()).await.expect("disabled");
    assert_eq!(k.clients().authenticate_assertion(None, &assertion("four")).await.expect("read"), None, "disabled");
}

#[tokio::test]
async fn failed_authentications_past_the_limit_refuse_that_address_alone_until_it_waits() {
    let (k, clock, _dir) = service(&[("KEYTURN_AUTH_FAILURE_LIMIT", "3"), ("KEYTURN_AUTH_FAILURE_WINDOW", "1m")]).await;
    let (guesser, other) = (Some("192.0.2.1".parse().expect("ip")), Some("192.0.2.2".parse().expect("ip")));
    let clients = k.clients();
    assert!((0..3).all(|_| clients.auth_failed(guesser, Credential::Client).is_none()), "three are allowed");
    let wait = clients.auth_failed(guesser, Credential::Client).expect("the fourth is over the limit");
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60), "{wait:?}");
    assert!(clients.auth_refused(guesser, Credential::Client).is_some());
    assert!(clients.auth_refused(other, Credential::Client).is_none(), "another address is not refused");
    clock.advance(wait);
    assert!(clients.auth_refused(guesser, Credential::Client).is_none(), "refused only until it waits");
}

#[tokio::test]
async fn a_key_revocation_republishes_without_the_key_and_signs_with_another() {
    let (k, _clock, _dir) = service(&[]).await;
    let issued = k.tokens().issue_token(&request("dave", false), &Actor::cli()).await.expect("issued");
    let kid = crate::keys::KeyId::new(issued.kid.as_str());
    let outcome = k.keys().revoke_key(&kid, "private key leaked", &Actor::cli()).await.expect("revoked");
    assert_eq!(outcome.live_tokens_invalidated, 1);
    let published = k.keys().published();
    assert!(published.key(&kid).is_none() && published.verifier(kid.as_str()).is_none(), "left the JWKS");
    let replacement = outcome.replacement.expect("another key signs");
    let next = k.tokens().issue_token(&request("dave", false), &Actor::cli()).await.expect("issued");
    assert_eq!(next.kid, replacement);
    assert!(!k.tokens().introspect(&issued.access_token).active);
    assert!(k.tokens().introspect(&next.access_token).active);
}

/// A fresh P-256 key: what signs with it, and its public JWK.
fn p256() -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pair");
    let point = pair.public_key().as_ref();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
    (jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

#[tokio::test]
async fn a_dpop_nonce_is_good_for_one_to_two_minutes_and_a_proof_without_one_spends_nothing() {
    let (k, clock, _dir) = service(&[("KEYTURN_USE_DPOP_NONCE", "true")]).await;
    let (signing, jwk) = p256();
    let url = k.tokens().token_endpoint();
    let proof = |jti: &str, nonce: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(jwk.clone()).expect("jwk"));
        let mut claims =
            serde_json::json!({"jti": jti, "htm": "POST", "htu": url, "iat": crate::clock::to_unix(clock.now())});
        if let Some(n) = nonce {
            claims["nonce"] = n.into();
        }
        jsonwebtoken::encode(&header, &claims, &signing).expect("sign")
    };
    let expected = crate::dpop::Expected { method: "POST", url: &url, access_token: None, key: None };
    let nonce = match k.tokens().accept_proof(&proof("p-1", None), &expected).await {
        Err(Error::UseDpopNonce { nonce }) => nonce,
        other => panic!("a nonce is asked for: {other:?}"),
    };
    assert_eq!(k.tokens().dpop_nonce().as_deref(), Some(nonce.as_str()));
    // The refused proof's jti was not spent.
    k.tokens().accept_proof(&proof("p-1", Some(&nonce)), &expected).await.expect("with the nonce");
    clock.advance(Duration::from_secs(60));
    k.tokens().accept_proof(&proof("p-2", Some(&nonce)), &expected).await.expect("a minute later");
    assert_ne!(k.tokens().dpop_nonce().as_deref(), Some(nonce.as_str()), "a new one is handed out");
    clock.advance(Duration::from_secs(60));
    let stale = k.tokens().accept_proof(&proof("p-3", Some(&nonce)), &expected).await;
    assert!(matches!(stale, Err(Error::UseDpopNonce { .. })), "two minutes later: {stale:?}");
}
