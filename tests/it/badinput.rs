//! Bad input, table-driven: each request gets the right 4xx (or `{"active": false}` from
//! introspection), a JSON error, and writes nothing.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::Api;
use crate::support::http;

/// Row counts of every table a request could write.
pub fn counts(api: &Api) -> Vec<(String, i64)> {
    let db = crate::support::database_of(api.server.service.config());
    let mut out: Vec<(String, i64)> = Vec::new();
    for t in [
        "issued_tokens",
        "revocations",
        "clients",
        "refresh_tokens",
        "audit_log",
        "signing_keys",
        "settings",
        "api_keys",
        "sessions",
        "seen_jtis",
    ] {
        out.push((
            t.to_string(),
            crate::support::scalar(&db, &format!("SELECT count(*) FROM {t}"), keyturn::store::args![]),
        ));
    }
    let ended = "SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL";
    out.push(("ended sessions".into(), crate::support::scalar(&db, ended, keyturn::store::args![])));
    out
}

/// One raw request.
struct Req {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    auth: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
}

fn json_req(name: &'static str, path: &'static str, auth: &str, body: Value, status: u16, error: &'static str) -> Req {
    Req {
        name,
        method: "POST",
        path,
        auth: Some(format!("Bearer {auth}")),
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status,
        error,
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_4xx_and_change_nothing() {
    // Many cases authenticate wrongly from one address: the failure limit (tested on its
    // own in forward.rs) is raised so each case gets the answer it is about.
    let api = Api::start(&[("KEYTURN_MAX_TOKEN_TTL", "30m"), ("KEYTURN_AUTH_FAILURE_LIMIT", "1000")]).await;
    let (client_id, secret) = api.client(&["read"], &["api"]).await;
    let basic = |id: &str, s: &str| format!("Basic {}", STANDARD.encode(format!("{id}:{s}")));
    let issuer = api.issuer.clone();
    let long = "x".repeat(10_000);
    let huge = "x".repeat(70 * 1024);
    // 5,000 audiences fit the 64 KiB body limit but sign into a ~90 KB token, which
    // introspection (and many gateways) would refuse: it must not be issued at all.
    let many_audiences: Vec<String> = (0..5_000).map(|i| format!("aud-{i:05}")).collect();
    let many: Vec<&str> = many_audiences.iter().map(String::as_str).collect();
    let (wide_id, wide_secret) = api.client(&["read"], &many).await;

    let mut cases = vec![
        Req {
            body: b"{\"sub\": ".to_vec(),
            ..json_req("malformed JSON", "/api/v1/tokens", &issuer, json!({}), 400, "invalid_request")
        },
        Req {
            content_type: Some("text/plain"),
            ..json_req(
                "wrong content type",
                "/api/v1/tokens",
                &issuer,
                json!({"sub": "a", "aud": "b"}),
                415,
                "unsupported_media_type",
            )
        },
        Req {
            content_type: None,
            ..json_req(
                "no content type",
                "/api/v1/tokens",
                &issuer,
                json!({"sub": "a", "aud": "b"}),
                415,
                "unsupported_media_type",
            )
        },
        json_req(
            "body over 64 KiB",
            "/api/v1/tokens",
            &issuer,
            json!({"sub": huge, "aud": "b"}),
            413,
            "request_too_large",
        ),
        Req {
            body: b"{\"sub\": \"\xff\xfe\", \"aud\": \"b\"}".to_vec(),
            ..json_req("non-UTF-8", "/api/v1/tokens", &issuer, json!({}), 400, "invalid_request")
        },
        json_req(
            "absurdly long subject",
            "/api/v1/tokens",
            &issuer,
            json!({"sub": long, "aud": "b"}),
            400,
            "invalid_request",
        ),
        json_req(
            "reserved claim override",
            "/api/v1/tokens",
            &issuer,
            json!({"sub": "a", "aud": "b", "claims": {"iss": "evil"}}),
            400,
            "invalid_request",
        ),
        json_req(
            "lifetime over the maximum",
            "/api/v1/tokens",
            &issuer,
            json!({"sub": "a", "aud": "b", "ttl": "31m"}),
            400,
            "invalid_request",
        ),
        json_req(
            "unknown field",
            "/api/v1/tokens",
            &issuer,
            json!({"sub": "a", "aud": "b", "admin": true}),
            422,
            "invalid_request",
        ),
        json_req("wrong type", "/api/v1/tokens", &issuer, json!({"sub": 5, "aud": "b"}), 422, "invalid_request"),
        json_req(
            "unknown algorithm",
            "/api/v1/tokens",
            &issuer,
            json!({"sub": "a", "aud": "b", "alg": "none"}),
            400,
            "invalid_request",
        ),
        json_req(
            "two revocation handles",
            "/api/v1/revocations",
            &api.admin,
            json!({"jti": "a", "sub": "b", "reason": "x"}),
            400,
            "invalid_request",
        ),
        json_req(
            "revocation of an unknown jti",
            "/api/v1/revocations",
            &api.admin,
            json!({"jti": "nope", "reason": "x"}),
            404,
            "not_found",
        ),
        json_req(
            "revocation without reason",
            "/api/v1/revocations",
            &api.admin,
            json!({"sub": "a", "reason": " "}),
            400,
            "invalid_request",
        ),
        json_req(
            "client without audience",
            "/api/v1/clients",
            &api.admin,
            json!({"name": "c", "audiences": []}),
            400,
            "invalid_request",
        ),
        Req {
            method: "PUT",
            ..json_req(
                "schedule with a bad cron",
                "/api/v1/schedule",
                &api.admin,
                json!({"cron": "* * *"}),
                400,
                "invalid_request",
            )
        },
        Req {
            auth: None,
            ..json_req("no API key", "/api/v1/tokens", &issuer, json!({"sub": "a", "aud": "b"}), 401, "unauthorized")
        },
        Req {
            auth: Some("Bearer kt_forged.secret".into()),
            ..json_req(
                "forged API key",
                "/api/v1/tokens",
                &issuer,
                json!({"sub": "a", "aud": "b"}),
                401,
                "unauthorized",
            )
        },
        json_req("wrong role", "/api/v1/tokens", &api.verifier, json!({"sub": "a", "aud": "b"}), 403, "forbidden"),
        json_req(
            "a token larger than introspection accepts",
            "/api/v1/tokens",
            &issuer,
            json!({"sub": "a", "aud": many_audiences}),
            400,
            "invalid_request",
        ),
        json_req(
            "rotation of an unconfigured algorithm",
            "/api/v1/keys/rotate",
            &api.admin,
            json!({"mode": "emergency", "alg": "RS256"}),
            400,
            "invalid_request",
        ),
    ];
    let form = |name: &'static str, auth: Option<String>, body: &str, status: u16, error: &'static str| Req {
        name,
        method: "POST",
        path: "/oauth/token",
        auth,
        content_type: Some("application/x-www-form-urlencoded"),
        body: body.as_bytes().to_vec(),
        status,
        error,
    };
    let good = Some(basic(&client_id, &secret));
    cases.extend([
        form(
            "unknown grant type",
            good.clone(),
            "grant_type=password&username=a&password=b",
            400,
            "unsupported_grant_type",
        ),
        form(
            "wrong client secret",
            Some(basic(&client_id, "nope")),
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        form(
            "repeated parameter",
            good.clone(),
            "grant_type=client_credentials&grant_type=client_credentials",
            400,
            "invalid_request",
        ),
        form(
            "percent-encoded non-UTF-8",
            good.clone(),
            "grant_type=client_credentials&scope=%ff",
            400,
            "invalid_request",
        ),
        form("scope not allowed", good.clone(), "grant_type=client_credentials&scope=write", 400, "invalid_scope"),
        form(
            "client whose audiences make a token too large",
            Some(basic(&wide_id, &wide_secret)),
            "grant_type=client_credentials",
            400,
            "invalid_request",
        ),
        form(
            "audience not allowed",
            good.clone(),
            "grant_type=client_credentials&audience=other",
            400,
            "invalid_target",
        ),
        form(
            "RFC 8707 resource not allowed",
            good.clone(),
            "grant_type=client_credentials&resource=https%3A%2F%2Fother.example%2F",
            400,
            "invalid_target",
        ),
        form(
            "audience and resource naming different targets",
            good.clone(),
            "grant_type=client_credentials&audience=api&resource=other",
            400,
            "invalid_request",
        ),
        form("unknown refresh token", None, "grant_type=refresh_token&refresh_token=ktr_forged", 400, "invalid_grant"),
        Req {
            content_type: Some("application/json"),
            ..form(
                "JSON to the token endpoint",
                good.clone(),
                "{\"grant_type\":\"client_credentials\"}",
                415,
                "invalid_request",
            )
        },
        form(
            "form over 64 KiB",
            good.clone(),
            &format!("grant_type=client_credentials&scope={huge}"),
            413,
            "invalid_request",
        ),
    ]);

    for case in cases {
        let before = counts(&api);
        let mut req = http().request(case.method.parse().expect("method"), api.url(case.path)).body(case.body.clone());
        if let Some(a) = &case.auth {
            req = req.header("Authorization", a);
        }
        if let Some(ct) = case.content_type {
            req = req.header("Content-Type", ct);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let content_type =
            res.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
        let text = res.text().await.expect("body");
        assert_eq!(status, case.status, "{}: {text}", case.name);
        assert!(content_type.starts_with("application/json"), "{}: a JSON error, got {content_type}", case.name);
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: not JSON: {text}", case.name));
        assert_eq!(body["error"], case.error, "{}: {text}", case.name);
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{}: says why", case.name);
        assert!(!text.contains(&secret), "{}: no secret in errors", case.name);
        assert_eq!(counts(&api), before, "{}: nothing written", case.name);
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_refuses_forged_expired_and_revoked_tokens() {
    let api = Api::start(&[]).await;
    let good = api.mint(json!({"sub": "alice", "aud": "api", "ttl": "2m"})).await;
    let token = good["access_token"].as_str().expect("token").to_owned();
    let kid = good["kid"].as_str().expect("kid").to_owned();
    let (header, payload, _) = {
        let mut p = token.split('.');
        (p.next().expect("h").to_owned(), p.next().expect("p").to_owned(), p.next().expect("s").to_owned())
    };
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&payload).expect("b64")).expect("claims");

    // A key of our own, unknown to keyturn, claiming a published kid and not.
    let foreign = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let foreign_key = jsonwebtoken::EncodingKey::from_ec_pem(foreign.serialize_pem().as_bytes()).expect("pem");
    let sign_with = |kid: &str, key: &jsonwebtoken::EncodingKey, alg: jsonwebtoken::Algorithm| {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid.to_owned());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&h, &claims, key).expect("sign")
    };
    let hmac = jsonwebtoken::EncodingKey::from_secret(kid.as_bytes());
    let none_header = b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid}));
    let crit_header = b64(&json!({"alg": "ES256", "typ": "at+jwt", "kid": kid, "crit": ["exp"]}));
    let jwt_typ = b64(&json!({"alg": "ES256", "typ": "JWT", "kid": kid}));
    let mut tampered_claims = claims.clone();
    tampered_claims["sub"] = json!("mallory");
    // Signed by keyturn's own active key, but not as keyturn issues tokens.
    let signer = api.server.service.published().signer(keyturn::keys::Algorithm::ES256).expect("signer").clone();
    let own_key = |claims: &Value| signer.sign("at+jwt", claims).expect("sign");
    let mut without_iss = claims.clone();
    without_iss.as_object_mut().expect("object").remove("iss");
    let mut other_iss = claims.clone();
    other_iss["iss"] = json!("https://elsewhere.example");
    let cases: Vec<(&str, String)> = vec![
        (
            "signed by an unknown key under a published kid",
            sign_with(&kid, &foreign_key, jsonwebtoken::Algorithm::ES256),
        ),
        ("signed by an unknown key and kid", sign_with("unknown-kid", &foreign_key, jsonwebtoken::Algorithm::ES256)),
        ("HMAC with the public kid as secret", sign_with(&kid, &hmac, jsonwebtoken::Algorithm::HS256)),
        ("alg none", format!("{none_header}.{payload}.")),
        ("unknown crit header", format!("{crit_header}.{payload}.{}", token.rsplit('.').next().expect("sig"))),
        ("typ JWT instead of at+jwt", format!("{jwt_typ}.{payload}.{}", token.rsplit('.').next().expect("sig"))),
        ("tampered claims", format!("{header}.{}.{}", b64(&tampered_claims), token.rsplit('.').next().expect("sig"))),
        ("keyturn's key, no iss", own_key(&without_iss)),
        ("keyturn's key, another iss", own_key(&other_iss)),
        ("garbage", "not.a.token".into()),
        ("empty", String::new()),
    ];
    for (name, forged) in cases {
        let answer = api.introspect(&forged).await;
        assert_eq!(answer, json!({"active": false}), "{name}");
    }
    assert_eq!(api.introspect(&token).await["active"], true, "the genuine token is active");

    // Expired: two minutes later.
    api.advance(Duration::from_secs(121)).await;
    assert_eq!(api.introspect(&token).await, json!({"active": false}), "expired");

    // Signed by a revoked key.
    let fresh = api.mint(json!({"sub": "bob", "aud": "api"})).await;
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/v1/keys/{}/revoke", fresh["kid"].as_str().expect("kid")),
            Some(&api.admin),
            Some(json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.introspect(fresh["access_token"].as_str().expect("t")).await,
        json!({"active": false}),
        "revoked key"
    );

    // Unauthenticated introspection is refused.
    let (status, _, body) = api.form("/oauth/introspect", None, &[("token", &token)]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    api.stop().await;
}
