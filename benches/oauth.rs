//! The OAuth paths against the API-key paths, and keyturn against node-oidc-provider, in the
//! same run on the same machine: JWKS, `client_credentials`, introspection and (keyturn only)
//! forward auth. Each server runs alone, pinned to core 1 (`taskset`), with wrk on core 0, so
//! both get the same one core. keyturn records (fsyncs) every token it answers — checked
//! here — while the peer keeps its state in memory and writes nothing.
//!
//! Run through `./scripts/bench oauth`, which installs wrk and the peer (benches/peer).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{post_script, rotating_script, wrk_on, Wrk};
use serde_json::{json, Value};

const SECS: u64 = 5;
const CONNS: u32 = 32;

/// A server process pinned to core 1.
struct Pinned {
    child: Child,
    url: String,
}

impl Pinned {
    fn spawn(mut cmd: Command, port: u16, ready: &str, log: &Path) -> Pinned {
        let log = std::fs::File::create(log).expect("log");
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn (taskset, from util-linux)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        let started = Instant::now();
        while !http.get(format!("{url}{ready}")).send().is_ok_and(|r| r.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(60), "{url}{ready} never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        Pinned { child, url }
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn pinned(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"]).arg(program);
    cmd
}

fn cli(data: &Path, args: &[&str]) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_keyturn")).args(args).env("KEYTURN_DATA_DIR", data).output().expect("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

fn count(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.query_row("SELECT count(*) FROM issued_tokens", [], |r| r.get::<_, i64>(0)).expect("count") as u64
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn post_form(url: &str, auth: &str, body: &str) -> Value {
    let res = reqwest::blocking::Client::new()
        .post(url)
        .header("Authorization", auth)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .expect("post");
    assert!(res.status().is_success(), "{url}: {}", res.status());
    res.json().expect("json")
}

fn show(w: &Wrk) -> String {
    format!("{:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {} errors)", w.rps, w.p50_ms, w.p99_ms, w.errors)
}

fn main() {
    keyturn::keys::install_crypto_provider();
    for tool in ["wrk", "taskset", "node"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} is missing: run ./scripts/bench oauth, which installs it");
            std::process::exit(1);
        }
    }
    let peer_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peer");
    assert!(
        peer_dir.join("node_modules/oidc-provider").is_dir(),
        "run ./scripts/bench oauth: it installs oidc-provider"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db = data.join("keyturn.db");
    let issuer_key = cli(&data, &["apikey", "create", "--role", "issuer", "--name", "bench"]);
    let verifier_key = cli(&data, &["apikey", "create", "--role", "verifier", "--name", "bench-v"]);
    let admin_key = cli(&data, &["apikey", "create", "--role", "admin", "--name", "bench-a"]);

    let port = free_port();
    let mut cmd = pinned(env!("CARGO_BIN_EXE_keyturn"));
    cmd.arg("serve")
        .env("KEYTURN_DATA_DIR", &data)
        .env("KEYTURN_PORT", port.to_string())
        .env("KEYTURN_LOG_LEVEL", "warn");
    let keyturn = Pinned::spawn(cmd, port, "/readyz", &dir.path().join("keyturn.log"));
    let client = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/clients", keyturn.url))
        .bearer_auth(&admin_key)
        .json(&json!({"name": "bench", "scopes": ["read"], "audiences": ["api"]}))
        .send()
        .expect("client")
        .json::<Value>()
        .expect("json");
    let (id, secret) = (client["client_id"].as_str().expect("id"), client["client_secret"].as_str().expect("secret"));
    let client_auth = basic(id, secret);
    let k = |path: &str| format!("{}{path}", keyturn.url);
    let mut rows: Vec<(String, String, String)> = Vec::new();

    let kt_jwks = wrk_on(&k("/.well-known/jwks.json"), CONNS, SECS, None);
    let script = post_script(
        dir.path(),
        "cc",
        "/oauth/token",
        &client_auth,
        "application/x-www-form-urlencoded",
        "grant_type=client_credentials",
    );
    let before = count(&db);
    let kt_cc = wrk_on(&k("/oauth/token"), CONNS, SECS, Some(&script));
    let recorded = count(&db) - before;
    assert!(recorded >= kt_cc.requests - kt_cc.errors, "{} answered, {recorded} recorded", kt_cc.requests);
    let body = json!({"sub": "bench", "aud": "api"}).to_string();
    let script =
        post_script(dir.path(), "api", "/api/v1/tokens", &format!("Bearer {issuer_key}"), "application/json", &body);
    let before = count(&db);
    let kt_api = wrk_on(&k("/api/v1/tokens"), CONNS, SECS, Some(&script));
    let recorded_api = count(&db) - before;
    assert!(recorded_api >= kt_api.requests - kt_api.errors);
    let tokens: Vec<String> = (0..200)
        .map(|_| {
            post_form(&k("/oauth/token"), &client_auth, "grant_type=client_credentials")["access_token"]
                .as_str()
                .expect("t")
                .to_owned()
        })
        .collect();
    let script = rotating_script(dir.path(), "intro-client", "POST", "/oauth/introspect", &client_auth, &tokens);
    let kt_intro = wrk_on(&k("/oauth/introspect"), CONNS, SECS, Some(&script));
    let script = rotating_script(
        dir.path(),
        "intro-key",
        "POST",
        "/oauth/introspect",
        &format!("Bearer {verifier_key}"),
        &tokens,
    );
    let kt_intro_key = wrk_on(&k("/oauth/introspect"), CONNS, SECS, Some(&script));
    let script = rotating_script(dir.path(), "verify", "GET", "/auth/verify", "", &tokens);
    let kt_verify = wrk_on(&k("/auth/verify"), CONNS, SECS, Some(&script));
    for (name, w) in [("keyturn /auth/verify", &kt_verify), ("keyturn introspection", &kt_intro)] {
        let inactive = w.script.iter().find(|(k, _)| k == "not_ok").map_or(f64::NAN, |(_, v)| *v);
        let log = std::fs::read_to_string(dir.path().join("keyturn.log")).unwrap_or_default();
        assert_eq!(inactive, 0.0, "{name}: every answer is active / 200 ({w:?}); keyturn's log:\n{log}");
    }
    let kt_rss = keyturn.rss_mb();
    drop(keyturn);

    // The peer, on the same core, alone.
    let pport = free_port();
    let (pid, psecret) = ("bench-client", "bench-secret-for-the-peer-0123456789");
    let mut cmd = pinned("node");
    cmd.current_dir(&peer_dir).arg("oidc-provider.mjs").arg(pport.to_string()).arg(pid).arg(psecret);
    let peer = Pinned::spawn(cmd, pport, "/jwks", &dir.path().join("peer.log"));
    let p = |path: &str| format!("{}{path}", peer.url);
    let pauth = basic(pid, psecret);
    let peer_jwks = wrk_on(&p("/jwks"), CONNS, SECS, None);
    let script = post_script(
        dir.path(),
        "peer-cc",
        "/token",
        &pauth,
        "application/x-www-form-urlencoded",
        "grant_type=client_credentials&scope=read",
    );
    let peer_cc = wrk_on(&p("/token"), CONNS, SECS, Some(&script));
    let opaque: Vec<String> = (0..200)
        .map(|_| {
            post_form(&p("/token"), &pauth, "grant_type=client_credentials&scope=read&resource=urn%3Aopaque")
                ["access_token"]
                .as_str()
                .expect("t")
                .to_owned()
        })
        .collect();
    let script = rotating_script(dir.path(), "peer-intro", "POST", "/token/introspection", &pauth, &opaque);
    let peer_intro = wrk_on(&p("/token/introspection"), CONNS, SECS, Some(&script));
    let peer_rss = peer.rss_mb();
    drop(peer);

    let ratio = |a: &Wrk, b: &Wrk| format!("{:.1}×", a.rps / b.rps);
    rows.push((
        "JWKS".into(),
        format!("keyturn {} / oidc-provider {}", show(&kt_jwks), show(&peer_jwks)),
        ratio(&kt_jwks, &peer_jwks),
    ));
    rows.push((
        "client_credentials, ES256 JWT (keyturn records and fsyncs each)".into(),
        format!("keyturn {} / oidc-provider {}", show(&kt_cc), show(&peer_cc)),
        ratio(&kt_cc, &peer_cc),
    ));
    rows.push((
        "introspection (keyturn: its JWTs, client-authenticated; peer: its opaque tokens)".into(),
        format!("keyturn {} / oidc-provider {}", show(&kt_intro), show(&peer_intro)),
        ratio(&kt_intro, &peer_intro),
    ));
    rows.push((
        "memory after load (RSS)".into(),
        format!("keyturn {kt_rss:.1} MB / oidc-provider {peer_rss:.1} MB"),
        format!("{:.2}×", kt_rss / peer_rss),
    ));
    rows.push((
        "keyturn: /oauth/token (client secret) vs /api/v1/tokens (API key)".into(),
        format!("{} / {}", show(&kt_cc), show(&kt_api)),
        ratio(&kt_cc, &kt_api),
    ));
    rows.push((
        "keyturn: introspection by client vs by verifier API key".into(),
        format!("{} / {}", show(&kt_intro), show(&kt_intro_key)),
        ratio(&kt_intro, &kt_intro_key),
    ));
    rows.push((
        "keyturn: /auth/verify vs introspection by verifier API key".into(),
        format!("{} / {}", show(&kt_verify), show(&kt_intro_key)),
        ratio(&kt_verify, &kt_intro_key),
    ));

    let profile = if cfg!(debug_assertions) { "DEBUG build (numbers not meaningful)" } else { "release build" };
    println!(
        "OAuth paths — {profile}; each server alone on core 1 (taskset), wrk -t1 -c{CONNS} -d{SECS}s on core 0, 127.0.0.1"
    );
    println!("| measure | values | ratio |");
    println!("|---|---|---|");
    for (a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
}
