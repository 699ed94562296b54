//! Dashboard forms over plain HTTP (the browser tests drive the same pages in Chromium): bad
//! input gets the form again with the reason, and changes nothing.

use keyturn::service::Actor;

use crate::api::Api;

const PW: &str = "a long enough password";

/// A signed-in dashboard session: its cookie and the CSRF token its forms carry.
struct Session {
    cookie: String,
    csrf: String,
}

/// Creates the administrator alice through a setup link.
async fn create_alice(api: &Api) {
    let svc = api.server.service.clone();
    tokio::spawn(async move {
        let link = svc.admins().create_setup_link(&Actor::cli()).await.expect("link");
        svc.admins().complete_setup(&link, "alice", PW, None).await.expect("setup");
    })
    .await
    .expect("join");
}

async fn sign_in(api: &Api) -> Session {
    create_alice(api).await;
    // The session id travels in a private (encrypted) cookie only the server can make: sign
    // in through the form to get one.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let fields = [("name", "alice"), ("password", PW)];
    let res =
        crate::support::post_form_as_browser(&client, &api.url(""), "/admin/login", "/admin/login", &fields).await;
    assert_eq!(res.status(), 303, "signed in");
    let cookie = res.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let page = client.get(api.url("/admin/clients")).header("Cookie", &cookie).send().await.expect("page");
    let html = page.text().await.expect("html");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in:\n{html}"))
        .to_owned();
    Session { cookie, csrf }
}

/// GETs a dashboard page, signed in with `s` or signed out; returns the status and the page.
async fn get(api: &Api, s: Option<&Session>, path: &str) -> (u16, String) {
    let mut req = reqwest::Client::new().get(api.url(path));
    if let Some(s) = s {
        req = req.header("Cookie", &s.cookie);
    }
    let res = req.send().await.expect("get");
    (res.status().as_u16(), res.text().await.expect("html"))
}

/// POSTs a dashboard form; returns the status and the page.
async fn post(api: &Api, s: &Session, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let mut form: Vec<(&str, &str)> = vec![("csrf", &s.csrf)];
    form.extend_from_slice(fields);
    let res =
        reqwest::Client::new().post(api.url(path)).header("Cookie", &s.cookie).form(&form).send().await.expect("post");
    (res.status().as_u16(), res.text().await.expect("html"))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_form_input_is_refused_with_the_form_and_changes_nothing() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let svc = api.server.service.clone();
    let clients = async move || svc.clients().list_clients().await.expect("clients").len();

    let (status, html) = post(
        &api,
        &s,
        "/admin/clients",
        &[("name", "orders"), ("audiences", "api"), ("scopes", ""), ("max_ttl", "10 minutes")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("10 minutes"), "the page names the bad value: {html}");
    assert_eq!(clients().await, 0, "no client was registered with another lifetime");

    let svc = api.server.service.clone();
    let tokens = async move || {
        svc.tokens()
            .list_tokens(&keyturn::records::TokenQuery { limit: 100, ..Default::default() })
            .await
            .expect("tokens")
            .len()
    };
    let (status, html) = post(
        &api,
        &s,
        "/admin/tokens",
        &[("sub", "alice"), ("aud", "api"), ("scope", ""), ("ttl", ""), ("alg", "HS256"), ("claims", "")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("HS256"), "the page names the bad algorithm: {html}");
    assert_eq!(tokens().await, 0, "no token was issued with another algorithm");
    api.stop().await;
}

/// The JWKS size: on /metrics, on the overview, with a warning past 8 KB; `jwks_x5c = false`
/// drops the certificates and brings five algorithms back under it.
#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_size_is_shown_and_warned_about_and_x5c_can_be_dropped() {
    const FIVE: (&str, &str) = ("KEYTURN_ALGORITHMS", "ES256,ES384,EdDSA,RS256,PS256");
    let mut sizes = Vec::new();
    for x5c in ["true", "false"] {
        let api = Api::start(&[FIVE, ("KEYTURN_JWKS_X5C", x5c)]).await;
        let body = reqwest::get(api.url("/.well-known/jwks.json")).await.expect("jwks").text().await.expect("text");
        let jwks: serde_json::Value = serde_json::from_str(&body).expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 10, "an active and a pending key per algorithm");
        let with_certs = keys.iter().filter(|k| k.get("x5c").is_some() && k.get("x5t#S256").is_some()).count();
        assert_eq!(with_certs, if x5c == "true" { 10 } else { 0 }, "jwks_x5c = {x5c}");
        let metrics = reqwest::get(api.url("/metrics")).await.expect("metrics").text().await.expect("text");
        assert!(metrics.contains(&format!("\nkeyturn_jwks_bytes {}\n", body.len())), "the size on /metrics");
        let s = sign_in(&api).await;
        let (_, page) = get(&api, Some(&s), "/admin").await;
        assert!(page.contains("JWKS size") && page.contains(&format!("{:.1} KB", body.len() as f64 / 1024.0)));
        let warned = page.contains("refetch it for every request");
        assert_eq!(warned, body.len() > 8 * 1024, "the warning past 8 KB ({} bytes, x5c {x5c})", body.len());
        sizes.push(body.len());
        api.stop().await;
    }
    assert!(sizes[0] > 8 * 1024 && sizes[1] < 8 * 1024, "five algorithms: {sizes:?} bytes with and without x5c");
}

/// Every `pattern` attribute in the templates compiles the way current browsers compile it
/// (`new RegExp("^(?:" + pattern + ")$", "v")`, checked with node's V8, Chromium's engine):
/// an invalid one is silently ignored by the browser. And the icon is served.
#[tokio::test(flavor = "multi_thread")]
async fn form_patterns_compile_as_browsers_compile_them_and_a_favicon_is_served() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let mut patterns = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("templates").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("template");
            for p in text.split("pattern=\"").skip(1) {
                patterns.push((path.display().to_string(), p.split('"').next().expect("attr").to_owned()));
            }
        }
    }
    assert!(!patterns.is_empty(), "the setup form has a pattern");
    for (file, p) in &patterns {
        let out = std::process::Command::new("node")
            .arg("-e")
            .arg("new RegExp('^(?:' + process.argv[1] + ')$', 'v')")
            .arg(p)
            .output()
            .expect("node (./scripts/test installs it)");
        assert!(out.status.success(), "{file}: pattern {p:?} is invalid: {}", String::from_utf8_lossy(&out.stderr));
    }
    let api = Api::start(&[]).await;
    for path in ["/favicon.ico", "/static/favicon.svg"] {
        let res = reqwest::get(api.url(path)).await.expect("icon");
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "image/svg+xml", "{path}");
    }
    api.stop().await;
}

/// The dashboard removes an administrator behind a confirmation page, and refuses the last.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_removes_an_administrator_but_never_the_last() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let svc = api.server.service.clone();
    tokio::spawn(async move { svc.admins().add_admin("bob", PW, &Actor::cli()).await.expect("bob") })
        .await
        .expect("join");
    let (status, page) = get(&api, Some(&s), "/admin/admins").await;
    assert_eq!(status, 200);
    assert!(page.contains("/admin/admins/bob/remove"), "a Remove link per administrator");
    let (status, confirm) = get(&api, Some(&s), "/admin/admins/bob/remove").await;
    assert_eq!(status, 200);
    assert!(confirm.contains("every session of theirs ends at once"), "{confirm}");
    let (status, page) = post(&api, &s, "/admin/admins/bob/remove", &[]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Administrator bob removed"), "a message says what happened");
    assert_eq!(api.server.service.admins().admin_count().await.expect("count"), 1);
    let (status, page) = post(&api, &s, "/admin/admins/alice/remove", &[]).await;
    assert_eq!(status, 409, "the last administrator stays");
    assert!(page.contains("last administrator"), "{page}");
    assert_eq!(api.server.service.admins().admin_count().await.expect("count"), 1);
    api.stop().await;
}

/// Help where it is needed: the landing page links to the dashboard, the sign-in page says how
/// to create the first administrator while there is none (and stops saying it after), and the
/// Keys page explains the key states.
#[tokio::test(flavor = "multi_thread")]
async fn the_pages_help_a_newcomer_find_their_way() {
    let api = Api::start(&[]).await;
    assert!(get(&api, None, "/").await.1.contains("href=\"/admin\""), "the landing page links to the dashboard");
    let login = get(&api, None, "/admin/login").await.1;
    assert!(login.contains("No administrator exists yet") && login.contains("keyturn admin add"), "{login}");
    let s = sign_in(&api).await;
    assert!(
        !get(&api, None, "/admin/login").await.1.contains("No administrator exists yet"),
        "once one exists, no hint"
    );
    let keys = get(&api, Some(&s), "/admin/keys").await.1;
    assert!(
        keys.contains("<th scope=\"col\">Custody</th>") && keys.contains("<td>software</td>"),
        "each key says where it lives"
    );
    // The token form says what its fields may hold; every page writes times one way.
    let svc = api.server.service.clone();
    let created = tokio::spawn(async move {
        let new = keyturn::service::clients::NewClient {
            name: "orders".into(),
            scopes: vec!["orders:read".into()],
            audiences: vec!["orders-api".into()],
            ..Default::default()
        };
        svc.clients().create_client(&new, &Actor::cli()).await.expect("client").0
    })
    .await
    .expect("join");
    let tokens = get(&api, Some(&s), "/admin/tokens").await.1;
    assert!(tokens.contains("<code>orders-api</code>") && tokens.contains("<code>orders:read</code>"), "{tokens}");
    assert!(tokens.contains("at most 1h"), "the longest lifetime");
    let clients = get(&api, Some(&s), "/admin/clients").await.1;
    let admins = get(&api, Some(&s), "/admin/admins").await.1;
    for (page, html) in [("clients", &clients), ("admins", &admins)] {
        assert!(html.contains(" UTC ("), "{page}: absolute UTC and relative, as the overview writes times");
    }
    assert!(!clients.contains(&created.created_at), "no raw RFC 3339 time on the clients page");
    // Key ids are shortened, the full value in the title and behind a copy button.
    let kid = api.server.service.published().keys[0].kid.to_string();
    assert!(keys.contains(&format!("<code title=\"{kid}\">{}…</code>", &kid[..10])), "a shortened kid");
    assert!(keys.contains(&format!("data-copy-text=\"{kid}\"")), "its copy button");
    for state in ["pending", "active", "retired", "expired", "revoked"] {
        assert!(
            keys.contains(&format!("<dt><span class=\"state state-{state}\">{state}</span></dt>")),
            "{state} explained"
        );
    }
    api.stop().await;
}

/// Every dashboard action says what it did on the page it lands on, and the overview counts
/// introspection answers.
#[tokio::test(flavor = "multi_thread")]
async fn actions_say_what_they_did() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let svc = api.server.service.clone();
    let client = tokio::spawn(async move {
        let new = keyturn::service::clients::NewClient {
            name: "orders".into(),
            scopes: vec![],
            audiences: vec!["orders-api".into()],
            ..Default::default()
        };
        svc.clients().create_client(&new, &Actor::cli()).await.expect("client").0.client_id
    })
    .await
    .expect("join");
    let (status, page) = post(&api, &s, "/admin/clients/disable", &[("id", &client)]).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("Client {client} disabled")), "{page}");
    let minted = api.mint_as_issuer("alice").await;
    let jti = minted["jti"].as_str().expect("jti").to_owned();
    let (status, page) = post(&api, &s, "/admin/revocations", &[("jti", &jti), ("reason", "test")]).await;
    assert_eq!(status, 200);
    assert!(page.contains("Revocation added"), "{page}");
    let (_, overview) = get(&api, Some(&s), "/admin").await;
    assert!(overview.contains("Introspections since start"), "{overview}");
    api.stop().await;
}

/// The form cookie and token of a fresh sign-in or setup page, for forms posted by hand.
async fn form_of(client: &reqwest::Client, url: &str) -> (String, String) {
    let page = client.get(url).send().await.expect("the form page");
    let cookie = crate::support::form_cookie(page.headers());
    (cookie, crate::support::form_token(&page.text().await.expect("html")))
}

/// The reported login CSRF: the sign-in and first-administrator forms carried no token and
/// took a POST with `Origin: https://evil.example`. Now each needs the token of its form
/// cookie and a same-site origin; a refused form changes nothing (a setup link stays usable).
#[tokio::test(flavor = "multi_thread")]
async fn sign_in_and_setup_refuse_forms_sent_from_another_site() {
    let api = Api::start(&[]).await;
    let svc = api.server.service.clone();
    let link = tokio::spawn(async move { svc.admins().create_setup_link(&Actor::cli()).await.expect("link") })
        .await
        .expect("join")
        .to_string();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let origin = api.url("");
    let setup_url = api.url(&format!("/admin/setup?token={link}"));
    let (cookie, token) = form_of(&client, &setup_url).await;
    let setup = [("token", link.as_str()), ("name", "alice"), ("password", PW), ("confirm", PW)];
    let post =
        |path: &str, cookie: Option<&str>, token: Option<&str>, headers: &[(&str, &str)], fields: &[(&str, &str)]| {
            let mut req = client.post(api.url(path));
            if let Some(c) = cookie {
                req = req.header("Cookie", c);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let mut all: Vec<(&str, &str)> = token.map(|t| ("csrf", t)).into_iter().collect();
            all.extend_from_slice(fields);
            req.form(&all).send()
        };
    let refused = [
        ("no form token", None, None, vec![]),
        ("a token without its cookie", None, Some(token.as_str()), vec![]),
        ("the cookie without the token", Some(cookie.as_str()), None, vec![]),
        ("a token of another cookie", Some(cookie.as_str()), Some("forged-token"), vec![]),
        (
            "Origin: https://evil.example",
            Some(cookie.as_str()),
            Some(token.as_str()),
            vec![("Origin", "https://evil.example")],
        ),
        (
            "Origin: null from another site (a sandboxed frame)",
            Some(cookie.as_str()),
            Some(token.as_str()),
            vec![("Origin", "null"), ("Sec-Fetch-Site", "cross-site")],
        ),
        (
            "Sec-Fetch-Site: cross-site",
            Some(cookie.as_str()),
            Some(token.as_str()),
            vec![("Sec-Fetch-Site", "cross-site")],
        ),
    ];
    for (what, cookie, token, headers) in &refused {
        let res = post("/admin/setup", *cookie, *token, headers, &setup).await.expect("setup");
        assert_eq!(res.status(), 403, "setup with {what}");
        assert!(res
            .headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap_or("").contains("keyturn-session")));
        assert!(res.text().await.expect("page").contains("sent from another site"), "{what}: the page says why");
    }
    let svc = api.server.service.clone();
    assert_eq!(tokio::spawn(async move { svc.admins().admin_count().await }).await.expect("join").expect("count"), 0);
    // The same form from this site creates the administrator. (A browser's own form sends
    // `Origin: null` under `Referrer-Policy: no-referrer`, with `Sec-Fetch-Site: same-origin`.)
    let same = [("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")];
    let res = post("/admin/setup", Some(&cookie), Some(&token), &same, &setup).await.expect("setup");
    assert_eq!(res.status(), 303, "setup from this site");

    let (cookie, token) = form_of(&client, &api.url("/admin/login")).await;
    let login = [("name", "alice"), ("password", PW)];
    for (what, with_cookie, with_token, headers) in &refused {
        let c = with_cookie.map(|_| cookie.as_str());
        let t = with_token.map(|t| if t == "forged-token" { "forged-token" } else { token.as_str() });
        let res = post("/admin/login", c, t, headers, &login).await.expect("sign in");
        assert_eq!(res.status(), 403, "sign-in with {what}");
    }
    let res = post("/admin/login", Some(&cookie), Some(&token), &same, &login).await.expect("sign in");
    assert_eq!(res.status(), 303, "sign-in from this site");
    api.stop().await;
}

/// The reported race: 200 wrong passwords sent at once from one address ran 200 argon2
/// checks and got no 429, because failures were recorded after the check. Now each attempt
/// reserves its failure before argon2 runs: at most the five allowed are ever checked, the
/// rest are refused with 429 at once, and the right password is limited too until the
/// window passes.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_wrong_passwords_from_one_address_run_at_most_the_allowed_checks() {
    let api = Api::start(&[]).await;
    create_alice(&api).await;
    let hashing = async || {
        let text = api.server.service.metrics_text().await.expect("metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("keyturn_password_hashing_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("keyturn_password_hashing_total")
    };
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let (cookie, token) = form_of(&client, &api.url("/admin/login")).await;
    let before = hashing().await;
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (client, url, cookie, token) = (client.clone(), api.url("/admin/login"), cookie.clone(), token.clone());
        let name = if i % 2 == 0 { "alice".to_owned() } else { format!("guess{i}") };
        attempts.spawn(async move {
            let form = [("csrf", token.as_str()), ("name", name.as_str()), ("password", "not the password")];
            client.post(url).header("Cookie", cookie).form(&form).send().await.expect("sign in").status().as_u16()
        });
    }
    let statuses = attempts.join_all().await;
    let checks = hashing().await - before;
    let refused = statuses.iter().filter(|s| **s == 401).count() as u64;
    let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert!(checks <= 5, "{checks} argon2 checks for 200 concurrent attempts (at most 5 allowed)");
    assert_eq!(refused, checks, "each check is one refusal: {statuses:?}");
    assert_eq!(refused + limited, 200, "every other attempt is limited: {statuses:?}");
    let fields = [("csrf", token.as_str()), ("name", "alice"), ("password", PW)];
    let res =
        client.post(api.url("/admin/login")).header("Cookie", &cookie).form(&fields).send().await.expect("sign in");
    assert_eq!(res.status(), 429, "the right password from the limited address waits too");
    assert_eq!(hashing().await - before, checks, "and costs no check");
    api.stop().await;
}

/// The reported case: the pages that show a new client secret or API key once carried no
/// `Cache-Control: no-store` (`/oauth/token` did). Now no dashboard answer may be cached.
#[tokio::test(flavor = "multi_thread")]
async fn pages_that_show_a_secret_once_are_never_cached() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let client = reqwest::Client::new();
    let form = |fields: &[(&'static str, &str)]| {
        let mut all = vec![("csrf", s.csrf.clone())];
        all.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
        all
    };
    let shown = [
        ("/admin/apikeys", form(&[("name", "reporting"), ("role", "verifier")]), "kt_"),
        ("/admin/clients", form(&[("name", "orders"), ("audiences", "api"), ("scopes", ""), ("max_ttl", "")]), "kc_"),
    ];
    for (path, fields, secret) in shown {
        let res = client.post(api.url(path)).header("Cookie", &s.cookie).form(&fields).send().await.expect("post");
        assert_eq!(res.status(), 200, "{path}");
        let cache = res.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert!(res.text().await.expect("html").contains(secret), "{path} shows the new secret");
        assert_eq!(cache.as_deref(), Some("no-store"), "{path}");
    }
    for path in ["/admin", "/admin/login", "/admin/clients", "/admin/keys"] {
        let res = client.get(api.url(path)).header("Cookie", &s.cookie).send().await.expect("get");
        let cache = res.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(cache.as_deref(), Some("no-store"), "{path}");
    }
    api.stop().await;
}

/// A subject's page lists the sessions the apps minted for it (started, last refreshed,
/// device, minted by) and ends one, or all, after a confirmation, audited; the tokens list
/// says why a revoked token is revoked; the API keys table says when each was last used.
#[tokio::test(flavor = "multi_thread")]
async fn a_subjects_sessions_are_listed_and_ended_from_the_dashboard() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let mint = |label: &'static str| {
        let body = serde_json::json!({"sub": "alice", "aud": "web", "refresh": true, "session_label": label});
        let (api, key) = (&api, api.issuer.clone());
        async move {
            let (status, v) = api.call("POST", "/api/v1/tokens", Some(&key), Some(body)).await;
            assert_eq!(status, 200, "{v}");
            v
        }
    };
    let (laptop, phone) = (mint("Firefox on a laptop").await, mint("Safari on a phone").await);
    let (status, page) = get(&api, Some(&s), "/admin/subjects/alice").await;
    assert_eq!(status, 200, "{page}");
    for text in ["Firefox on a laptop", "Safari on a phone", "apikey:backend", "End all 2 running sessions"] {
        assert!(page.contains(text), "{text}: {page}");
    }
    let laptop_sid = laptop["session_id"].as_str().expect("sid");
    let (status, confirm) = get(&api, Some(&s), &format!("/admin/subjects/alice/end?session={laptop_sid}")).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("one device") && confirm.contains("End this session"), "{confirm}");
    // Ending needs the form's CSRF token.
    let no_csrf = reqwest::Client::new()
        .post(api.url("/admin/subjects/alice/end"))
        .header("Cookie", &s.cookie)
        .form(&[("session", laptop_sid), ("reason", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(no_csrf.status(), 403);
    let (status, after) =
        post(&api, &s, "/admin/subjects/alice/end", &[("session", laptop_sid), ("reason", "lost laptop")]).await;
    assert_eq!(status, 200, "{after}");
    assert!(after.contains("Session ended") && after.contains("lost laptop"), "{after}");
    assert!(!active(&api, &laptop).await && active(&api, &phone).await, "one device logged out");
    let (_, tokens) = get(&api, Some(&s), "/admin/tokens?sub=alice").await;
    assert!(tokens.contains("its session ended (a logout)"), "the tokens list says why: {tokens}");
    let (status, _) = post(&api, &s, "/admin/subjects/alice/end", &[("session", ""), ("reason", "")]).await;
    assert_eq!(status, 200);
    assert!(!active(&api, &phone).await, "logged out everywhere");
    let (_, audit) = get(&api, Some(&s), "/admin/audit?action=session.").await;
    assert!(audit.contains("admin:alice") && audit.contains("lost laptop"), "audited with who and why: {audit}");
    let (_, clients) = get(&api, Some(&s), "/admin/clients").await;
    assert!(clients.contains("Last used") && clients.contains("never"), "{clients}");
    api.stop().await;
}

/// Whether introspection says the access token of a mint answer is active.
async fn active(api: &Api, minted: &serde_json::Value) -> bool {
    api.active(minted["access_token"].as_str().expect("token")).await
}

/// The reported chart bugs: events at 06:xx were drawn under 05:00 and today's under
/// yesterday, because periods ran back from "now" instead of whole UTC hours and days; and
/// an empty chart said nothing.
#[tokio::test(flavor = "multi_thread")]
async fn activity_is_counted_in_whole_utc_hours_and_days_and_an_empty_chart_says_so() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let (_, empty) = get(&api, Some(&s), "/admin").await;
    assert!(empty.contains("nothing yet"), "{empty}");
    // The fake clock starts at 2026-06-01 12:00 UTC; at 12:20 a token is minted.
    api.advance(std::time::Duration::from_secs(20 * 60)).await;
    api.mint_as_issuer("carol").await;
    let svc = api.server.service.clone();
    let (hours, days) = tokio::spawn(async move {
        (svc.activity(24, 3600).await.expect("hours"), svc.activity(30, 86_400).await.expect("days"))
    })
    .await
    .expect("join");
    let last_hour = hours.last().expect("hours");
    assert_eq!((last_hour.start.hour(), last_hour.start.minute(), last_hour.issued), (12, 0, 1), "the 12:00 hour");
    let today = days.last().expect("days");
    assert_eq!((today.start.day(), today.start.hour(), today.issued), (1, 0, 1), "today, 2026-06-01");
    let (_, page) = get(&api, Some(&s), "/admin").await;
    assert!(page.contains("12:00: 1 tokens issued"), "{page}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_form_makes_a_client_with_public_keys_and_no_secret() {
    let api = Api::start(&[]).await;
    let s = sign_in(&api).await;
    let (_, jwk) = crate::support::p256_key();
    let jwks = serde_json::json!({"keys": [jwk]}).to_string();
    let fields = [("name", "batch"), ("audiences", "api"), ("scopes", ""), ("max_ttl", ""), ("require_dpop", "true")];
    let with = |extra: &[(&'static str, &'static str)]| fields.iter().chain(extra).copied().collect::<Vec<_>>();
    let (status, page) =
        post(&api, &s, "/admin/clients", &with(&[("jwks_uri", "https://batch.example/jwks.json")])).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("it authenticates with private_key_jwt"), "{page}");
    assert!(!page.contains("Secret of"), "no secret is shown");
    assert!(page.contains("private_key_jwt (https://batch.example/jwks.json), DPoP required"), "{page}");
    let mut inline = fields.iter().map(|(k, v)| (*k, v.to_string())).collect::<Vec<_>>();
    inline.push(("jwks", jwks));
    let inline: Vec<(&str, &str)> = inline.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, page) = post(&api, &s, "/admin/clients", &inline).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.matches("private_key_jwt").count() >= 2, "{page}");
    for (extra, why) in [
        (with(&[("jwks", "{not json")]), "not JSON"),
        (with(&[("jwks_uri", "http://batch.example/jwks.json")]), "https"),
        (with(&[("jwks_uri", "https://a.example/j"), ("jwks", "{}")]), "not both"),
    ] {
        let (status, page) = post(&api, &s, "/admin/clients", &extra).await;
        assert_eq!(status, 400, "{page}");
        assert!(page.contains(why) && page.contains("nothing was created"), "{why}: {page}");
    }
    let listed = api.server.service.clients().list_clients().await.expect("clients");
    assert_eq!(listed.len(), 2, "the refused forms made nothing");
    assert!(listed.iter().all(|c| c.dpop_required && c.token_endpoint_auth_method == "private_key_jwt"));
    api.stop().await;
}
