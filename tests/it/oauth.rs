//! The token side: OAuth clients, `/oauth/token`, refresh-token rotation and reuse,
//! revocation by every handle, `/oauth/introspect`, `/oauth/revoke`, the revocation feed
//! and issued-token listing, over real HTTP with a fake clock.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use keyturn::service::apikeys::Role;
use keyturn::service::Actor;
use serde_json::{json, Value};

use crate::api::{verifies, Api};
use crate::support::http;

impl Api {
    /// POSTs a form, with optional Basic or Bearer credentials.
    pub async fn form(
        &self,
        path: &str,
        auth: Option<&str>,
        fields: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let mut req =
            http().post(self.url(path)).header("Content-Type", "application/x-www-form-urlencoded").body(body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let res = req.send().await.expect("request");
        let (status, headers) = (res.status().as_u16(), res.headers().clone());
        let text = res.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, headers, value)
    }

    /// Creates a client and returns (client_id, secret).
    pub async fn client(&self, scopes: &[&str], audiences: &[&str]) -> (String, String) {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/clients",
                Some(&self.admin),
                Some(json!({"name": "orders", "scopes": scopes, "audiences": audiences, "max_ttl": "10m"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (body["client_id"].as_str().expect("id").into(), body["client_secret"].as_str().expect("secret").into())
    }

    pub async fn introspect(&self, token: &str) -> Value {
        let (status, headers, body) =
            self.form("/oauth/introspect", Some(&format!("Bearer {}", self.verifier)), &[("token", token)]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        body
    }

    pub async fn mint(&self, body: Value) -> Value {
        let (status, out) = self.call("POST", "/api/v1/tokens", Some(&self.issuer), Some(body)).await;
        assert_eq!(status, 200, "{out}");
        out
    }
}

/// GETs JSON from `base` + `path` with an API key.
async fn get_with_key(base: &str, path: &str, key: &str) -> Value {
    http().get(format!("{base}{path}")).bearer_auth(key).send().await.expect("get").json().await.expect("json")
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_by_basic_and_post_and_rfc6749_errors() {
    let api = Api::start(&[]).await;
    let (id, secret) = api.client(&["orders:read", "orders:write"], &["orders-api"]).await;

    let (status, headers, body) = api
        .form(
            "/oauth/token",
            Some(&basic(&id, &secret)),
            &[("grant_type", "client_credentials"), ("scope", "orders:read")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600, "the client's max lifetime");
    assert_eq!(body["scope"], "orders:read");
    assert!(body.get("refresh_token").is_none(), "no refresh token for client_credentials");
    let token = body["access_token"].as_str().expect("token");
    assert!(verifies(token, &api.jwks().await));
    let claims = api.introspect(token).await;
    assert_eq!(claims["active"], true);
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["scope"], "orders:read");

    let (status, _, body) = api
        .form(
            "/oauth/token",
            None,
            &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)],
        )
        .await;
    assert_eq!(status, 200, "client_secret_post: {body}");
    assert_eq!(body["scope"], "orders:read orders:write", "all allowed scopes by default");

    type Case<'a> = (Option<String>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (Some(basic(&id, "wrong")), vec![("grant_type", "client_credentials")], 401, "invalid_client"),
        (Some(basic("kc_nobody", &secret)), vec![("grant_type", "client_credentials")], 401, "invalid_client"),
        (None, vec![("grant_type", "client_credentials")], 401, "invalid_client"),
        (Some(basic(&id, &secret)), vec![("grant_type", "password")], 400, "unsupported_grant_type"),
        (Some(basic(&id, &secret)), vec![], 400, "invalid_request"),
        (
            Some(basic(&id, &secret)),
            vec![("grant_type", "client_credentials"), ("scope", "admin")],
            400,
            "invalid_scope",
        ),
        (
            Some(basic(&id, &secret)),
            vec![("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)],
            400,
            "invalid_request",
        ),
        (
            Some(basic(&id, &secret)),
            vec![("grant_type", "refresh_token"), ("refresh_token", "ktr_nope")],
            400,
            "invalid_grant",
        ),
    ];
    for (auth, fields, status, error) in cases {
        let (got, headers, body) = api.form("/oauth/token", auth.as_deref(), &fields).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{fields:?}: {body}");
        if status == 401 {
            assert!(headers["www-authenticate"].to_str().expect("header").starts_with("Basic"), "{fields:?}");
        }
    }

    // A disabled client can no longer authenticate, and its tokens are revoked.
    let (status, _) = api.call("POST", &format!("/api/v1/clients/{id}/disable"), Some(&api.admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(api.introspect(token).await["active"], false);
    let (status, _, _) =
        api.form("/oauth/token", Some(&basic(&id, &secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 401);
    let (_, clients) = api.call("GET", "/api/v1/clients", Some(&api.admin), None).await;
    assert!(!clients.to_string().contains(&secret), "the secret is never shown again");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let api = Api::start(&[]).await;
    let first = api
        .mint(json!({"sub": "alice", "aud": "web", "refresh": true, "claims": {"tenant": "acme", "roles": ["a", "b"]}}))
        .await;
    let claims = api.introspect(first["access_token"].as_str().expect("token")).await;
    assert_eq!(claims["tenant"], "acme", "custom claims are carried");
    assert_eq!(claims["roles"], json!(["a", "b"]));
    let r1 = first["refresh_token"].as_str().expect("refresh").to_owned();
    assert!(r1.starts_with("ktr_") && r1.len() >= 4 + 43, "opaque, 256 bits");
    assert_eq!(api.introspect(&r1).await["active"], false, "a refresh token is not an access token");

    let (status, _, second) =
        api.form("/oauth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().expect("rotated").to_owned();
    assert_ne!(r1, r2);
    let access2 = second["access_token"].as_str().expect("token").to_owned();
    let claims2 = api.introspect(&access2).await;
    assert_eq!(
        (claims2["active"].clone(), claims2["sub"].clone(), claims2["tenant"].clone()),
        (json!(true), json!("alice"), json!("acme"))
    );

    // Presenting the spent r1 again once the retry grace has passed: refused, and the whole
    // family is revoked.
    api.advance(Duration::from_secs(11)).await;
    let (status, _, body) =
        api.form("/oauth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (_, audit) = api.call("GET", "/api/v1/audit", Some(&api.admin), None).await;
    let (_, feed) = api.call("GET", "/api/v1/revocations", Some(&api.admin), None).await;
    assert_eq!(api.introspect(&access2).await["active"], false, "tokens of the family are revoked: {audit} {feed}");
    let (status, _, _) =
        api.form("/oauth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", &r2)]).await;
    assert_eq!(status, 400, "the family's newest refresh token is revoked too");
    let (_, audit) = api.call("GET", "/api/v1/audit", Some(&api.admin), None).await;
    assert!(audit["entries"].as_array().expect("entries").iter().any(|e| e["action"] == "refresh.reuse"), "audited");

    // A refresh token of a revoked subject can no longer be used.
    let other = api.mint(json!({"sub": "bob", "aud": "web", "refresh": true})).await;
    let (status, _) = api
        .call("POST", "/api/v1/revocations", Some(&api.admin), Some(json!({"sub": "bob", "reason": "account closed"})))
        .await;
    assert_eq!(status, 201);
    let (status, _, body) = api
        .form(
            "/oauth/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", other["refresh_token"].as_str().expect("r"))],
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));

    // Reserved claims cannot be overridden.
    for reserved in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"] {
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/tokens",
                Some(&api.issuer),
                Some(json!({"sub": "a", "aud": "b", "claims": {reserved: "x"}})),
            )
            .await;
        assert_eq!(status, 400, "{reserved}: {body}");
        assert!(body["error_description"].as_str().expect("desc").contains(reserved));
    }
    api.stop().await;
}

/// Flips an ES256 signature's `s` to `n - s`: a different, equally valid signature.
fn malleate_es256(token: &str) -> String {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
        0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
    ];
    let (signing_input, sig) = token.rsplit_once('.').expect("jws");
    let mut sig = URL_SAFE_NO_PAD.decode(sig).expect("sig");
    let s = sig[32..].to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = N[i] as i16 - s[i] as i16 - borrow;
        borrow = i16::from(d < 0);
        sig[32 + i] = (d + if d < 0 { 256 } else { 0 }) as u8;
    }
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_by_every_handle_really_blocks() {
    let api = Api::start(&[]).await;
    let (id, secret) = api.client(&[], &["api"]).await;
    let mint = |sub: &'static str| api.mint(json!({"sub": sub, "aud": "api"}));
    let by_jti = mint("u1").await;
    let by_sub = [mint("u2").await, mint("u2").await];
    let by_kid = mint("u3").await;
    let (_, _, by_client) =
        api.form("/oauth/token", Some(&basic(&id, &secret)), &[("grant_type", "client_credentials")]).await;
    let tok = |v: &Value| v["access_token"].as_str().expect("token").to_owned();
    for t in [&by_jti, &by_sub[0], &by_sub[1], &by_kid, &by_client] {
        assert_eq!(api.introspect(&tok(t)).await["active"], true);
    }
    // A signature-malleated copy verifies while the original is valid...
    let malleated = malleate_es256(&tok(&by_jti));
    assert_ne!(malleated, tok(&by_jti));
    assert_eq!(api.introspect(&malleated).await["active"], true, "ECDSA signatures are malleable");

    for body in [
        json!({"jti": by_jti["jti"], "reason": "leaked"}),
        json!({"sub": "u2", "reason": "account compromised"}),
        json!({"client_id": id, "reason": "client compromised"}),
    ] {
        let (status, out) = api.call("POST", "/api/v1/revocations", Some(&api.admin), Some(body.clone())).await;
        assert_eq!(status, 201, "{body}: {out}");
    }
    for t in [&by_jti, &by_sub[0], &by_sub[1], &by_client] {
        assert_eq!(api.introspect(&tok(t)).await["active"], false, "{}", t["jti"]);
    }
    assert_eq!(
        api.introspect(&malleated).await["active"],
        false,
        "revocation is by jti, so the malleated copy is revoked too"
    );
    assert_eq!(api.introspect(&tok(&by_kid)).await["active"], true, "other tokens are untouched");
    // Instants are whole seconds: a token issued in the same second as the revocation is
    // covered too (the safe side); one issued a second later is not.
    api.advance(Duration::from_secs(1)).await;
    let later = mint("u2").await;
    assert_eq!(
        api.introspect(&tok(&later)).await["active"],
        true,
        "a subject revocation covers tokens issued until then"
    );

    // Revoking the key by the revocation API: everything it signed is inactive.
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/revocations",
            Some(&api.admin),
            Some(json!({"kid": by_kid["kid"], "reason": "key suspected"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(api.introspect(&tok(&by_kid)).await["active"], false);

    // Revoking a client's tokens does not disable the client: tokens it obtains afterwards
    // are active.
    let (status, _, own) =
        api.form("/oauth/token", Some(&basic(&id, &secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(api.introspect(&tok(&own)).await["active"], true);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_revoke_and_retired_keys() {
    let api = Api::start(&[]).await;
    let (id, secret) = api.client(&[], &["api"]).await;
    let (_, _, t) = api.form("/oauth/token", Some(&basic(&id, &secret)), &[("grant_type", "client_credentials")]).await;
    let token = t["access_token"].as_str().expect("token").to_owned();
    let (status, _, _) = api.form("/oauth/revoke", Some(&basic(&id, &secret)), &[("token", "not-a-token")]).await;
    assert_eq!(status, 200, "unknown tokens are acknowledged (RFC 7009 §2.2)");
    let (status, _, _) = api.form("/oauth/revoke", None, &[("token", &token)]).await;
    assert_eq!(status, 401, "client authentication is required");
    assert_eq!(api.introspect(&token).await["active"], true);
    let (status, _, _) = api
        .form("/oauth/revoke", Some(&basic(&id, &secret)), &[("token", &token), ("token_type_hint", "access_token")])
        .await;
    assert_eq!(status, 200);
    assert_eq!(api.introspect(&token).await["active"], false);

    // A token signed by a retired but still published key is active.
    let old = api.mint(json!({"sub": "carol", "aud": "api", "ttl": "1h"})).await;
    let (status, _) =
        api.call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(json!({"mode": "emergency"}))).await;
    assert_eq!(status, 200);
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    assert!(keys["keys"].as_array().expect("keys").iter().any(|k| k["kid"] == old["kid"] && k["state"] == "retired"));
    assert_eq!(api.introspect(old["access_token"].as_str().expect("t")).await["active"], true);
    // ...until it expires.
    api.advance(Duration::from_secs(3601)).await;
    assert_eq!(api.introspect(old["access_token"].as_str().expect("t")).await["active"], false);

    // Clients may introspect too; verifiers are refused elsewhere.
    let fresh = api.mint(json!({"sub": "dan", "aud": "api"})).await;
    let (status, _, body) = api
        .form("/oauth/introspect", Some(&basic(&id, &secret)), &[("token", fresh["access_token"].as_str().expect("t"))])
        .await;
    assert_eq!((status, body["active"].clone()), (200, json!(true)));
    let (status, _, _) =
        api.form("/oauth/introspect", Some(&format!("Bearer {}", api.issuer)), &[("token", "x")]).await;
    assert_eq!(status, 403, "an issuer key may not introspect");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_feed_cursor_etag_and_pruning() {
    let api = Api::start(&[("KEYTURN_LEEWAY", "1m")]).await;
    let feed = |since: i64, inm: Option<String>| {
        let mut req = http().get(api.url(&format!("/api/v1/revocations?since={since}"))).bearer_auth(&api.verifier);
        if let Some(tag) = inm {
            req = req.header("If-None-Match", tag);
        }
        req.send()
    };
    let empty = feed(0, None).await.expect("feed");
    assert_eq!(empty.status(), 200);
    let etag0 = empty.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(empty.headers()["cache-control"].to_str().expect("cc").contains("max-age=5"));
    let body: Value = empty.json().await.expect("json");
    assert_eq!(body, json!({"revocations": [], "next": 0}));

    let a = api.mint(json!({"sub": "x", "aud": "api", "ttl": "5m"})).await;
    let (_, _) = api
        .call("POST", "/api/v1/revocations", Some(&api.admin), Some(json!({"jti": a["jti"], "reason": "test"})))
        .await;
    let (_, _) =
        api.call("POST", "/api/v1/revocations", Some(&api.admin), Some(json!({"sub": "y", "reason": "test"}))).await;
    let res = feed(0, Some(etag0.clone())).await.expect("feed");
    assert_eq!(res.status(), 200, "the feed changed");
    let etag1 = res.headers()["etag"].to_str().expect("etag").to_owned();
    let body: Value = res.json().await.expect("json");
    let entries = body["revocations"].as_array().expect("entries");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["type"], "jti");
    assert_eq!(entries[0]["value"], a["jti"]);
    assert_eq!(entries[1]["type"], "sub");
    assert!(entries[1]["issued_before"].is_string());
    let next = body["next"].as_i64().expect("cursor");
    assert_eq!(feed(0, Some(etag1.clone())).await.expect("feed").status(), 304, "unchanged: 304");
    let delta: Value = feed(next, None).await.expect("feed").json().await.expect("json");
    assert_eq!(delta["revocations"], json!([]), "nothing after the cursor");
    assert_eq!(delta["next"], next);
    let (status, _) = api.call("GET", "/api/v1/revocations", Some(&api.issuer), None).await;
    assert_eq!(status, 403, "the feed is for verifiers");

    // Entries are pruned once every token they cover has expired (plus leeway): the jti
    // entry after 5 minutes, the subject entry after the maximum lifetime.
    api.advance(Duration::from_secs(7 * 60)).await;
    let body: Value = feed(0, None).await.expect("feed").json().await.expect("json");
    let kinds: Vec<&str> =
        body["revocations"].as_array().expect("e").iter().map(|e| e["type"].as_str().expect("t")).collect();
    assert_eq!(kinds, vec!["sub"]);
    api.advance(Duration::from_secs(2 * 3600)).await;
    let body: Value = feed(0, None).await.expect("feed").json().await.expect("json");
    assert_eq!(body["revocations"], json!([]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_survive_a_restart_and_tokens_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = crate::support::fake_clock();
    let server = crate::support::start(dir.path(), &[], clock.clone()).await;
    let (_, key) = server.service.clients().create_api_key(Role::Admin, "ops", &Actor::cli()).await.expect("key");
    let issue = async |sub: &str| {
        server
            .service
            .tokens()
            .issue_token(
                &keyturn::service::tokens::IssueRequest {
                    sub: sub.into(),
                    aud: vec!["api".into()],
                    ..Default::default()
                },
                &Actor::system(),
            )
            .await
    };
    let t1 = issue("alice").await.expect("t1");
    let t2 = issue("bob").await.expect("t2");
    server
        .service
        .revocations()
        .revoke(&keyturn::service::revocations::RevokeTarget::Jti(t1.jti.clone()), "test", &Actor::cli())
        .await
        .expect("revoke");
    server.stop().await.expect("stop");

    let server = crate::support::start(dir.path(), &[], clock).await;
    assert!(!server.service.tokens().introspect(&t1.access_token).active, "the index is loaded at start-up");
    assert!(server.service.tokens().introspect(&t2.access_token).active);
    let list: Value = get_with_key(&server.url(), "/api/v1/tokens?sub=alice", key.as_str()).await;
    let tokens = list["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["jti"], t1.jti.as_str());
    assert_eq!(tokens[0]["revoked"], true);
    assert!(!list.to_string().contains(&t1.access_token), "records, never token strings");
    let page: Value = get_with_key(&server.url(), "/api/v1/tokens?limit=1", key.as_str()).await;
    assert_eq!(page["tokens"].as_array().expect("t").len(), 1);
    let next = page["next"].as_i64().expect("a next page");
    let page2: Value =
        get_with_key(&server.url(), &format!("/api/v1/tokens?limit=1&before={next}"), key.as_str()).await;
    assert_ne!(page2["tokens"][0]["jti"], page["tokens"][0]["jti"]);
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_an_issuer_key_ends_what_it_minted_refresh_tokens_included() {
    let api = Api::start(&[]).await;
    let svc = api.server.service.clone();
    let (id, key) = tokio::spawn(async move {
        let (identity, secret) =
            svc.clients().create_api_key(Role::Issuer, "minter", &Actor::cli()).await.expect("key");
        (identity.id, secret.to_string())
    })
    .await
    .expect("join");
    let (status, minted) = api
        .call("POST", "/api/v1/tokens", Some(&key), Some(json!({"sub": "alice", "aud": "api", "refresh": true})))
        .await;
    assert_eq!(status, 200, "{minted}");
    let refresh = minted["refresh_token"].as_str().expect("refresh").to_owned();
    let access = minted["access_token"].as_str().expect("access").to_owned();
    // Another issuer's tokens are not touched.
    let other = api.mint(json!({"sub": "bob", "aud": "api", "refresh": true})).await;

    let svc = api.server.service.clone();
    tokio::spawn(async move { svc.clients().revoke_api_key(&id, &Actor::cli()).await })
        .await
        .expect("join")
        .expect("revoke");

    let (status, _, body) =
        api.form("/oauth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "its refresh token ends: {body}");
    assert_eq!(api.introspect(&access).await["active"], false, "its access token ends");
    assert_eq!(api.introspect(other["access_token"].as_str().expect("t")).await["active"], true);
    let (status, _, _) = api
        .form(
            "/oauth/token",
            None,
            &[("grant_type", "refresh_token"), ("refresh_token", other["refresh_token"].as_str().expect("r"))],
        )
        .await;
    assert_eq!(status, 200, "another key's refresh token still works");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_refresh_gets_the_same_successor_and_reuse_after_the_grace_revokes() {
    let api = Api::start(&[]).await;
    let first = api.mint(json!({"sub": "alice", "aud": "web", "refresh": true})).await;
    let r1 = first["refresh_token"].as_str().expect("refresh").to_owned();

    // A client retrying one refresh 20 times at once (its first answer lost in the network).
    let mut tries = Vec::new();
    for _ in 0..20 {
        let (api_url, r1) = (api.url("/oauth/token"), r1.clone());
        tries.push(tokio::spawn(async move {
            let res = http()
                .post(api_url)
                .form(&[("grant_type", "refresh_token"), ("refresh_token", r1.as_str())])
                .send()
                .await
                .expect("refresh");
            (res.status().as_u16(), res.json::<Value>().await.expect("json"))
        }));
    }
    let mut successors = std::collections::BTreeSet::new();
    let mut access = Vec::new();
    for t in tries {
        let (status, body) = t.await.expect("join");
        assert_eq!(status, 200, "every retry is answered: {body}");
        successors.insert(body["refresh_token"].as_str().expect("refresh").to_owned());
        access.push(body["access_token"].as_str().expect("access").to_owned());
    }
    assert_eq!(successors.len(), 1, "every retry got the same new refresh token");
    let r2 = successors.into_iter().next().expect("one");
    for a in &access {
        assert_eq!(api.introspect(a).await["active"], true, "no retry revoked the family");
    }

    // The successor works; once it is spent, a replay of r1 is reuse even within the grace.
    let (status, _, third) =
        api.form("/oauth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", &r2)]).await;
    assert_eq!(status, 200, "{third}");
    let (status, _, body) =
        api.form("/oauth/token", None, &[("grant_type", "refresh_token"), ("refresh_token", &r1)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(api.introspect(third["access_token"].as_str().expect("t")).await["active"], false, "family revoked");
    api.stop().await;
}
