//! The dashboard in a real headless Chromium driven through chromedriver with fantoccini (a
//! W3C WebDriver client). `./scripts/test` installs Debian's chromium and chromium-driver. Each test
//! saves a screenshot under target/screenshots/; the README's come from docs/screenshots/.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::api::Api;
use crate::support::{eventually_async, http};

/// How long the browser may take to show what a step expects.
const PATIENCE: Duration = Duration::from_secs(10);

/// A chromedriver process and one browser session, driven through fantoccini.
pub(crate) struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromedriver is not installed: run ./scripts/test, which installs Debian's chromium-driver");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        // A process group of its own: chromedriver's Chromium processes end with it (killing
        // chromedriver alone left every Chromium it started running).
        let driver = Command::new(chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        eventually_async("chromedriver to start", Duration::from_secs(20), || async {
            http().get(format!("{base}/status")).send().await.ok()
        })
        .await;
        let profile = tempfile::tempdir().expect("profile");
        let caps = json!({"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
        }});
        let Value::Object(caps) = caps else { unreachable!("an object") };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&base)
            .await
            .expect("a WebDriver session");
        Browser { driver, client, _profile: profile }
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub(crate) async fn url(&self) -> String {
        self.client.current_url().await.expect("current url").to_string()
    }

    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element {css}: {e}"));
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    /// A script's answer (run through WebDriver, which the page's CSP does not govern).
    pub(crate) async fn script(&self, js: &str) -> Value {
        self.client.execute(js, Vec::new()).await.unwrap_or_else(|e| panic!("script {js}: {e}"))
    }

    /// The page's visible text, once the document has loaded.
    pub(crate) async fn text(&self) -> String {
        let js = "return document.readyState === 'complete' ? document.body.innerText : null";
        eventually_async("the page to finish loading", PATIENCE, || async {
            self.script(js).await.as_str().map(str::to_owned)
        })
        .await
    }

    /// Waits (bounded) until the page's text contains `needle`, and returns the text.
    pub(crate) async fn wait_text(&self, needle: &str) -> String {
        let what = format!("the page to say {needle:?}");
        let found = tokio::time::timeout(
            PATIENCE,
            // The outer timeout ends the wait first, so the failure can show what the page says.
            eventually_async(&what, PATIENCE * 2, || async { Some(self.text().await).filter(|t| t.contains(needle)) }),
        )
        .await;
        match found {
            Ok(t) => t,
            Err(_) => panic!("the page never said {needle:?}; it says:\n{}", self.text().await),
        }
    }

    /// Clicks a submit button and waits (bounded) until the next document has loaded: the
    /// current one is marked first, so an identical page re-rendered is still told apart.
    pub(crate) async fn submit(&self, css: &str) {
        self.script("document.documentElement.dataset.old = '1'; return true").await;
        let button = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element {css}: {e}"));
        button.click().await.expect("click");
        let fresh = "return document.readyState === 'complete' && !document.documentElement.dataset.old";
        eventually_async("the form submission to load a new page", PATIENCE, || async {
            (self.script(fresh).await == Value::Bool(true)).then_some(())
        })
        .await;
    }

    /// The session cookie the browser holds, for requests made outside it.
    pub(crate) async fn cookie_header(&self) -> String {
        let cookies = self.client.get_all_cookies().await.expect("cookies");
        cookies.iter().map(|c| format!("{}={}", c.name(), c.value())).collect::<Vec<_>>().join("; ")
    }

    /// Saves a screenshot under target/screenshots, or under docs/screenshots (the README's)
    /// when `KEYTURN_SCREENSHOTS=docs` asks to regenerate those.
    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let into = if std::env::var("KEYTURN_SCREENSHOTS").as_deref() == Ok("docs") {
            "docs/screenshots"
        } else {
            "target/screenshots"
        };
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(into);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser it started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

const PASSWORD: &str = "correct horse battery staple";

/// Creates the first administrator through the setup link, in the browser.
async fn first_admin(api: &Api, b: &Browser) {
    let svc = api.server.service.clone();
    let token = tokio::spawn(async move { svc.admins().create_setup_link(&keyturn::service::Actor::system()).await })
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
    // A realistic issuer, as the README's screenshots show it.
    let api = Api::start(&[("KEYTURN_ISSUER", "https://auth.example.com")]).await;
    let b = Browser::start().await;

    // Signed out: every page leads to the sign-in page.
    b.goto(&api.url("/admin/keys")).await;
    b.wait_text("Sign in").await;
    assert!(b.url().await.ends_with("/admin/login"), "{}", b.url().await);
    b.screenshot("sign-in").await;

    // Some activity for the overview's charts: tokens issued, one revoked.
    for i in 0..5 {
        let (_, t) = api
            .call(
                "POST",
                "/api/v1/tokens",
                Some(&api.issuer),
                Some(serde_json::json!({"sub": format!("user-{i}"), "aud": "api"})),
            )
            .await;
        if i == 0 {
            let body = serde_json::json!({"jti": t["jti"], "reason": "browser test"});
            api.call("POST", "/api/v1/revocations", Some(&api.admin), Some(body)).await;
        }
    }
    first_admin(&api, &b).await;
    let text = b.wait_text("Active keys").await;
    assert!(b.url().await.ends_with("/admin"), "setup signs the new admin in: {}", b.url().await);
    assert!(text.contains("ES256") && text.contains("alice"), "{text}");
    let pictures = b.script("return document.querySelectorAll('svg.timeline-svg').length + ',' + document.querySelectorAll('svg.chart-svg').length").await;
    assert_eq!(pictures, "1,2", "the overview draws the key timeline and the two activity charts");
    b.screenshot("overview").await;

    // Rotate now (emergency): the new kid appears in the JWKS.
    let before: Vec<String> = api.jwks().await.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
    b.goto(&api.url("/admin/keys")).await;
    b.wait_text("Timeline").await;
    // The timeline: one bar per published key, each titled with its kid.
    let drawn = b
        .script(
            "const svg = document.querySelector('svg.timeline-svg'); if (!svg) return null;
             const kids = new Set([...svg.querySelectorAll('rect title')].map(t => t.textContent.split(' key ')[1].split(' ')[0]));
             return svg.dataset.bars + ' ' + [...kids].sort().join(',')",
        )
        .await;
    let drawn = drawn.as_str().expect("the Keys page has the timeline SVG").to_owned();
    let (bars, kids) = drawn.split_once(' ').expect("bars and kids");
    let mut published = before.clone();
    published.sort();
    assert_eq!(bars, published.len().to_string(), "one bar per published key");
    assert_eq!(kids, published.join(","), "each bar titled with its kid");
    b.screenshot("keys").await;
    // Once the pending key has been published for jwks_max_age + clock_skew, every caching
    // verifier has it, and an emergency makes it sign.
    api.advance(Duration::from_secs(6 * 60 + 1)).await;
    b.submit("a.button.danger").await;
    let confirm = b.wait_text("already published").await;
    assert!(
        confirm.contains("signs at once") && confirm.contains("new pending key"),
        "the confirmation says what an emergency does: {confirm}"
    );
    b.screenshot("rotate-confirm").await;
    b.submit("button[type=submit].danger").await;
    b.wait_text("ES256 rotated: key").await;
    let after: Vec<String> = api.jwks().await.keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
    let new: Vec<&String> = after.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(new.len(), 1, "one new key published (the next pending one): {before:?} -> {after:?}");

    // Revoke that key: it leaves the JWKS.
    let kid = new[0].clone();
    b.goto(&api.url(&format!("/admin/keys/{kid}/revoke"))).await;
    b.wait_text("invalidates 0 unexpired tokens").await;
    b.fill("#reason", "browser test").await;
    b.screenshot("revoke-confirm").await;
    b.submit("button[type=submit].danger").await;
    b.wait_text(&format!("Key {kid} revoked")).await;
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
    b.wait_text("Revoked: refused from now on").await;
    assert_eq!(api.introspect(&token).await, json!({"active": false}));
    b.goto(&api.url("/admin/revocations")).await;
    b.wait_text("revoked from the dashboard").await;
    b.screenshot("revocations").await;

    // An invalid schedule is refused with a clear error, and nothing changes.
    b.goto(&api.url("/admin/schedule")).await;
    b.fill("#rotation_schedule", "every tuesday").await;
    b.submit("button[value=save]").await;
    let text = b.wait_text("nothing was changed").await;
    assert!(text.contains("invalid cron expression"), "{text}");
    assert_eq!(api.server.service.policy().schedule.as_str(), "0 0 * * MON");
    // The preview follows typing (script), and the Preview button does the same without it.
    b.goto(&api.url("/admin/schedule")).await;
    b.wait_text("Next fire times").await;
    b.fill("#rotation_schedule", "30 4 * * *").await;
    b.wait_text("04:30 UTC").await;
    b.fill("#rotation_schedule", "0 6 * * *").await;
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
