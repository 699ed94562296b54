//! Logs: one JSON object per line with `--log-format json`, a request id on every request
//! line, and never a secret or a token — the whole log of a full session is searched for
//! every secret the session created.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::daemon::{client, keyturn_once, Daemon};

#[test]
fn json_logs_carry_request_ids_and_no_secrets() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_LOG_FORMAT", "json"), ("KEYTURN_LOG_LEVEL", "debug"), ("KEYTURN_ISSUER", "https://logs.test")];
    keyturn_once(&data, &["init"], &env);
    let admin = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &env).trim().to_owned();
    let d = Daemon::start(&data, &env, "logs");
    let c = client();
    let mut secrets = vec![admin.clone()];

    // A client and its secret, a client_credentials token, a minted token with a refresh
    // token, a refreshed pair, an introspection, a revocation.
    let created: Value = c
        .post(format!("{}/api/v1/clients", d.url))
        .bearer_auth(&admin)
        .json(&json!({"name": "app", "audiences": ["api"]}))
        .send()
        .expect("client")
        .json()
        .expect("json");
    let (id, secret) = (
        created["client_id"].as_str().expect("id").to_owned(),
        created["client_secret"].as_str().expect("secret").to_owned(),
    );
    secrets.push(secret.clone());
    let cc: Value = c
        .post(format!("{}/oauth/token", d.url))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .expect("token")
        .json()
        .expect("json");
    secrets.push(cc["access_token"].as_str().expect("token").to_owned());
    let minted: Value = c
        .post(format!("{}/api/v1/tokens", d.url))
        .bearer_auth(&admin)
        .json(&json!({"sub": "alice", "aud": "api", "refresh": true}))
        .send()
        .expect("mint")
        .json()
        .expect("json");
    secrets.push(minted["access_token"].as_str().expect("t").to_owned());
    secrets.push(minted["refresh_token"].as_str().expect("r").to_owned());
    let refreshed: Value = c
        .post(format!("{}/oauth/token", d.url))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", minted["refresh_token"].as_str().expect("r"))])
        .send()
        .expect("refresh")
        .json()
        .expect("json");
    secrets.push(refreshed["refresh_token"].as_str().expect("r").to_owned());
    secrets.push(refreshed["access_token"].as_str().expect("t").to_owned());
    let wrong = c
        .post(format!("{}/oauth/token", d.url))
        .basic_auth(&id, Some("not-the-secret-but-close"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .expect("wrong");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("x-request-id").is_some(), "every response names its request id");
    c.post(format!("{}/oauth/introspect", d.url))
        .bearer_auth(&admin)
        .form(&[("token", secrets[2].as_str())])
        .send()
        .expect("introspect");

    // The dashboard: the first administrator from the logged setup link, then a sign-in.
    let log = d.log_text();
    let link = log
        .split('"')
        .chain(log.split_whitespace())
        .find(|w| w.contains("/admin/setup?token="))
        .expect("setup link in the log")
        .to_owned();
    let link = link.trim_end_matches(['"', '\\', ',', '}']).to_owned();
    let setup_token = link.split_once("token=").expect("token").1.to_owned();
    let password = "a very secret dashboard password";
    secrets.push(password.to_owned());
    let form = [("token", setup_token.as_str()), ("name", "root"), ("password", password), ("confirm", password)];
    let page = format!("/admin/setup?token={setup_token}");
    crate::support::post_form_as_browser_blocking(&c, &d.url, &page, "/admin/setup", &form);
    let fields = [("name", "root"), ("password", password)];
    crate::support::post_form_as_browser_blocking(&c, &d.url, "/admin/login", "/admin/login", &fields);

    // The key-encryption key and the cookie secret, as bytes and as text.
    let kek = std::fs::read(data.join("kek")).expect("kek");
    secrets.push(base64::engine::general_purpose::STANDARD.encode(&kek));
    secrets.push(kek.iter().map(|b| format!("{b:02x}")).collect());
    // Generated into the data dir on SQLite; given (as on every cluster node) on PostgreSQL.
    let cookie_secret = std::fs::read_to_string(data.join("cookie-secret"));
    secrets.push(cookie_secret.unwrap_or_else(|_| crate::support::CLUSTER_SECRET.to_owned()));

    d.signal_and_wait("TERM", Duration::from_secs(15));
    let log = std::fs::read_to_string(root.path().join("logs.log")).expect("log");
    // The setup link is the one secret the design puts in the log on purpose: one-time,
    // 15 minutes, and spent above.
    let log_without_link = log.replace(&setup_token, "<setup token>");
    for s in &secrets {
        for piece in [s.as_str(), &s[..s.len().min(16)]] {
            assert!(!log_without_link.contains(piece), "the log contains a secret ({}…)", &piece[..6.min(piece.len())]);
        }
    }
    let mut requests = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not one JSON object per line: {line}"));
        if v["fields"]["message"] == "request" {
            requests += 1;
            assert!(
                v["fields"]["request_id"].as_str().is_some_and(|id| id.len() >= 8),
                "request line without id: {line}"
            );
        }
    }
    assert!(requests >= 8, "every request was logged ({requests})");
    let flag = keyturn_once(&data, &["--log-format", "json", "config", "check"], &[]);
    assert!(flag.contains("log_format = \"json\""), "{flag}");
}

/// Ordinary refusals are not errors: a signed-out visitor browsing the dashboard, a missing
/// page, a forged form and the browser's favicon request write no WARN or ERROR line.
#[test]
fn normal_refusals_are_not_logged_as_warnings_or_errors() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = Daemon::start(&data, &[], "refusals");
    // What start-up logged (the first-start setup link is a warning, on purpose, written just
    // after the daemon is ready) is left out.
    let before = d.wait_for_log("no administrator yet", Duration::from_secs(10)).len();
    let c = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for path in ["/admin", "/admin/keys", "/admin/tokens?sub=x", "/favicon.ico", "/nope", "/admin/nope"] {
        let res = c.get(format!("{}{path}", d.url)).send().expect("get");
        assert!(res.status().as_u16() < 500, "{path}: {}", res.status());
    }
    let res = c.post(format!("{}/admin/keys/rotate", d.url)).form(&[("alg", "ES256"), ("mode", "emergency")]).send();
    let status = res.expect("post").status();
    assert!(status.is_client_error() || status.is_redirection(), "a signed-out POST is refused: {status}");
    let res = c.get(format!("{}/api/v1/keys", d.url)).bearer_auth("kt_wrong.wrong").send().expect("get");
    assert_eq!(res.status(), 401);
    let log = d.wait_for_log("/api/v1/keys", Duration::from_secs(5));
    let after = &log[before..];
    let loud: Vec<&str> = after.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(loud.is_empty(), "ordinary refusals logged loudly:\n{}", loud.join("\n"));
}
