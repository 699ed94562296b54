//! Tokens reach only whom they are for: forward auth (`/auth/verify`), introspection scoped
//! to the asking client, refresh tokens bound to their party, RFC 8707 targets, and throttled
//! guessing — over real HTTP against a server whose clock the test moves.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::Api;
use crate::gateways::{tampered, unsigned};
use crate::support::{self, http};

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// One forward-auth request: (status, headers).
async fn verify(api: &Api, method: &str, path: &str, auth: Option<&str>) -> (u16, reqwest::header::HeaderMap) {
    let mut req = http().request(method.parse().expect("method"), api.url(path));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.headers().clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_answers_from_memory_with_the_identity_in_headers() {
    let api = Api::start(&[]).await;
    let issued =
        api.mint(json!({"sub": "alice", "aud": ["orders-api", "audit"], "scope": "read write", "ttl": "10m"})).await;
    let token = issued["access_token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {token}");

    // Any method, any path below /auth/verify (Envoy appends the original path).
    for (method, path) in [
        ("GET", "/auth/verify"),
        ("POST", "/auth/verify"),
        ("PUT", "/auth/verify/orders/42"),
        ("DELETE", "/auth/verify/a/b/c?x=1"),
        ("PATCH", "/auth/verify/"),
        ("HEAD", "/auth/verify"),
        ("OPTIONS", "/auth/verify/orders"),
    ] {
        let (status, headers) = verify(&api, method, path, Some(&bearer)).await;
        assert_eq!(status, 200, "{method} {path}");
        assert_eq!(headers["cache-control"], "no-store", "{method} {path}: no gateway caches the answer");
    }
    let (_, h) = verify(&api, "GET", "/auth/verify", Some(&bearer)).await;
    assert_eq!(h["x-auth-subject"], "alice");
    assert_eq!(h["x-auth-audience"], "orders-api audit");
    assert_eq!(h["x-auth-scope"], "read write");
    assert_eq!(h["x-auth-token-id"], issued["jti"].as_str().expect("jti"));
    assert_eq!(h["x-auth-client-id"], "apikey:backend");
    let exp: i64 = h["x-auth-expires"].to_str().expect("exp").parse().expect("number");
    assert_eq!(exp, keyturn::clock::to_unix(api.server.service.now()) + 600);
    // The scheme is case-insensitive (RFC 9110).
    assert_eq!(verify(&api, "GET", "/auth/verify", Some(&format!("bearer {token}"))).await.0, 200);

    // Requirements from the query: any one audience, every scope.
    for (query, want) in [
        ("?aud=orders-api", 200),
        ("?aud=billing,audit", 200),
        ("?aud=billing", 403),
        ("?scope=read", 200),
        ("?scope=read%20write", 200),
        ("?scope=read&scope=write&aud=orders-api", 200),
        ("?scope=admin", 403),
        ("?aud=orders-api&scope=read,admin", 403),
    ] {
        let (status, headers) = verify(&api, "GET", &format!("/auth/verify{query}"), Some(&bearer)).await;
        assert_eq!(status, want, "{query}");
        if want == 403 {
            let challenge = headers["www-authenticate"].to_str().expect("challenge");
            assert!(challenge.starts_with("Bearer error=\"insufficient_scope\""), "{query}: {challenge}");
            assert!(headers.get("x-auth-subject").is_none(), "{query}: no identity on a refusal");
        }
    }

    // Everything else is 401 invalid_token.
    let other = Api::start(&[("KEYTURN_ISSUER", "https://elsewhere.example")]).await;
    let foreign = other.mint(json!({"sub": "alice", "aud": "orders-api"})).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for (what, auth) in [
        ("missing", None),
        ("not bearer", Some(basic("a", "b"))),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("garbage", Some("Bearer abc".to_owned())),
        ("tampered", Some(format!("Bearer {}", tampered(&token)))),
        ("alg none", Some(format!("Bearer {}", unsigned(&token)))),
        ("another issuer's token", Some(format!("Bearer {foreign}"))),
        ("an API key", Some(format!("Bearer {}", api.admin))),
    ] {
        let (status, headers) = verify(&api, "GET", "/auth/verify", auth.as_deref()).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(headers["www-authenticate"], "Bearer error=\"invalid_token\"", "{what}");
        assert_eq!(headers["cache-control"], "no-store", "{what}");
    }
    other.stop().await;

    // Revoked: refused on the next request; expired: refused once the clock passes exp.
    let second = api.mint(json!({"sub": "bob", "aud": "orders-api", "ttl": "2m"})).await;
    let second_bearer = format!("Bearer {}", second["access_token"].as_str().expect("token"));
    let (status, h) = verify(&api, "GET", "/auth/verify", Some(&second_bearer)).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-auth-scope"], "", "sent empty, so a gateway replaces a scope the client forged");
    let (status, _) = api
        .call("POST", "/api/v1/revocations", Some(&api.admin), Some(json!({"jti": issued["jti"], "reason": "test"})))
        .await;
    assert_eq!(status, 201);
    assert_eq!(verify(&api, "GET", "/auth/verify", Some(&bearer)).await.0, 401, "revoked");
    api.advance(Duration::from_secs(121)).await;
    assert_eq!(verify(&api, "GET", "/auth/verify", Some(&second_bearer)).await.0, 401, "expired");

    // A signature verified once is remembered, but never the verdict: revoking the key of a
    // token just answered 200 refuses it on the next request.
    let third = api.mint(json!({"sub": "carol", "aud": "orders-api", "ttl": "10m"})).await;
    let third_bearer = format!("Bearer {}", third["access_token"].as_str().expect("token"));
    for _ in 0..2 {
        assert_eq!(verify(&api, "GET", "/auth/verify", Some(&third_bearer)).await.0, 200);
    }
    let kid = third["kid"].as_str().expect("kid");
    let (status, body) = api
        .call("POST", &format!("/api/v1/keys/{kid}/revoke"), Some(&api.admin), Some(json!({"reason": "test"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(verify(&api, "GET", "/auth/verify", Some(&third_bearer)).await.0, 401, "its key was revoked");
    assert_eq!(api.introspect(third["access_token"].as_str().expect("token")).await["active"], false);

    let metrics = http().get(api.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for line in
        ["keyturn_forward_auth_total{result=\"allowed\"}", "keyturn_forward_auth_total{result=\"invalid_token\"}"]
    {
        assert!(metrics.contains(line), "{line} in /metrics");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_introspects_only_its_own_tokens_and_those_for_its_audiences() {
    let api = Api::start(&[]).await;
    let (orders, orders_secret) = api.client(&["read"], &["orders-api"]).await;
    let (billing, billing_secret) = api.client(&["read"], &["billing-api"]).await;
    let token_of = |body: &Value| body["access_token"].as_str().expect("token").to_owned();
    let (_, _, own) =
        api.form("/oauth/token", Some(&basic(&orders, &orders_secret)), &[("grant_type", "client_credentials")]).await;
    let own = token_of(&own);
    let (_, _, theirs) = api
        .form("/oauth/token", Some(&basic(&billing, &billing_secret)), &[("grant_type", "client_credentials")])
        .await;
    let theirs = token_of(&theirs);
    let for_orders = token_of(&api.mint(json!({"sub": "alice", "aud": ["orders-api", "x"]})).await);
    let for_nobody = token_of(&api.mint(json!({"sub": "alice", "aud": "x"})).await);

    let ask = |token: String| {
        let auth = basic(&orders, &orders_secret);
        let api = &api;
        async move { api.form("/oauth/introspect", Some(&auth), &[("token", &token)]).await.2 }
    };
    assert_eq!(ask(own.clone()).await["active"], true, "its own token");
    assert_eq!(ask(for_orders.clone()).await["active"], true, "a token addressed to its audience");
    let refused = ask(theirs.clone()).await;
    assert_eq!(refused, json!({"active": false}), "another client's token, and nothing of its claims");
    assert_eq!(ask(for_nobody.clone()).await, json!({"active": false}));
    // A verifier key sees all.
    for t in [&own, &theirs, &for_orders, &for_nobody] {
        assert_eq!(api.introspect(t).await["active"], true);
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_are_redeemed_only_by_their_party_and_a_refusal_changes_nothing() {
    let api = Api::start(&[]).await;
    let (a, a_secret) = api.client(&["read"], &["api"]).await;
    let (b, b_secret) = api.client(&["read"], &["api"]).await;
    let minted = api.mint(json!({"sub": "alice", "aud": "api", "refresh": true})).await;
    let minted_refresh = minted["refresh_token"].as_str().expect("refresh").to_owned();
    let refresh = |auth: Option<String>, token: String| {
        let api = &api;
        async move {
            let (status, _, body) = api
                .form("/oauth/token", auth.as_deref(), &[("grant_type", "refresh_token"), ("refresh_token", &token)])
                .await;
            (status, body)
        }
    };
    let db = support::database_of(api.server.service.config());
    let spent = || support::scalar(&db, "SELECT COUNT(*) FROM refresh_tokens WHERE used_at IS NOT NULL", &[]);

    // Minted through the Admin API: no client's credentials redeem it, only none.
    for (who, auth) in [("client a", basic(&a, &a_secret)), ("client b", basic(&b, &b_secret))] {
        let (status, body) = refresh(Some(auth), minted_refresh.clone()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{who}: {body}");
    }
    assert_eq!(spent(), 0, "refusals spend nothing");
    let (status, body) = refresh(None, minted_refresh.clone()).await;
    assert_eq!(status, 200, "without client authentication, as the README documents: {body}");
    let next = body["refresh_token"].as_str().expect("successor").to_owned();
    assert_eq!(spent(), 1);

    // A refresh token issued to client a (no HTTP route issues one to a client today:
    // client_credentials gets none, so it is issued in process): only client a redeems it.
    let client_refresh = {
        let family = api.server.service.clone();
        let client =
            family.clients().authenticate_client(&a, &a_secret).await.expect("auth").expect("client a authenticates");
        let issued = family
            .tokens()
            .issue_token(
                &keyturn::service::tokens::IssueRequest {
                    sub: client.client_id.clone(),
                    aud: vec!["api".into()],
                    client_id: Some(client.client_id.clone()),
                    refresh: true,
                    ..Default::default()
                },
                &keyturn::service::Actor::cli(),
            )
            .await
            .expect("issue");
        issued.refresh_token.expect("refresh token").to_string()
    };
    for (who, auth) in [("no authentication", None), ("client b", Some(basic(&b, &b_secret)))] {
        let (status, body) = refresh(auth, client_refresh.clone()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{who}: {body}");
    }
    assert_eq!(spent(), 1, "refusals spend nothing");
    let (status, body) = refresh(Some(basic(&a, &a_secret)), client_refresh).await;
    assert_eq!(status, 200, "its own client: {body}");
    assert_eq!(spent(), 2);
    // And the Admin API's successor goes on without client authentication.
    assert_eq!(refresh(None, next).await.0, 200);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_authentications_are_throttled_per_address_and_never_lock_out_the_client() {
    let api = Api::start(&[("KEYTURN_AUTH_FAILURE_LIMIT", "3"), ("KEYTURN_AUTH_FAILURE_WINDOW", "1m")]).await;
    let (id, secret) = api.client(&["read"], &["api"]).await;
    let port = api.server.url().rsplit(':').next().expect("port").to_owned();
    let from = |last: u8| {
        reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, last])).build().expect("client")
    };
    let token_url = format!("http://127.0.0.1:{port}/oauth/token");
    let post = |c: reqwest::Client, auth: String| {
        let url = token_url.clone();
        async move {
            let res = c
                .post(url)
                .header("Authorization", auth)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials")
                .send()
                .await
                .expect("post");
            let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
            let status = res.status().as_u16();
            (status, retry, res.json::<Value>().await.expect("json"))
        }
    };
    let attacker = from(2);
    for _ in 0..3 {
        assert_eq!(post(attacker.clone(), basic(&id, "guess")).await.0, 401, "within the burst");
    }
    let (status, retry, body) = post(attacker.clone(), basic(&id, "guess")).await;
    assert_eq!(status, 429, "over the limit: {body}");
    assert_eq!(retry.as_deref(), Some("20"), "60 s / 3 until one more failure is allowed");
    assert_eq!(body["error"], "too_many_requests");
    assert!(!body.to_string().contains(&secret));
    let (status, _, _) = post(attacker.clone(), basic(&id, &secret)).await;
    assert_eq!(status, 429, "the throttled address is refused before its secret is looked at");
    // The client itself, from its own address, with its right secret: not slowed at all.
    let (status, _, body) = post(from(3), basic(&id, &secret)).await;
    assert_eq!(status, 200, "the same client id from another address: {body}");

    // API keys count too, on every route that takes one.
    let key_user = from(4);
    for want in [401, 401, 401, 429] {
        let res = key_user.get(format!("http://127.0.0.1:{port}/api/v1/keys")).bearer_auth("kt_nope.nope").send().await;
        assert_eq!(res.expect("get").status(), want);
    }
    let res =
        key_user.get(format!("http://127.0.0.1:{port}/api/v1/keys")).bearer_auth(&api.admin).send().await.expect("get");
    assert_eq!(res.status(), 429, "then even a good key is refused");
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "too_many_requests");
    let res = from(5).get(format!("http://127.0.0.1:{port}/api/v1/keys")).bearer_auth(&api.admin).send().await;
    assert_eq!(res.expect("get").status(), 200, "the admin key from elsewhere");

    // Time moves on: the address may try again.
    api.server.service.clock().advance(Duration::from_secs(20));
    assert_eq!(post(attacker.clone(), basic(&id, &secret)).await.0, 200, "after Retry-After");
    let metrics = http().get(api.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for line in
        ["keyturn_auth_throttled_total{credential=\"client\"}", "keyturn_auth_throttled_total{credential=\"api_key\"}"]
    {
        assert!(metrics.contains(line), "{line} in /metrics");
    }
    api.stop().await;
}
