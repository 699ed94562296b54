//! The OAuth paths against the API-key paths, and keyturn against node-oidc-provider, in the
//! same run on the same machine: JWKS, `client_credentials`, introspection and (keyturn only)
//! forward auth. Each server runs pinned to core 1 (`taskset`), with wrk on core 0, so all
//! get the same one core; three rounds alternate the servers and the median round is shown.
//! keyturn records (fsyncs) every token it answers — checked here — while the peer keeps its
//! state in memory and writes nothing.
//!
//! Beside them, the ceiling of that core: nginx (one worker) serving the same JWKS bytes and
//! answering the same token POST with a fixed body (the HTTP floor), the raw ES256 signature
//! on core 1, and the CPU keyturn spends per token, in all and on recording it (its
//! committer thread, from /proc).
//!
//! A web app's sessions too: minting with a refresh token, the refresh grant (against the
//! peer's refresh grant with rotation) and logout (RFC 7009 with the issuer key, which ends
//! the session everywhere), each answered one durably recorded (checked).
//!
//! Run through `./scripts/bench oauth`, which installs wrk, nginx and the peer (benches/peer).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{
    basic, cli, form_list_script, free_port, pinned, post_script, raw_rate, rotating_script, show, signer_and_input,
    wrk_on, Pinned, Wrk,
};
use serde_json::{json, Value};

const SECS: u64 = 5;
const CONNS: u32 = 32;
const ROUNDS: usize = 3;

/// nginx with one worker on core 1: the same JWKS bytes as a static file, and `/floor`
/// answering every request with a fixed short body.
struct Nginx(Pinned);

impl Nginx {
    fn spawn(dir: &Path, jwks: &[u8]) -> Nginx {
        use std::os::unix::fs::PermissionsExt;
        let root = dir.join("nginx");
        std::fs::create_dir_all(root.join("www/.well-known")).expect("nginx dir");
        std::fs::write(root.join("www/.well-known/jwks.json"), jwks).expect("jwks file");
        // Its worker runs as nobody when the bench runs as root: the files must be readable.
        for d in [dir, &root, &root.join("www"), &root.join("www/.well-known")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let port = free_port();
        let r = root.display();
        let conf = format!(
            "worker_processes 1;\npid {r}/nginx.pid;\nerror_log {r}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {r}/b; proxy_temp_path {r}/p; fastcgi_temp_path {r}/f; uwsgi_temp_path {r}/u; scgi_temp_path {r}/s;\n\
             types {{ application/jwk-set+json json; }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    root {r}/www;\n    etag on;\n\
             location / {{ add_header Cache-Control \"public, max-age=300\"; }}\n\
             location = /floor {{ default_type application/json; return 200 '{{\"access_token\":\"x\",\"token_type\":\"Bearer\"}}'; }}\n  }}\n}}\n"
        );
        std::fs::write(root.join("nginx.conf"), conf).expect("nginx.conf");
        let binary = if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
        let mut cmd = pinned(binary);
        cmd.arg("-c").arg(root.join("nginx.conf")).args(["-g", "daemon off;"]);
        Nginx(Pinned::spawn(cmd, port, "/.well-known/jwks.json", &root.join("stderr.log")))
    }
}

/// Raw ES256 signatures a second on core 1 (this thread pinned there for the measurement):
/// the signature alone over a real token's signing input, the key parsed once.
fn raw_es256_on_core_1() -> f64 {
    let claims = json!({"iss": "https://bench", "sub": "kc_bench", "aud": "api", "iat": 1_800_000_000, "exp": 1_800_000_900, "jti": "06b49d200aBcDeFgHiJkLmNoP", "client_id": "kc_bench", "scope": "read"});
    let (_, signer, input) = signer_and_input(keyturn::keys::Algorithm::ES256, "https://bench", &claims);
    let me = std::process::id().to_string();
    let current = Command::new("taskset").args(["-c", "-p", &me]).output().expect("taskset -p");
    let cores = String::from_utf8_lossy(&current.stdout).rsplit_once(": ").map(|(_, c)| c.trim().to_owned());
    let pin = |cores: &str| {
        let ok = Command::new("taskset").args(["-c", "-p", cores, &me]).stdout(Stdio::null()).status();
        assert!(ok.is_ok_and(|s| s.success()), "taskset -p");
    };
    pin("1");
    let rate = raw_rate(2.0, || {
        signer.sign_bytes(input.as_bytes()).expect("sign");
    });
    pin(cores.as_deref().expect("the affinity list taskset printed"));
    rate
}

fn count(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.query_row("SELECT count(*) FROM issued_tokens", [], |r| r.get::<_, i64>(0)).expect("count") as u64
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
    cli(&data, &["init"]);
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
    let jwks_bytes = reqwest::blocking::get(k("/.well-known/jwks.json")).and_then(|r| r.bytes()).expect("jwks");
    let tokens: Vec<String> = (0..200)
        .map(|_| {
            post_form(&k("/oauth/token"), &client_auth, "grant_type=client_credentials")["access_token"]
                .as_str()
                .expect("t")
                .to_owned()
        })
        .collect();
    let cc_script = post_script(
        dir.path(),
        "cc",
        "/oauth/token",
        &client_auth,
        "application/x-www-form-urlencoded",
        "grant_type=client_credentials",
    );
    let body = json!({"sub": "bench", "aud": "api"}).to_string();
    let api_script =
        post_script(dir.path(), "api", "/api/v1/tokens", &format!("Bearer {issuer_key}"), "application/json", &body);
    let intro_script = rotating_script(dir.path(), "intro-client", "POST", "/oauth/introspect", &client_auth, &tokens);
    let intro_key_script = rotating_script(
        dir.path(),
        "intro-key",
        "POST",
        "/oauth/introspect",
        &format!("Bearer {verifier_key}"),
        &tokens,
    );
    let verify_script = rotating_script(dir.path(), "verify", "GET", "/auth/verify", "", &tokens);
    let session_body = json!({"sub": "bench", "aud": "api", "refresh": true, "session_label": "bench"}).to_string();
    let session_script = post_script(
        dir.path(),
        "session",
        "/api/v1/tokens",
        &format!("Bearer {issuer_key}"),
        "application/json",
        &session_body,
    );

    // The peer and nginx (one worker) on the same core, started now and idle while the
    // others are measured.
    let pport = free_port();
    let (pid, psecret) = ("bench-client", "bench-secret-for-the-peer-0123456789");
    let mut cmd = pinned("node");
    cmd.current_dir(&peer_dir).arg("oidc-provider.mjs").arg(pport.to_string()).arg(pid).arg(psecret);
    let peer = Pinned::spawn(cmd, pport, "/jwks", &dir.path().join("peer.log"));
    let p = |path: &str| format!("{}{path}", peer.url);
    let pauth = basic(pid, psecret);
    let opaque: Vec<String> = (0..200)
        .map(|_| {
            post_form(&p("/token"), &pauth, "grant_type=client_credentials&scope=read&resource=urn%3Aopaque")
                ["access_token"]
                .as_str()
                .expect("t")
                .to_owned()
        })
        .collect();
    let peer_cc_script = post_script(
        dir.path(),
        "peer-cc",
        "/token",
        &pauth,
        "application/x-www-form-urlencoded",
        "grant_type=client_credentials&scope=read",
    );
    let peer_intro_script = rotating_script(dir.path(), "peer-intro", "POST", "/token/introspection", &pauth, &opaque);
    // The ceiling of this one core: nginx serving the same JWKS bytes, and answering the
    // same client_credentials POST with a fixed body (the HTTP floor).
    let nginx = Nginx::spawn(dir.path(), &jwks_bytes);
    let n = |path: &str| format!("{}{path}", nginx.0.url);
    let floor_script = post_script(
        dir.path(),
        "floor",
        "/floor",
        &client_auth,
        "application/x-www-form-urlencoded",
        "grant_type=client_credentials",
    );

    // Sessions to refresh and end, minted ahead of each round (single use: a round must not
    // outrun them; the scripts count any it would reuse).
    let sessions = |n: usize| -> Vec<(String, String)> {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let http = reqwest::blocking::Client::new();
                        (0..n / 4)
                            .map(|_| {
                                let v: Value = http
                                    .post(k("/api/v1/tokens"))
                                    .bearer_auth(&issuer_key)
                                    .json(&json!({"sub": "bench", "aud": "api", "refresh": true}))
                                    .send()
                                    .and_then(|r| r.json())
                                    .expect("mint a session");
                                (
                                    v["access_token"].as_str().expect("at").to_owned(),
                                    v["refresh_token"].as_str().expect("rt").to_owned(),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("join")).collect()
        })
    };
    let peer_refresh_tokens = |n: usize| -> Vec<String> {
        reqwest::blocking::get(p(&format!("/bench/refresh-tokens?n={n}")))
            .and_then(|r| r.json())
            .expect("peer refresh tokens")
    };
    let spent = |db: &Path| -> u64 {
        let c = rusqlite::Connection::open(db).expect("db");
        c.query_row("SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL", [], |r| r.get::<_, i64>(0))
            .expect("count") as u64
    };
    let ended = |db: &Path| -> u64 {
        let c = rusqlite::Connection::open(db).expect("db");
        c.query_row("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL", [], |r| r.get::<_, i64>(0))
            .expect("count") as u64
    };
    let check_script = |name: &str, w: &Wrk| {
        for key in ["not_ok", "reused"] {
            let n = w.script.iter().find(|(k, _)| k == key).map_or(f64::NAN, |(_, v)| *v);
            assert_eq!(n, 0.0, "{name}: {key} {n} ({w:?})");
        }
    };

    // Rounds alternate keyturn, the peer and nginx, so a drift of this shared machine moves
    // all three; each figure is the median round.
    let mut m: std::collections::BTreeMap<&str, Vec<Wrk>> = Default::default();
    let (mut cpu, mut commit, mut cc_answered) = (Duration::ZERO, Duration::ZERO, 0u64);
    for _ in 0..ROUNDS {
        let mut run = |name: &'static str, w: Wrk| m.entry(name).or_default().push(w);
        run("kt_jwks", wrk_on(&k("/.well-known/jwks.json"), CONNS, SECS, None));
        let before = count(&db);
        let (cpu_before, commit_before) = (keyturn.cpu(None), keyturn.cpu(Some("keyturn-commit")));
        let cc = wrk_on(&k("/oauth/token"), CONNS, SECS, Some(&cc_script));
        cpu += keyturn.cpu(None).saturating_sub(cpu_before);
        commit += keyturn.cpu(Some("keyturn-commit")).saturating_sub(commit_before);
        cc_answered += cc.requests - cc.errors;
        let recorded = count(&db) - before;
        assert!(recorded >= cc.requests - cc.errors, "{} answered, {recorded} recorded", cc.requests);
        run("kt_cc", cc);
        let before = count(&db);
        let api = wrk_on(&k("/api/v1/tokens"), CONNS, SECS, Some(&api_script));
        assert!(count(&db) - before >= api.requests - api.errors);
        run("kt_api", api);
        let intro = wrk_on(&k("/oauth/introspect"), CONNS, SECS, Some(&intro_script));
        run("kt_intro_key", wrk_on(&k("/oauth/introspect"), CONNS, SECS, Some(&intro_key_script)));
        let verify = wrk_on(&k("/auth/verify"), CONNS, SECS, Some(&verify_script));
        for (name, w) in [("keyturn /auth/verify", &verify), ("keyturn introspection", &intro)] {
            let inactive = w.script.iter().find(|(k, _)| k == "not_ok").map_or(f64::NAN, |(_, v)| *v);
            let log = std::fs::read_to_string(dir.path().join("keyturn.log")).unwrap_or_default();
            assert_eq!(inactive, 0.0, "{name}: every answer is active / 200 ({w:?}); keyturn's log:\n{log}");
        }
        run("kt_intro", intro);
        run("kt_verify", verify);
        // A web app's sessions: mint with a refresh token, refresh, log out.
        let before = count(&db);
        let minted = wrk_on(&k("/api/v1/tokens"), CONNS, SECS, Some(&session_script));
        assert!(count(&db) - before >= minted.requests - minted.errors, "every session minted is recorded");
        run("kt_session", minted);
        let pairs = sessions(40_000);
        let (access, refresh): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        let refresh_script = form_list_script(
            dir.path(),
            "refresh",
            "/oauth/token",
            "",
            "grant_type=refresh_token&refresh_token=",
            &refresh,
        );
        let (before, spent_before) = (count(&db), spent(&db));
        let refreshed = wrk_on(&k("/oauth/token"), CONNS, SECS, Some(&refresh_script));
        check_script("keyturn refresh", &refreshed);
        let answered = refreshed.requests - refreshed.errors;
        assert!(count(&db) - before >= answered, "every refreshed token is recorded");
        assert!(spent(&db) - spent_before >= answered, "each refresh spent its own refresh token (no retries)");
        run("kt_refresh", refreshed);
        let logout_script =
            form_list_script(dir.path(), "logout", "/oauth/revoke", &format!("Bearer {issuer_key}"), "token=", &access);
        let before = ended(&db);
        let logout = wrk_on(&k("/oauth/revoke"), CONNS, SECS, Some(&logout_script));
        check_script("keyturn logout", &logout);
        let after = ended(&db);
        assert!(
            after - before >= logout.requests - logout.errors,
            "every logout ended its session, durably: {} answered, {} ended ({before} before)",
            logout.requests - logout.errors,
            after - before
        );
        run("kt_logout", logout);
        let peer_refresh = form_list_script(
            dir.path(),
            "peer-refresh",
            "/token",
            &pauth,
            "grant_type=refresh_token&refresh_token=",
            &peer_refresh_tokens(40_000),
        );
        let w = wrk_on(&p("/token"), CONNS, SECS, Some(&peer_refresh));
        check_script("peer refresh", &w);
        run("peer_refresh", w);
        run("peer_jwks", wrk_on(&p("/jwks"), CONNS, SECS, None));
        run("peer_cc", wrk_on(&p("/token"), CONNS, SECS, Some(&peer_cc_script)));
        run("peer_intro", wrk_on(&p("/token/introspection"), CONNS, SECS, Some(&peer_intro_script)));
        run("ng_jwks", wrk_on(&n("/.well-known/jwks.json"), CONNS, SECS, None));
        run("ng_post", wrk_on(&n("/floor"), CONNS, SECS, Some(&floor_script)));
    }
    let mut median = |name: &str| {
        let mut runs = m.remove(name).expect("measured");
        runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        runs.swap_remove(runs.len() / 2)
    };
    let (kt_jwks, kt_cc, kt_api, kt_intro, kt_intro_key, kt_verify) = (
        median("kt_jwks"),
        median("kt_cc"),
        median("kt_api"),
        median("kt_intro"),
        median("kt_intro_key"),
        median("kt_verify"),
    );
    let (peer_jwks, peer_cc, peer_intro, ng_jwks, ng_post) =
        (median("peer_jwks"), median("peer_cc"), median("peer_intro"), median("ng_jwks"), median("ng_post"));
    let (kt_session, kt_refresh, kt_logout, peer_refresh) =
        (median("kt_session"), median("kt_refresh"), median("kt_logout"), median("peer_refresh"));
    let per_token = |d: Duration| d.as_secs_f64() * 1e6 / cc_answered as f64;
    let (cc_cpu_us, cc_commit_us) = (per_token(cpu), per_token(commit));
    let (kt_rss, peer_rss) = (keyturn.rss_mb(), peer.rss_mb());
    drop((keyturn, peer, nginx));
    let sign_rate = raw_es256_on_core_1();

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
        "refresh grant with rotation (keyturn records and fsyncs each)".into(),
        format!("keyturn {} / oidc-provider {}", show(&kt_refresh), show(&peer_refresh)),
        ratio(&kt_refresh, &peer_refresh),
    ));
    rows.push((
        "sessions: mint with a refresh token (API key) vs client_credentials".into(),
        format!("{} / {}", show(&kt_session), show(&kt_cc)),
        ratio(&kt_session, &kt_cc),
    ));
    rows.push((
        "sessions: refresh vs client_credentials".into(),
        format!("{} / {}", show(&kt_refresh), show(&kt_cc)),
        ratio(&kt_refresh, &kt_cc),
    ));
    rows.push((
        "sessions: logout (RFC 7009 with the issuer key: the session ends everywhere) vs client_credentials".into(),
        format!("{} / {}", show(&kt_logout), show(&kt_cc)),
        ratio(&kt_logout, &kt_cc),
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

    rows.push((
        "JWKS ceiling: nginx on the same core, same bytes".into(),
        format!(
            "keyturn {} / nginx {}; 10× the peer would be {:.0}/s",
            show(&kt_jwks),
            show(&ng_jwks),
            10.0 * peer_jwks.rps
        ),
        format!("{:.2}× nginx", kt_jwks.rps / ng_jwks.rps),
    ));
    // What one token costs core 1 at least: the HTTP floor (nginx answering the same POST),
    // the signature, and the record (the committer's CPU per token, measured above).
    let (floor_us, sign_us) = (1e6 / ng_post.rps, 1e6 / sign_rate);
    let least = floor_us + sign_us + cc_commit_us;
    rows.push((
        "client_credentials: CPU of core 1 per token".into(),
        format!(
            "keyturn {cc_cpu_us:.1} µs in all, of which recording {cc_commit_us:.1} µs (committer thread); raw ES256 signature {sign_us:.1} µs ({sign_rate:.0}/s); HTTP floor {floor_us:.1} µs (nginx, same POST: {})",
            show(&ng_post)
        ),
        String::new(),
    ));
    rows.push((
        "client_credentials ceiling on one core: HTTP floor + signature + record".into(),
        format!(
            "{least:.1} µs = {:.0}/s at most; keyturn {:.0}/s; 10× the peer would be {:.0}/s",
            1e6 / least,
            kt_cc.rps,
            10.0 * peer_cc.rps
        ),
        format!("{:.1}× the peer at most", 1e6 / least / peer_cc.rps),
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
