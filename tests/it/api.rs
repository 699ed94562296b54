//! `/api/v1`: authentication, keys, rotation, revocation, schedule, audit and tokens, over
//! real HTTP against a server whose clock the test moves.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use keyturn::service::apikeys::Role;
use keyturn::service::Actor;
use keyturn::store::{args, Dialect};
use keyturn::Server;
use serde_json::{json, Value};

use crate::support::{self, fake_clock, http};

/// A running server and an API key of each role.
pub struct Api {
    pub server: Server,
    pub admin: String,
    pub issuer: String,
    pub verifier: String,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start(env: &[(&str, &str)]) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = support::start(dir.path(), env, fake_clock()).await;
        let make = async |role, name: &str| {
            server.service.clients().create_api_key(role, name, &Actor::cli()).await.expect("api key").1.to_string()
        };
        let (admin, issuer, verifier) =
            (make(Role::Admin, "ops").await, make(Role::Issuer, "backend").await, make(Role::Verifier, "rs").await);
        Api { server, admin, issuer, verifier, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = http().request(method.parse().expect("method"), self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}")))
    }

    pub async fn jwks(&self) -> JwkSet {
        http().get(self.url("/.well-known/jwks.json")).send().await.expect("get").json().await.expect("jwks")
    }

    /// Moves the fake clock and lets the lifecycle act, as the scheduler would.
    pub async fn advance(&self, by: Duration) {
        self.server.service.clock().advance(by);
        let s = self.server.service.clone();
        s.tick().await.expect("tick");
    }

    pub async fn stop(self) {
        self.server.stop().await.expect("stop");
    }

    /// Whether introspection (with the verifier key) says `token` is active.
    pub async fn active(&self, token: &str) -> bool {
        let res = http()
            .post(self.url("/oauth/introspect"))
            .bearer_auth(&self.verifier)
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect");
        res.json::<Value>().await.expect("json")["active"] == true
    }

    /// Mints a 10-minute token for `sub` with the issuer key.
    pub async fn mint_as_issuer(&self, sub: &str) -> Value {
        let (status, body) = self
            .call("POST", "/api/v1/tokens", Some(&self.issuer), Some(json!({"sub": sub, "aud": "api", "ttl": "10m"})))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

pub fn verifies(token: &str, jwks: &JwkSet) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let Some(jwk) = header.kid.as_deref().and_then(|k| jwks.find(k)) else {
        return false;
    };
    let Ok(key) = DecodingKey::from_jwk(jwk) else {
        return false;
    };
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &v).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_and_roles() {
    let api = Api::start(&[]).await;
    let res = http().get(api.url("/api/v1/keys")).send().await.expect("get");
    assert_eq!(res.status(), 401);
    assert!(res.headers()["www-authenticate"].to_str().expect("header").starts_with("Bearer"));
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"], "unauthorized");
    assert!(body["error_description"].as_str().expect("desc").contains("Authorization"));

    for bad in ["kt_nope.nope", "not-a-key", &format!("{}x", api.admin)] {
        let (status, body) = api.call("GET", "/api/v1/keys", Some(bad), None).await;
        assert_eq!(status, 401, "{bad}");
        assert_eq!(body["error"], "unauthorized");
    }
    let (status, body) = api.call("GET", "/api/v1/keys", Some(&api.verifier), None).await;
    assert_eq!(status, 403);
    assert!(body["error_description"].as_str().expect("desc").contains("verifier"));
    let (status, _) =
        api.call("POST", "/api/v1/tokens", Some(&api.verifier), Some(json!({"sub": "a", "aud": "b"}))).await;
    assert_eq!(status, 403, "a verifier cannot mint tokens");
    let (status, _) =
        api.call("POST", "/api/v1/keys/rotate", Some(&api.issuer), Some(json!({"mode": "emergency"}))).await;
    assert_eq!(status, 403, "an issuer cannot rotate");
    let (status, body) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["keys"].as_array().expect("keys").len(), 2);

    // The daemon now holds the admin key in memory: a wrong secret for its id is still
    // refused, and revoking it takes effect on the very next request.
    let (status, _) = api.call("GET", "/api/v1/keys", Some(&format!("{}x", api.admin)), None).await;
    assert_eq!(status, 401, "a wrong secret for a cached key");
    let id = api.admin.trim_start_matches("kt_").split('.').next().expect("id").to_owned();
    api.server.service.clients().revoke_api_key(&id, &Actor::cli()).await.expect("revoke");
    let (status, _) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    assert_eq!(status, 401, "a revoked key is refused at once");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_list_states_times_and_next_transition() {
    let api = Api::start(&[]).await;
    let (_, body) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let keys = body["keys"].as_array().expect("keys");
    let active = keys.iter().find(|k| k["state"] == "active").expect("active");
    let pending = keys.iter().find(|k| k["state"] == "pending").expect("pending");
    assert_eq!(active["alg"], "ES256");
    assert!(active["activated_at"].is_string() && active["created_at"].is_string() && active["not_after"].is_string());
    assert_eq!(active["custody"], "software", "where the key lives: {active}");
    assert_eq!(active["next"]["event"], "retire");
    assert_eq!(pending["next"]["event"], "activate");
    // The fake clock starts on Monday 2026-06-01 12:00; the next Monday 00:00 is the next fire.
    assert_eq!(pending["next"]["at"], "2026-06-08T00:00:00Z");
    assert_eq!(active["next"]["at"], "2026-06-08T00:00:00Z");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_rotation_waits_for_the_lead_then_happens() {
    let api = Api::start(&[]).await;
    let (_, before) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let pending = before["keys"].as_array().expect("keys").iter().find(|k| k["state"] == "pending").expect("pending")
        ["kid"]
        .clone();

    // The pending key was published at start-up: it is too young to sign.
    api.advance(Duration::from_secs(60)).await;
    let (status, preview) = api
        .call(
            "POST",
            "/api/v1/keys/rotate",
            Some(&api.admin),
            Some(json!({"mode": "graceful", "alg": "ES256", "dry_run": true})),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["at"], "2026-06-01T12:15:01Z", "the dry run says when the real request takes effect");
    assert_eq!(preview["done"], false);
    let (status, body) = api
        .call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(json!({"mode": "graceful", "alg": "ES256"})))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["done"], false);
    assert_eq!(body["activate"], pending);
    assert_eq!(body["at"], "2026-06-01T12:15:01Z", "15 minutes (plus the 1 s stamp granularity) after publication");

    api.advance(Duration::from_secs(13 * 60)).await;
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    assert!(
        keys["keys"].as_array().expect("keys").iter().any(|k| k["kid"] == pending && k["state"] == "pending"),
        "still waiting"
    );

    api.advance(Duration::from_secs(2 * 60)).await;
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let keys = keys["keys"].as_array().expect("keys");
    assert!(keys.iter().any(|k| k["kid"] == pending && k["state"] == "active"), "promoted: {keys:?}");
    assert_eq!(keys.iter().filter(|k| k["state"] == "pending").count(), 1, "a new pending key is generated ahead");
    assert_eq!(keys.iter().filter(|k| k["state"] == "retired").count(), 1);
    api.stop().await;
}

/// The pending key of `alg` in the key list, if any.
fn pending_kid(keys: &Value) -> Option<String> {
    keys["keys"].as_array()?.iter().find(|k| k["state"] == "pending").and_then(|k| k["kid"].as_str()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn emergency_rotation_promotes_the_published_pending_key_at_once() {
    let api = Api::start(&[]).await;
    // Every caching verifier has fetched the pending key once it has been published for
    // jwks_max_age + clock_skew (5 min + 1 min by default).
    api.advance(Duration::from_secs(6 * 60 + 1)).await;
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let pending = pending_kid(&keys).expect("a pending key is published ahead");
    let before = api.jwks().await;
    assert!(before.find(&pending).is_some(), "verifiers already hold the pending key");

    // The API says what will happen before anything changes.
    let (status, preview) = api
        .call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(json!({"mode": "emergency", "dry_run": true})))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["done"], false);
    assert_eq!(preview["activate"], pending.as_str());
    assert_eq!(preview["fresh_key"], false);
    let (_, unchanged) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    assert_eq!(unchanged, keys, "a dry run changes nothing");

    let (status, body) =
        api.call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(json!({"mode": "emergency"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], true);
    assert_eq!(body["activate"], pending.as_str(), "the published pending key signs, not a fresh one");
    assert_eq!(body["fresh_key"], false);
    let next = body["pending"].as_str().expect("a new pending key").to_owned();
    let (_, token) =
        api.call("POST", "/api/v1/tokens", Some(&api.issuer), Some(json!({"sub": "alice", "aud": "api"}))).await;
    assert_eq!(token["kid"], pending.as_str(), "it signs at once");
    assert!(
        verifies(token["access_token"].as_str().expect("token"), &before),
        "a verifier holding the JWKS from before the rotation verifies the next token"
    );
    assert!(api.jwks().await.find(&next).is_some(), "the new pending key is published");
    let (_, audit) = api.call("GET", "/api/v1/audit", Some(&api.admin), None).await;
    let entry = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "key.rotate.emergency")
        .expect("audited")
        .clone();
    assert_eq!(entry["actor"], "apikey:ops");
    assert_eq!(entry["source"], "127.0.0.1");
    assert_eq!(entry["target"], pending.as_str());
    assert!(entry["detail"].as_str().expect("detail").contains("already have it"), "{entry}");
    api.stop().await;
}

/// Without a published pending key (no scheduler here to generate one in between), the
/// preview warns and a fresh key signs.
#[tokio::test]
async fn emergency_rotation_without_a_published_pending_key_says_so_and_signs_with_a_fresh_one() {
    use keyturn::keys::KeyState;
    use keyturn::service::rotation::RotateMode;
    let dir = tempfile::tempdir().expect("tempdir");
    let service = keyturn::service::Keyturn::open(support::config(dir.path(), &[]), fake_clock()).await.expect("open");
    let pending = service.published().keys.iter().find(|k| k.state == KeyState::Pending).expect("pending").kid.clone();
    let db = support::database_of(service.config());
    support::execute(
        &db,
        "UPDATE signing_keys SET state = 'expired', sealed_private = NULL WHERE kid = ?1",
        args![pending.as_str()],
    );
    service.keys().reload().await.expect("reload");
    let preview = service.keys().rotate_preview(None, RotateMode::Emergency).expect("preview");
    assert!(preview.fresh_key, "the preview warns before the administrator confirms: {preview:?}");
    assert_eq!(preview.activate, None);
    let done = service.keys().rotate(None, RotateMode::Emergency, &Actor::cli()).await.expect("rotate");
    assert!(done.fresh_key && done.done);
    let fresh = done.activate.expect("kid");
    assert_ne!(fresh, pending.to_string());
    let published = service.published();
    assert!(published.verifier(&fresh).is_some(), "the fresh key is published");
    assert_eq!(
        published
            .signer(keyturn::service::resolve_alg(service.config(), None).expect("alg"))
            .expect("signer")
            .kid()
            .to_string(),
        fresh
    );
    let audit = service.audit().page(None, 50).await.expect("audit");
    let entry = audit.iter().find(|e| e.action == "key.rotate.emergency").expect("audited");
    assert!(entry.detail.as_deref().unwrap_or("").contains("until they refetch"), "{entry:?}");
}

/// The reported case: two emergency rotations in a row (a retry whose answer was lost, two
/// administrators, two nodes) made the pending key published by the first sign at once,
/// answering `fresh_key: false`. Now an emergency promotes only a pending key published for
/// jwks_max_age + clock_skew; a younger one stays pending and a fresh key signs, reported
/// and audited as fresh. A second emergency within that time repeats nothing: it says what
/// the first did (`repeated`), and is audited as asked again.
#[tokio::test]
async fn a_second_emergency_rotation_says_what_the_first_did_and_an_unseen_pending_key_never_signs() {
    use keyturn::keys::KeyState;
    use keyturn::service::rotation::RotateMode;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = fake_clock();
    let service = keyturn::service::Keyturn::open(support::config(dir.path(), &[]), clock.clone()).await.expect("open");
    let kid_of = |state| service.published().keys.iter().find(|k| k.state == state).map(|k| k.kid.to_string());
    let (active, young) = (kid_of(KeyState::Active).expect("active"), kid_of(KeyState::Pending).expect("pending"));

    // The pending key was published a moment ago: caching verifiers may not have it yet.
    clock.advance(Duration::from_secs(60));
    let preview = service.keys().rotate_preview(None, RotateMode::Emergency).expect("preview");
    assert!(preview.fresh_key, "the preview says a never-seen key will sign: {preview:?}");
    let first = service.keys().rotate(None, RotateMode::Emergency, &Actor::cli()).await.expect("rotate");
    assert!(first.done && first.fresh_key && !first.repeated, "{first:?}");
    let fresh = first.activate.clone().expect("kid");
    assert_ne!(fresh, young, "the young pending key does not sign");
    assert_eq!(first.retire.as_deref(), Some(active.as_str()));
    assert_eq!(kid_of(KeyState::Pending).as_deref(), Some(young.as_str()), "it stays pending, its lead running");
    let audit = service.audit().page(None, 50).await.expect("audit");
    let entry = audit.iter().find(|e| e.action == "key.rotate.emergency").expect("audited");
    assert!(entry.detail.as_deref().unwrap_or("").contains("fresh key"), "audited as fresh: {entry:?}");

    // Asked again a moment later: nothing changes, and the answer is the first one's.
    clock.advance(Duration::from_secs(5));
    let keys_before = service.keys().list_keys().await.expect("keys").len();
    let again = service.keys().rotate(None, RotateMode::Emergency, &Actor::cli()).await.expect("rotate again");
    assert!(again.repeated && again.done && again.fresh_key, "{again:?}");
    assert_eq!(again.activate.as_deref(), Some(fresh.as_str()));
    assert_eq!(again.retire.as_deref(), Some(active.as_str()));
    assert_eq!(again.at, first.at);
    assert_eq!(service.keys().list_keys().await.expect("keys").len(), keys_before, "no key made");
    assert_eq!(kid_of(KeyState::Active).as_deref(), Some(fresh.as_str()));
    let audit = service.audit().page(None, 50).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "key.rotate.emergency.repeated"), "the repeat is audited");

    // Once the young key has been published for jwks_max_age + clock_skew, an emergency
    // promotes it: every caching verifier has it.
    clock.advance(Duration::from_secs(6 * 60));
    let later = service.keys().rotate(None, RotateMode::Emergency, &Actor::cli()).await.expect("a later emergency");
    assert!(!later.repeated && !later.fresh_key, "{later:?}");
    assert_eq!(later.activate.as_deref(), Some(young.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_active_key_removes_it_and_activates_a_replacement() {
    let api = Api::start(&[]).await;
    let (_, issued) = api
        .call("POST", "/api/v1/tokens", Some(&api.issuer), Some(json!({"sub": "alice", "aud": "api", "ttl": "10m"})))
        .await;
    let token = issued["access_token"].as_str().expect("token").to_owned();
    let kid = issued["kid"].as_str().expect("kid").to_owned();
    assert!(verifies(&token, &api.jwks().await));

    let (status, body) = api
        .call(
            "POST",
            &format!("/api/v1/keys/{kid}/revoke"),
            Some(&api.admin),
            Some(json!({"reason": "leaked in a log"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_state"], "active");
    assert_eq!(body["live_tokens_invalidated"], 1);
    let replacement = body["replacement"].as_str().expect("replacement").to_owned();

    let jwks = api.jwks().await;
    assert!(jwks.find(&kid).is_none(), "a revoked key leaves the JWKS at once");
    assert!(!verifies(&token, &jwks), "its tokens no longer verify against the fetched JWKS");
    let (_, issued) =
        api.call("POST", "/api/v1/tokens", Some(&api.issuer), Some(json!({"sub": "bob", "aud": "api"}))).await;
    assert_eq!(issued["kid"], replacement.as_str(), "the replacement signs at once");
    assert!(verifies(issued["access_token"].as_str().expect("token"), &jwks));

    // Revoked means gone for good: a second revocation conflicts, an unknown kid is 404.
    let (status, _) = api
        .call("POST", &format!("/api/v1/keys/{kid}/revoke"), Some(&api.admin), Some(json!({"reason": "again"})))
        .await;
    assert_eq!(status, 409);
    let (status, _) =
        api.call("POST", "/api/v1/keys/no-such-kid/revoke", Some(&api.admin), Some(json!({"reason": "x"}))).await;
    assert_eq!(status, 404);
    let (status, _) = api
        .call("POST", &format!("/api/v1/keys/{replacement}/revoke"), Some(&api.admin), Some(json!({"reason": ""})))
        .await;
    assert_eq!(status, 400, "a reason is required");

    // Time passes: the revoked key never comes back.
    api.advance(Duration::from_secs(30 * 86_400)).await;
    assert!(api.jwks().await.find(&kid).is_none());
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let revoked = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kept for audit")
        .clone();
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["revoke_reason"], "leaked in a log");
    let db = support::database_of(api.server.service.config());
    let rows = support::rows(&db, "SELECT sealed_private FROM signing_keys WHERE kid = ?1", args![kid]);
    let sealed: Option<Vec<u8>> = rows[0].get(0).expect("row");
    assert!(sealed.is_none(), "its private key is erased");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schedule_read_change_preview_and_refuse() {
    let api = Api::start(&[("KEYTURN_LEEWAY", "2m")]).await;
    let (status, body) = api.call("GET", "/api/v1/schedule", Some(&api.admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["rotation_schedule"], "0 0 * * MON");
    assert_eq!(body["publish_lead"], "15m");
    assert_eq!(body["pinned"], json!(["leeway"]));
    assert_eq!(body["next_fires"].as_array().expect("fires").len(), 5);
    assert_eq!(body["next_fires"][0], "2026-06-08T00:00:00Z");

    let (status, body) = api
        .call(
            "PUT",
            "/api/v1/schedule",
            Some(&api.admin),
            Some(json!({"rotation_schedule": "0 6 * * *", "publish_lead": "20m"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rotation_schedule"], "0 6 * * *");
    assert_eq!(body["publish_lead"], "20m");
    assert_eq!(
        body["next_fires"],
        json!([
            "2026-06-02T06:00:00Z",
            "2026-06-03T06:00:00Z",
            "2026-06-04T06:00:00Z",
            "2026-06-05T06:00:00Z",
            "2026-06-06T06:00:00Z"
        ])
    );

    for (bad, needle) in [
        (json!({"cron": "61 * * * *"}), "cron"),
        (json!({"cron": "every day"}), "invalid cron expression"),
        (json!({"publish_lead": "1m"}), "publish_lead (1m) must be at least"),
        (json!({"leeway": "5m"}), "pinned"),
        (json!({"max_token_ttl": "ten minutes"}), "max_token_ttl"),
        (json!({}), "nothing to change"),
    ] {
        let (status, body) = api.call("PUT", "/api/v1/schedule", Some(&api.admin), Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error_description"].as_str().expect("desc").contains(needle), "{bad}: {body}");
    }
    let (status, _) = api.call("PUT", "/api/v1/schedule", Some(&api.admin), Some(json!({"crontab": "x"}))).await;
    assert!(status == 400 || status == 422, "unknown fields are refused");
    let (_, body) = api.call("GET", "/api/v1/schedule", Some(&api.admin), None).await;
    assert_eq!(body["rotation_schedule"], "0 6 * * *", "nothing changed by the refused requests");
    assert_eq!(body["publish_lead"], "20m");

    // JWKS max-age is a policy value too: it drives the JWKS Cache-Control, and must stay
    // within the lead less the skew.
    let (status, body) =
        api.call("PUT", "/api/v1/schedule", Some(&api.admin), Some(json!({"jwks_max_age": "2m"}))).await;
    assert_eq!(status, 200, "{body}");
    let res = http().get(api.url("/.well-known/jwks.json")).send().await.expect("get");
    assert_eq!(res.headers()["cache-control"], "public, max-age=120");
    let (status, body) =
        api.call("PUT", "/api/v1/schedule", Some(&api.admin), Some(json!({"jwks_max_age": "30m"}))).await;
    assert_eq!(status, 400, "a max-age longer than the lead allows is refused: {body}");

    // The schedule's other name is accepted, and the answer says it is an alias.
    let (_, body) = api.call("PUT", "/api/v1/schedule", Some(&api.admin), Some(json!({"cron": "*/5 * * * *"}))).await;
    assert_eq!(body["rotation_schedule"], "*/5 * * * *", "{body}");
    assert!(body["warnings"][0].as_str().expect("warning").contains("more often than the publish lead"), "{body}");
    assert_eq!(body["warnings"][1], "cron is an alias of rotation_schedule", "{body}");
    let (status, body) = api
        .call(
            "PUT",
            "/api/v1/schedule",
            Some(&api.admin),
            Some(json!({"cron": "0 1 * * *", "rotation_schedule": "0 2 * * *"})),
        )
        .await;
    assert_eq!(status, 400, "the name and its alias together are refused: {body}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_signed_recorded_and_bounded() {
    let api = Api::start(&[("KEYTURN_ALGORITHMS", "ES256,EdDSA"), ("KEYTURN_MAX_TOKEN_TTL", "30m")]).await;
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&api.issuer),
            Some(json!({"sub": "alice", "aud": ["api", "web"], "ttl": "10m", "alg": "EdDSA"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().expect("token");
    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), body["kid"].as_str());
    let claims: Value = jsonwebtoken::dangerous::insecure_decode::<Value>(token).expect("claims").claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], json!(["api", "web"]));
    assert_eq!(claims["jti"], body["jti"]);
    assert_eq!(claims["iss"], api.server.service.config().issuer);
    for c in ["iat", "nbf", "exp", "client_id"] {
        assert!(!claims[c].is_null(), "claim {c}");
    }
    assert!(verifies(token, &api.jwks().await));

    let db = support::database_of(api.server.service.config());
    let rows = support::rows(
        &db,
        "SELECT sub, kid FROM issued_tokens WHERE jti = ?1",
        args![body["jti"].as_str().expect("jti")],
    );
    let (sub, kid): (String, String) = (rows[0].get(0).expect("sub"), rows[0].get(1).expect("kid"));
    assert_eq!((sub.as_str(), Some(kid.as_str())), ("alice", body["kid"].as_str()));
    let columns_sql = match db.dialect() {
        Dialect::Sqlite => "SELECT name FROM pragma_table_info('issued_tokens')",
        Dialect::Postgres => {
            "SELECT CAST(column_name AS TEXT) FROM information_schema.columns WHERE table_name = 'issued_tokens'"
        }
    };
    let columns: Vec<String> =
        support::rows(&db, columns_sql, args![]).iter().map(|r| r.get(0).expect("column name")).collect();
    assert!(
        !columns.iter().any(|c| c.contains("token") && c != "jti"),
        "the token itself is never stored: {columns:?}"
    );

    for (bad, status) in [
        (json!({"sub": "a", "aud": "b", "ttl": "31m"}), 400),
        (json!({"sub": "a", "aud": "b", "alg": "HS256"}), 400),
        (json!({"sub": "a", "aud": "b", "alg": "RS256"}), 400),
        (json!({"sub": "", "aud": "b"}), 400),
        (json!({"sub": "a", "aud": []}), 400),
        (json!({"sub": "a"}), 422),
    ] {
        let (got, body) = api.call("POST", "/api/v1/tokens", Some(&api.issuer), Some(bad.clone())).await;
        assert_eq!(got, status, "{bad}: {body}");
    }
    let count = support::scalar(&db, "SELECT count(*) FROM issued_tokens", args![]);
    assert_eq!(count, 1, "refused requests record nothing");
    api.stop().await;
}

/// Revoking a key counts only the live tokens it newly invalidates: those already revoked
/// (here by jti) are not counted again, on the confirmation page nor in the outcome.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_key_counts_only_live_unrevoked_tokens() {
    let api = Api::start(&[]).await;
    let mut issued = Vec::new();
    for i in 0..6 {
        issued.push(api.mint_as_issuer(&format!("user-{i}")).await);
    }
    for t in &issued[..4] {
        let (status, _) = api
            .call("POST", "/api/v1/revocations", Some(&api.admin), Some(json!({"jti": t["jti"], "reason": "test"})))
            .await;
        assert_eq!(status, 201);
    }
    let kid = keyturn::keys::KeyId::new(issued[0]["kid"].as_str().expect("kid"));
    assert_eq!(
        api.server.service.tokens().live_tokens_of(&kid).await.expect("count"),
        2,
        "6 live tokens, 4 already revoked"
    );
    let (status, body) = api
        .call("POST", &format!("/api/v1/keys/{kid}/revoke"), Some(&api.admin), Some(json!({"reason": "test"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["live_tokens_invalidated"], 2);
    api.stop().await;
}

/// A graceful rotation asked for in the very second the active key was activated (here, the
/// first start) takes effect once the pending key has been published for the lead, not at the
/// next scheduled fire a week later.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_request_in_the_second_of_an_activation_waits_only_for_the_lead() {
    let api = Api::start(&[]).await;
    let (status, body) = api
        .call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(json!({"mode": "graceful", "alg": "ES256"})))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["at"], "2026-06-01T12:15:01Z", "the lead after publication, not the next fire: {body}");
    let pending = body["activate"].clone();
    api.advance(Duration::from_secs(15 * 60 + 1)).await;
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let keys = keys["keys"].as_array().expect("keys");
    assert!(keys.iter().any(|k| k["kid"] == pending && k["state"] == "active"), "promoted: {keys:?}");
    assert_eq!(keys.iter().filter(|k| k["state"] == "retired").count(), 1);
    api.stop().await;
}

/// An emergency rotation answers a graceful request still waiting: the key it activated is
/// not rotated away again once the new pending key is old enough.
#[tokio::test(flavor = "multi_thread")]
async fn an_emergency_rotation_spends_a_waiting_graceful_request() {
    let api = Api::start(&[]).await;
    let rotate = |mode: &str| json!({"mode": mode, "alg": "ES256"});
    let (status, body) = api.call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(rotate("graceful"))).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = api.call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(rotate("emergency"))).await;
    assert_eq!(status, 200, "{body}");
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let active = |keys: &Value| {
        keys["keys"].as_array().expect("keys").iter().find(|k| k["state"] == "active").expect("active")["kid"].clone()
    };
    let signing = active(&keys);
    api.advance(Duration::from_secs(16 * 60)).await;
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    assert_eq!(active(&keys), signing, "no second rotation: {keys}");
    api.stop().await;
}

/// After a normal rotation the retired key stays published past its last token (plus the
/// leeway): the overview does not warn that it leaves the JWKS first.
#[tokio::test(flavor = "multi_thread")]
async fn a_normal_rotation_with_live_tokens_raises_no_false_warning() {
    let api = Api::start(&[]).await;
    let (_, token) = api
        .call("POST", "/api/v1/tokens", Some(&api.issuer), Some(json!({"sub": "alice", "aud": "api", "ttl": "1h"})))
        .await;
    api.advance(Duration::from_secs(60)).await;
    let (status, body) =
        api.call("POST", "/api/v1/keys/rotate", Some(&api.admin), Some(json!({"mode": "graceful"}))).await;
    assert_eq!(status, 202, "{body}");
    api.advance(Duration::from_secs(15 * 60)).await;
    let (_, keys) = api.call("GET", "/api/v1/keys", Some(&api.admin), None).await;
    let retired =
        keys["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == token["kid"]).expect("key").clone();
    assert_eq!(retired["state"], "retired", "the graceful rotation happened: {retired}");
    let overview = api.server.service.overview().await.expect("overview");
    assert!(
        !overview.warnings.iter().any(|w| w.contains("leaves the JWKS")),
        "no false warning: {:?}",
        overview.warnings
    );
    api.stop().await;
}
