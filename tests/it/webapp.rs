//! The example web app (`examples/webapp`, Node and Express) driven in the real Chromium
//! beside the real keyturn binary, as the README's "Sign your users in" tells a developer to
//! run it: sign in against the app's own user table, call its API (verified against the
//! JWKS and the revocation feed), a silent refresh after the access token expires, logout
//! and "log out everywhere" — after which the old cookies are refused by the app's API, by
//! `/auth/verify` (reading the app's cookie) and by introspection.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::browser::Browser;
use crate::daemon::{free_port, keyturn_once, Daemon};
use crate::gateways::Killed;
use crate::support::{eventually_async, http};

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/webapp")
}

/// The app's API as a browser with `cookies` would call it: the status and the answer.
async fn api_me(app: &str, cookies: &str) -> (u16, Value) {
    let res = http().get(format!("{app}/api/me")).header("Cookie", cookies).send().await.expect("the app's API");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The value of the cookie `name` in a `Cookie` header.
fn cookie<'a>(header: &'a str, name: &str) -> &'a str {
    header
        .split("; ")
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {header}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_app_signs_in_refreshes_and_logs_out_in_a_real_browser() {
    assert!(
        app_dir().join("node_modules/express").is_dir(),
        "the example app's dependencies are not installed: run ./scripts/test, which installs them (npm ci in examples/webapp)"
    );
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_FORWARD_AUTH_COOKIE", "__Host-access"), crate::support::SQLITE];
    let (d, issuer, verifier) = tokio::task::block_in_place(|| {
        let d = Daemon::start(&data, &env, "webapp-keyturn");
        let key = |role: &str| {
            keyturn_once(&data, &["apikey", "create", "--role", role, "--name", "webapp"], &env).trim().to_owned()
        };
        let (issuer, verifier) = (key("issuer"), key("verifier"));
        (d, issuer, verifier)
    });
    let port = free_port();
    let app = format!("http://127.0.0.1:{port}");
    let log = root.path().join("webapp.log");
    let _app = Killed(
        Command::new("node")
            .arg("server.mjs")
            .current_dir(app_dir())
            .env("KEYTURN_URL", &d.url)
            .env("KEYTURN_ISSUER_KEY", &issuer)
            .env("KEYTURN_VERIFIER_KEY", &verifier)
            .env("PORT", port.to_string())
            .env("ACCESS_TTL", "4s")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("node"),
    );
    eventually_async("the example app to answer", Duration::from_secs(20), || async {
        http().get(format!("{app}/login")).send().await.ok()
    })
    .await;

    // Sign in in the browser: the app checks the password, keyturn mints the tokens.
    let b = Browser::start().await;
    b.goto(&format!("{app}/login")).await;
    b.fill("#name", "alice").await;
    b.fill("#password", "alice-demo-password").await;
    b.submit("button[type=submit]").await;
    let home = b.wait_text("Signed in as alice").await;
    assert!(home.contains("(this one)"), "the user's sessions are listed: {home}");
    b.goto(&format!("{app}/api/me")).await;
    let me: Value = serde_json::from_str(&b.wait_text("\"sub\"").await).expect("the API's JSON");
    assert_eq!(me["sub"], "alice");
    let sid = me["sid"].as_str().expect("sid").to_owned();
    let first = b.cookie_header().await;
    let access = cookie(&first, "__Host-access").to_owned();
    assert!(access.starts_with("ey") && cookie(&first, "__Host-refresh").starts_with("ktr_"), "{first}");

    // The access token expires (4 s): the next call refreshes it silently, same session.
    let refreshed = eventually_async("a silent refresh", Duration::from_secs(30), || async {
        b.goto(&format!("{app}/api/me")).await;
        let me: Value = serde_json::from_str(&b.text().await).ok()?;
        (me["refreshed"] == true).then_some(me)
    })
    .await;
    assert_eq!(refreshed["sid"], sid.as_str(), "the same session");
    assert_ne!(refreshed["jti"], me["jti"], "a new access token");
    let before_logout = b.cookie_header().await;
    assert_ne!(cookie(&before_logout, "__Host-access"), access, "the cookie holds the new token");
    assert_eq!(api_me(&app, &before_logout).await.0, 200);

    // Log out: the app ends the session with its own key.
    b.goto(&app).await;
    b.submit("form[action='/logout'] button").await;
    b.wait_text("Signed out").await;
    let old_access = cookie(&before_logout, "__Host-access").to_owned();
    assert_eq!(api_me(&app, &before_logout).await.0, 401, "the old cookies are refused by the app's API");
    let verify = http()
        .get(format!("{}/auth/verify", d.url))
        .header("Cookie", format!("__Host-access={old_access}"))
        .send()
        .await
        .expect("verify");
    assert_eq!(verify.status(), 401, "and by /auth/verify, reading the app's cookie");
    let introspected: Value = http()
        .post(format!("{}/oauth/introspect", d.url))
        .bearer_auth(&verifier)
        .form(&[("token", old_access.as_str())])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json");
    assert_eq!(introspected["active"], false, "and by introspection");

    // Log out everywhere: this browser and another device of alice's, both ended.
    b.goto(&format!("{app}/login")).await;
    b.fill("#name", "alice").await;
    b.fill("#password", "alice-demo-password").await;
    b.submit("button[type=submit]").await;
    b.wait_text("Signed in as alice").await;
    let other_device: Value = http()
        .post(format!("{}/api/v1/tokens", d.url))
        .bearer_auth(&issuer)
        .json(&serde_json::json!({"sub": "alice", "aud": "webapp-api", "refresh": true, "session_label": "phone"}))
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    b.goto(&app).await;
    let listed = b.wait_text("phone").await;
    assert!(listed.contains("(this one)"), "both sessions listed: {listed}");
    let this_browser = b.cookie_header().await;
    b.submit("form[action='/logout-everywhere'] button").await;
    b.wait_text("Signed out").await;
    assert_eq!(api_me(&app, &this_browser).await.0, 401);
    let phone = other_device["access_token"].as_str().expect("token");
    let verify = http().get(format!("{}/auth/verify", d.url)).bearer_auth(phone).send().await.expect("verify");
    assert_eq!(verify.status(), 401, "the other device is logged out too");
    b.screenshot("webapp-signed-out").await;
}
