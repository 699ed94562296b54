//! The dashboard in a real headless Chromium driven through chromedriver (W3C WebDriver over
//! plain HTTP). `./scripts/test` installs Debian's chromium and chromium-driver. Each test
//! saves a screenshot under target/screenshots/; the README's come from docs/screenshots/.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::api::Api;
use crate::support::http;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromedriver is not installed: run ./scripts/test, which installs Debian's chromium-driver");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http().get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let res: Value = http()
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("json");
        let session = res["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {res}")).to_owned();
        Browser { driver, base, session, _profile: profile }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = http().request(method.parse().expect("method"), url);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let v: Value = req.send().await.expect("webdriver").json().await.expect("json");
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn url(&self) -> String {
        self.cmd("GET", "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}")).to_owned()
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({}))).await;
        self.cmd("POST", &format!("/element/{el}/value"), Some(json!({"text": text}))).await;
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({}))).await;
    }

    /// The page's visible text (read by script through WebDriver, which the page's CSP does
    /// not govern), retried while a navigation is under way.
    async fn text(&self) -> String {
        let url = format!("{}/session/{}/execute/sync", self.base, self.session);
        for _ in 0..50 {
            let v: Value = http()
                .post(&url)
                .json(&json!({"script": "return document.readyState === 'complete' ? document.body.innerText : null", "args": []}))
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .expect("json");
            if let Some(t) = v["value"].as_str() {
                return t.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page did not finish loading")
    }

    /// Waits (bounded) until the page's text contains `needle`, and returns the text.
    async fn wait_text(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.text().await;
            if t.contains(needle) {
                return t;
            }
            assert!(Instant::now() < deadline, "the page never said {needle:?}; it says:\n{t}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn script(&self, js: &str) -> Value {
        let url = format!("{}/session/{}/execute/sync", self.base, self.session);
        let v: Value = http()
            .post(&url)
            .json(&json!({"script": js, "args": []}))
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("json");
        v["value"].clone()
    }

    /// Clicks a submit button and waits (bounded) until the next document has loaded: the
    /// current one is marked first, so an identical page re-rendered is still told apart.
    async fn submit(&self, css: &str) {
        self.script("document.documentElement.dataset.old = '1'; return true").await;
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh =
                self.script("return document.readyState === 'complete' && !document.documentElement.dataset.old").await;
            if fresh == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "the form submission did not load a new page");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The session cookie the browser holds, for requests made outside it.
    async fn cookie_header(&self) -> String {
        let cookies = self.cmd("GET", "/cookie", None).await;
        cookies
            .as_array()
            .expect("cookies")
            .iter()
            .map(|c| format!("{}={}", c["name"].as_str().unwrap_or(""), c["value"].as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn screenshot(&self, name: &str) {
        let png = self.cmd("GET", "/screenshot", None).await;
        let bytes = STANDARD.decode(png.as_str().expect("png")).expect("base64");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const PASSWORD: &str = "correct horse battery staple";

/// Creates the first administrator through the setup link, in the browser.
async fn first_admin(api: &Api, b: &Browser) {
    let svc = api.server.service.clone();
    let token = tokio::task::spawn_blocking(move || svc.create_setup_link(&keyturn::service::Actor::system()))
        .await
        .expect("join")
        .expect("link");
    b.goto(&api.url(&format!("/admin/setup?token={}", token.as_str()))).await;
    b.fill("#name", "alice").await;
    b.fill("#password", PASSWORD).await;
    b.fill("#confirm", PASSWORD).await;
    b.submit("main button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_sign_in_rotate_and_revoke_in_the_browser() {
    let api = Api::start(&[]).await;
    let b = Browser::start().await;

    // Signed out: every page leads to the sign-in page.
    b.goto(&api.url("/admin/keys")).await;
    b.wait_text("Sign in").await;
    assert!(b.url().await.ends_with("/admin/login"), "{}", b.url().await);
    b.screenshot("sign-in").await;

    first_admin(&api, &b).await;
    let text = b.wait_text("Active keys").await;
    assert!(b.url().await.ends_with("/admin"), "setup signs the new admin in: {}", b.url().await);
    assert!(text.contains("ES256") && text.contains("alice"), "{text}");
    b.screenshot("overview").await;

    // Rotate now (emergency): the new kid appears in the JWKS.
    let before: Vec<String> = api.jwks().await.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
    b.goto(&api.url("/admin/keys")).await;
    b.screenshot("keys").await;
    b.wait_text("Timeline").await;
    b.submit("a.button.danger").await;
    let confirm = b.wait_text("fresh key signs at once").await;
    assert!(confirm.contains("fetch it again"), "the confirmation says what an emergency does: {confirm}");
    b.screenshot("rotate-confirm").await;
    b.submit("button[type=submit].danger").await;
    b.wait_text("Timeline").await;
    let after: Vec<String> = api.jwks().await.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
    let new: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(new.len(), 1, "one new key published: {before:?} -> {after:?}");

    // Revoke that key: it leaves the JWKS.
    let kid = new[0].clone();
    b.goto(&api.url(&format!("/admin/keys/{kid}/revoke"))).await;
    b.wait_text("invalidates 0 unexpired tokens").await;
    b.fill("#reason", "browser test").await;
    b.screenshot("revoke-confirm").await;
    b.submit("button[type=submit].danger").await;
    b.wait_text("Timeline").await;
    assert!(api.jwks().await.find(&kid).is_none(), "the revoked key left the JWKS");

    // A POST without the CSRF token is refused and changes nothing.
    let cookie = b.cookie_header().await;
    let keys_before = api.jwks().await.keys.len();
    let res = http()
        .post(api.url("/admin/keys/rotate"))
        .header("Cookie", &cookie)
        .form(&[("alg", "ES256"), ("mode", "emergency")])
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 403);
    let wrong = http()
        .post(api.url("/admin/keys/rotate"))
        .header("Cookie", &cookie)
        .form(&[("alg", "ES256"), ("mode", "emergency"), ("csrf", "forged")])
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), 403);
    assert_eq!(api.jwks().await.keys.len(), keys_before, "nothing changed");

    // Sign out really ends the session: the old cookie no longer works.
    b.submit("form.signout button").await;
    b.wait_text("Sign in").await;
    assert!(b.url().await.ends_with("/admin/login"));
    let res = http().get(api.url("/admin")).header("Cookie", &cookie).send().await.expect("get");
    assert!(res.url().path().ends_with("/admin/login"), "the ended session redirects to sign-in: {}", res.url());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_passwords_are_rate_limited_with_one_generic_message() {
    let api = Api::start(&[]).await;
    let b = Browser::start().await;
    first_admin(&api, &b).await;
    b.wait_text("Active keys").await;
    b.submit("form.signout button").await;
    b.wait_text("Sign in").await;

    // Signing in with the right password works.
    b.fill("#name", "alice").await;
    b.fill("#password", PASSWORD).await;
    b.submit("main button[type=submit]").await;
    b.wait_text("Active keys").await;
    b.submit("form.signout button").await;
    b.wait_text("Sign in").await;

    // Five failures from this address, for a real and an unknown account alike: one message.
    for attempt in 0..5 {
        b.fill("#name", if attempt % 2 == 0 { "alice" } else { "nobody" }).await;
        b.fill("#password", "wrong password!").await;
        b.submit("main button[type=submit]").await;
        b.wait_text("Wrong name or password.").await;
    }
    b.fill("#name", "alice").await;
    b.fill("#password", PASSWORD).await;
    b.submit("main button[type=submit]").await;
    b.wait_text("Too many failed sign-ins").await;
    b.screenshot("rate-limited").await;
    assert!(b.url().await.ends_with("/admin/login"));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_verify_and_revoke_a_token_and_every_page_renders() {
    let api = Api::start(&[]).await;
    let b = Browser::start().await;
    first_admin(&api, &b).await;
    b.wait_text("Active keys").await;

    // Issue a token by hand; it is shown once and verifies against the JWKS.
    b.goto(&api.url("/admin/tokens")).await;
    b.fill("#sub", "carol").await;
    b.fill("#aud", "orders-api").await;
    b.fill("#ttl", "10m").await;
    b.fill("#claims", r#"{"tenant": "acme"}"#).await;
    b.submit("form[action='/admin/tokens'] button[type=submit]").await;
    b.wait_text("shown once").await;
    b.screenshot("tokens").await;
    let token =
        b.script("return document.getElementById('issued-token').value").await.as_str().expect("token").to_owned();
    assert!(crate::api::verifies(&token, &api.jwks().await), "the hand-issued token verifies against the JWKS");
    assert_eq!(api.introspect(&token).await["tenant"], "acme");

    // Revoke it from the list: introspection answers inactive.
    b.submit("button[aria-label^='Revoke token']").await;
    b.wait_text("Token revoked").await;
    assert_eq!(api.introspect(&token).await, json!({"active": false}));
    b.goto(&api.url("/admin/revocations")).await;
    b.wait_text("revoked from the dashboard").await;
    b.screenshot("revocations").await;

    // An invalid schedule is refused with a clear error, and nothing changes.
    b.goto(&api.url("/admin/schedule")).await;
    b.fill("#cron", "every tuesday").await;
    b.submit("button[value=save]").await;
    let text = b.wait_text("nothing was changed").await;
    assert!(text.contains("invalid cron expression"), "{text}");
    assert_eq!(api.server.service.policy().schedule.as_str(), "0 0 * * MON");
    // The preview follows typing (script), and the Preview button does the same without it.
    b.goto(&api.url("/admin/schedule")).await;
    b.wait_text("Next fire times").await;
    b.fill("#cron", "30 4 * * *").await;
    b.wait_text("04:30 UTC").await;
    b.fill("#cron", "0 6 * * *").await;
    b.submit("button[value=preview]").await;
    b.wait_text("06:00 UTC").await;
    assert_eq!(api.server.service.policy().schedule.as_str(), "0 0 * * MON", "a preview saves nothing");
    b.submit("button[value=save]").await;
    b.wait_text("Saved").await;
    assert_eq!(api.server.service.policy().schedule.as_str(), "0 6 * * *");
    b.screenshot("schedule").await;

    // Every page answers, signed in.
    for (path, heading) in
        [("/admin/clients", "Clients and API keys"), ("/admin/audit", "Audit log"), ("/admin/admins", "Administrators")]
    {
        b.goto(&api.url(path)).await;
        b.wait_text(heading).await;
        b.screenshot(path.trim_start_matches("/admin/")).await;
    }
    b.goto(&api.url("/admin/audit?action=key.")).await;
    let audit = b.wait_text("Audit log").await;
    assert!(audit.contains("key.bootstrap") && !audit.contains("admin.sign_in"), "filtered by action: {audit}");

    // No page shows a secret except the one-time display.
    let keys = b.cookie_header().await;
    for path in ["/admin", "/admin/keys", "/admin/tokens", "/admin/clients", "/admin/admins", "/admin/audit"] {
        let html =
            http().get(api.url(path)).header("Cookie", &keys).send().await.expect("get").text().await.expect("html");
        for secret in [&api.admin, &api.issuer, &api.verifier, &token] {
            assert!(!html.contains(secret.as_str()), "{path} shows a secret");
        }
        assert!(!html.contains("<script>"), "{path} has inline script");
    }
    api.stop().await;
}
