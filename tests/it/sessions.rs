//! A web app's users as sessions: the app checks passwords and mints with its issuer key
//! and `"refresh": true`; the refresh family is the session (`sid`), which keeps what was
//! first asked, ends at its absolute and idle ends, and which the app ends with its own key
//! (RFC 7009 or the sessions API) so that every verifier refuses its tokens at once.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use keyturn::service::apikeys::Role;
use keyturn::service::Actor;

use crate::api::Api;
use crate::support::http;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("claims")
}

/// Signs a user in as the app does: a token and a refresh token with its issuer key.
async fn sign_in(api: &Api, key: &str, sub: &str, label: &str) -> Value {
    let body = json!({"sub": sub, "aud": "webapp-api", "ttl": "1m", "refresh": true, "session_label": label,
                      "scope": "profile", "claims": {"tenant": "acme"}});
    let (status, minted) = api.call("POST", "/api/v1/tokens", Some(key), Some(body)).await;
    assert_eq!(status, 200, "{minted}");
    minted
}

/// Redeems a refresh token as the app's server does (a token minted through the Admin API
/// belongs to no client: no client authentication).
async fn refresh(api: &Api, refresh_token: &str) -> (u16, Value) {
    let res = http()
        .post(api.url("/oauth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
        .send()
        .await
        .expect("refresh");
    (res.status().as_u16(), res.json().await.expect("json"))
}

async fn verify(api: &Api, token: &str) -> u16 {
    http().get(api.url("/auth/verify")).bearer_auth(token).send().await.expect("verify").status().as_u16()
}

/// RFC 7009 with the app's issuer key.
async fn revoke(api: &Api, key: &str, token: &str) -> u16 {
    let res =
        http().post(api.url("/oauth/revoke")).bearer_auth(key).form(&[("token", token)]).send().await.expect("revoke");
    res.status().as_u16()
}

async fn other_issuer(api: &Api) -> String {
    let s = api.server.service.clone();
    tokio::spawn(
        async move { s.clients().create_api_key(Role::Issuer, "other-app", &Actor::cli()).await.expect("key").1 },
    )
    .await
    .expect("join")
    .to_string()
}

/// The reported case: a refreshed token lived 15 minutes whatever the first asked (1m), and
/// nothing tied a user's tokens together. Now the mint answer names the session, every
/// access token of it carries `sid`, and a refresh keeps the audience, scope, claims and
/// lifetime first asked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_token_starts_a_session_that_keeps_what_was_first_asked() {
    let api = Api::start(&[]).await;
    let first = sign_in(&api, &api.issuer, "alice", "Firefox on a laptop").await;
    let sid = first["session_id"].as_str().expect("session_id").to_owned();
    assert_eq!(first["expires_in"], 60);
    assert_eq!(claims(first["access_token"].as_str().expect("token"))["sid"], sid.as_str());

    api.advance(Duration::from_secs(50)).await;
    let (status, next) = refresh(&api, first["refresh_token"].as_str().expect("refresh token")).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["expires_in"], 60, "the lifetime first asked for, not the default 15 minutes");
    assert_eq!(next["session_id"], sid.as_str());
    let c = claims(next["access_token"].as_str().expect("token"));
    assert_eq!(
        (&c["sid"], &c["aud"], &c["scope"], &c["tenant"]),
        (&json!(sid), &json!("webapp-api"), &json!("profile"), &json!("acme"))
    );
    assert_ne!(next["refresh_token"], first["refresh_token"], "rotated");

    let (status, listed) = api.call("GET", "/api/v1/sessions?sub=alice", Some(&api.issuer), None).await;
    assert_eq!(status, 200, "{listed}");
    let s = &listed["sessions"][0];
    assert_eq!(s["session_id"], sid.as_str());
    assert_eq!(s["label"], "Firefox on a laptop");
    assert_eq!(s["minted_by"], "apikey:backend");
    assert_eq!(s["active"], true);
    assert_ne!(s["started_at"], s["last_refreshed_at"], "the refresh is recorded");

    // The label is bounded, and names a session only when one is asked for.
    let long = "x".repeat(201);
    for (body, says) in [
        (json!({"sub": "a", "aud": "x", "refresh": true, "session_label": long}), "session_label must be at most 200"),
        (json!({"sub": "a", "aud": "x", "session_label": "phone"}), "refresh"),
        (json!({"sub": "a", "aud": "x", "refresh": true, "claims": {"sid": "mine"}}), "reserved claims: sid"),
    ] {
        let (status, err) = api.call("POST", "/api/v1/tokens", Some(&api.issuer), Some(body)).await;
        assert_eq!(status, 400, "{err}");
        assert!(err["error_description"].as_str().unwrap_or("").contains(says), "{err}");
    }
    api.stop().await;
}

/// The reported case: logout was impossible with the app's own key (`/oauth/revoke`: 401,
/// `/api/v1/revocations`: 403), and revoking the access token's jti left its refresh token
/// redeemable. Now the app's key ends the session of any token it minted, at once
/// everywhere; another app's key can neither see nor end it.
#[tokio::test(flavor = "multi_thread")]
async fn the_app_ends_what_it_minted_with_its_own_key_and_no_one_elses() {
    let api = Api::start(&[]).await;
    let other = other_issuer(&api).await;
    let laptop = sign_in(&api, &api.issuer, "alice", "laptop").await;
    let (access, refresh_token) = (
        laptop["access_token"].as_str().expect("at").to_owned(),
        laptop["refresh_token"].as_str().expect("rt").to_owned(),
    );
    let sid = laptop["session_id"].as_str().expect("sid").to_owned();
    let (_, feed) = api.call("GET", "/api/v1/revocations", Some(&api.verifier), None).await;
    let cursor = feed["next"].as_i64().expect("cursor");

    // Another app: sees nothing, ends nothing, is answered as RFC 7009 answers.
    let (status, listed) = api.call("GET", "/api/v1/sessions?sub=alice", Some(&other), None).await;
    assert_eq!((status, listed["sessions"].as_array().map(Vec::len)), (200, Some(0)));
    assert_eq!(revoke(&api, &other, &access).await, 200);
    assert_eq!(revoke(&api, &other, &refresh_token).await, 200);
    let (status, _) = api.call("POST", &format!("/api/v1/sessions/{sid}/end"), Some(&other), Some(json!({}))).await;
    assert_eq!(status, 200);
    let (_, ended) = api.call("POST", "/api/v1/sessions/end", Some(&other), Some(json!({"sub": "alice"}))).await;
    assert_eq!(ended["ended"], 0);
    assert!(api.active(&access).await, "another app's key changed nothing");
    // Unknown and malformed tokens and sessions: 200, nothing changes.
    assert_eq!(revoke(&api, &api.issuer, "ktr_unknown").await, 200);
    assert_eq!(revoke(&api, &api.issuer, "not.a.token").await, 200);
    let (status, _) = api.call("POST", "/api/v1/sessions/nosuchsession/end", Some(&api.issuer), Some(json!({}))).await;
    assert_eq!(status, 200);
    assert!(api.active(&access).await);

    // Logout: the app revokes the access token with its own key; the whole session ends.
    assert_eq!(revoke(&api, &api.issuer, &access).await, 200);
    assert!(!api.active(&access).await, "inactive at introspection");
    assert_eq!(verify(&api, &access).await, 401, "refused at /auth/verify");
    let (status, err) = refresh(&api, &refresh_token).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")), "its refresh token stopped: {err}");
    let (_, feed) = api.call("GET", &format!("/api/v1/revocations?since={cursor}"), Some(&api.verifier), None).await;
    let entries = feed["revocations"].as_array().expect("entries");
    assert!(entries.iter().any(|e| e["type"] == "sid" && e["value"] == sid.as_str()), "the feed says so: {feed}");
    let (_, audit) = api.call("GET", "/api/v1/audit", Some(&api.admin), None).await;
    let end = audit["entries"].as_array().expect("audit").iter().find(|e| e["action"] == "session.end").cloned();
    let end = end.expect("audited");
    assert_eq!((end["actor"].as_str(), end["target"].as_str()), (Some("apikey:backend"), Some(sid.as_str())));

    // A stolen refresh cookie alone: revoking the refresh token ends its session too.
    let phone = sign_in(&api, &api.issuer, "alice", "phone").await;
    assert_eq!(revoke(&api, &api.issuer, phone["refresh_token"].as_str().expect("rt")).await, 200);
    assert!(!api.active(phone["access_token"].as_str().expect("at")).await);

    // Log out everywhere: every session of the subject this app minted, nobody else's.
    let (a, b) = (sign_in(&api, &api.issuer, "alice", "tablet").await, sign_in(&api, &api.issuer, "alice", "tv").await);
    let bob = sign_in(&api, &api.issuer, "bob", "laptop").await;
    let elsewhere = sign_in(&api, &other, "alice", "other app").await;
    let (status, ended) = api
        .call(
            "POST",
            "/api/v1/sessions/end",
            Some(&api.issuer),
            Some(json!({"sub": "alice", "reason": "password changed"})),
        )
        .await;
    assert_eq!((status, ended["ended"].as_u64()), (200, Some(2)), "{ended}");
    for (what, t, active) in
        [("tablet", &a, false), ("tv", &b, false), ("bob", &bob, true), ("another app's", &elsewhere, true)]
    {
        assert_eq!(api.active(t["access_token"].as_str().expect("at")).await, active, "{what}");
    }
    let (_, listed) = api.call("GET", "/api/v1/sessions?sub=alice", Some(&api.issuer), None).await;
    let reasons: Vec<&str> =
        listed["sessions"].as_array().expect("sessions").iter().filter_map(|s| s["end_reason"].as_str()).collect();
    assert!(reasons.contains(&"password changed"), "{listed}");
    // An administrator sees every app's sessions.
    let (_, all) = api.call("GET", "/api/v1/sessions?sub=alice&active=true", Some(&api.admin), None).await;
    assert_eq!(all["sessions"].as_array().map(Vec::len), Some(1), "only the other app's is running: {all}");
    // A verifier key may not.
    let (status, _) = api.call("GET", "/api/v1/sessions", Some(&api.verifier), None).await;
    assert_eq!(status, 403);
    api.stop().await;
}

/// A session ends by itself after `refresh_ttl` without a refresh (idle) and at
/// `session_lifetime` after it started (absolute), however often it is refreshed.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_when_idle_and_at_its_absolute_lifetime() {
    let api = Api::start(&[("KEYTURN_REFRESH_TTL", "20m"), ("KEYTURN_SESSION_LIFETIME", "1h")]).await;
    let idle = sign_in(&api, &api.issuer, "alice", "idle").await;
    api.advance(Duration::from_secs(21 * 60)).await;
    let (status, err) = refresh(&api, idle["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(status, 400, "idle for longer than refresh_ttl: {err}");

    let busy = sign_in(&api, &api.issuer, "alice", "busy").await;
    let mut rt = busy["refresh_token"].as_str().expect("rt").to_owned();
    let mut refreshed = 0;
    loop {
        api.advance(Duration::from_secs(15 * 60)).await;
        let (status, next) = refresh(&api, &rt).await;
        if status != 200 {
            assert_eq!(next["error"], "invalid_grant", "{next}");
            break;
        }
        refreshed += 1;
        rt = next["refresh_token"].as_str().expect("rt").to_owned();
    }
    assert_eq!(refreshed, 3, "refreshed every 15 minutes until the hour was up");
    let (_, listed) = api.call("GET", "/api/v1/sessions?sub=alice", Some(&api.issuer), None).await;
    let sessions = listed["sessions"].as_array().expect("sessions");
    assert!(sessions.iter().all(|s| s["active"] == false), "{listed}");
    api.stop().await;
}

/// A gateway in front of an app that keeps its access token in an HttpOnly cookie: with
/// `forward_auth_cookie` set, `/auth/verify` reads the token from that cookie when there is
/// no `Authorization` header, and refuses it once its session ended.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_reads_the_token_from_the_configured_cookie() {
    let api = Api::start(&[("KEYTURN_FORWARD_AUTH_COOKIE", "__Host-access")]).await;
    let s = sign_in(&api, &api.issuer, "alice", "browser").await;
    let at = s["access_token"].as_str().expect("at").to_owned();
    let with_cookie = |name: &str| {
        http().get(api.url("/auth/verify?aud=webapp-api")).header("Cookie", format!("theme=dark; {name}={at}")).send()
    };
    let res = with_cookie("__Host-access").await.expect("verify");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-auth-subject"], "alice");
    assert_eq!(with_cookie("other").await.expect("verify").status(), 401, "another cookie is not read");
    let header_wins = http()
        .get(api.url("/auth/verify"))
        .header("Cookie", format!("__Host-access={at}"))
        .header("Authorization", "Bearer garbage")
        .send()
        .await
        .expect("verify");
    assert_eq!(header_wins.status(), 401, "an Authorization header is what is checked when there is one");
    assert_eq!(revoke(&api, &api.issuer, &at).await, 200);
    assert_eq!(with_cookie("__Host-access").await.expect("verify").status(), 401, "logged out: refused at once");
    api.stop().await;
}
