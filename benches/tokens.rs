//! Token-side benchmark, against references measured in the same run:
//!
//! - issuance over HTTP (`POST /api/v1/tokens`, ES256 and EdDSA) against raw signing of the
//!   same algorithm in this process, every answered token checked to be recorded;
//! - introspection throughput and latency with 0 and 1,000,000 revocations, against raw
//!   ES256 verification;
//! - start-up time and memory with 1,000,000 revocations and 1,000,000 issued-token records;
//! - JWKS latency while keys rotate.
//!
//! The real release daemon runs on 127.0.0.1 as its own process; the load comes from `wrk`
//! (C, so the load generator costs little of the 2 cores it shares with the daemon). Bounded
//! in time (about two minutes). Run through `./scripts/bench tokens`, which installs wrk.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{introspect_script, issue_script, raw_rate, signer_and_input, wrk};
use keyturn::keys::{self, Algorithm};
use serde_json::{json, Value};

const LOAD_SECS: u64 = 5;
const ISSUER: &str = "http://keyturn.bench";

fn keyturn(data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(args)
        .env("KEYTURN_DATA_DIR", data)
        .env("KEYTURN_ALGORITHMS", "ES256,EdDSA")
        .output()
        .expect("keyturn");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

struct Daemon {
    child: Child,
    url: String,
    startup: Duration,
}

impl Daemon {
    fn start(data: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .arg("serve")
            .env("KEYTURN_DATA_DIR", data)
            .env("KEYTURN_PORT", port.to_string())
            .env("KEYTURN_LOG_LEVEL", "warn")
            .env("KEYTURN_ALGORITHMS", "ES256,EdDSA")
            // Fixed, so tokens issued before a restart on another port stay valid.
            .env("KEYTURN_ISSUER", ISSUER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::new();
        loop {
            if client.get(format!("{url}/readyz")).send().map(|r| r.status().is_success()).unwrap_or(false) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "daemon did not start");
            std::thread::sleep(Duration::from_millis(2));
        }
        Daemon { child, url, startup: started.elapsed() }
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn count(db: &Path, table: &str) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0)).expect("count") as u64
}

fn issue(http: &reqwest::blocking::Client, url: &str, key: &str, body: Value) -> Value {
    let res = http.post(format!("{url}/api/v1/tokens")).bearer_auth(key).json(&body).send().expect("issue");
    assert!(res.status().is_success(), "issue: {}", res.status());
    res.json().expect("json")
}

struct Row(String, String, String, String, String);

/// GETs `path` over one keep-alive connection; returns the status.
fn get_keep_alive(conn: &mut std::io::BufReader<std::net::TcpStream>, host: &str, path: &str) -> std::io::Result<u16> {
    use std::io::{BufRead, Read, Write};
    write!(conn.get_mut(), "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")?;
    let (mut status, mut length, mut line) = (0u16, 0usize, String::new());
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(rest) = l.strip_prefix("HTTP/1.1 ") {
            status = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
        } else if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body)?;
    Ok(status)
}

/// p50, p99, max (ms) and count of latencies.
fn summary(mut lat: Vec<Duration>) -> (f64, f64, f64, usize) {
    lat.sort_unstable();
    let at = |p: f64| lat.get(((lat.len().max(1) - 1) as f64 * p) as usize).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    (at(0.5), at(0.99), at(1.0), lat.len())
}

struct Probe {
    steady: (f64, f64, f64, usize),
    during: (f64, f64, f64, usize),
    rotations: usize,
    failed: usize,
    total: usize,
}

/// (start, latency, answered 200) of each request, relative to the probe's start.
type Sample = (Duration, Duration, bool);

/// Four threads GETting the JWKS at `host` over keep-alive connections until `total` has
/// passed since `t0`.
fn probe_clients(host: &str, t0: Instant, total: Duration) -> Vec<std::thread::JoinHandle<Vec<Sample>>> {
    (0..4)
        .map(|_| {
            let host = host.to_owned();
            std::thread::spawn(move || {
                let connect = || {
                    let conn = std::net::TcpStream::connect(&host).expect("connect");
                    conn.set_nodelay(true).expect("nodelay");
                    std::io::BufReader::new(conn)
                };
                let mut samples = Vec::new();
                let mut conn = connect();
                while t0.elapsed() < total {
                    let started = t0.elapsed();
                    let ok = matches!(get_keep_alive(&mut conn, &host, "/.well-known/jwks.json"), Ok(200));
                    samples.push((started, t0.elapsed() - started, ok));
                    if !ok {
                        conn = connect();
                    }
                }
                samples
            })
        })
        .collect()
}

fn join_probe(clients: Vec<std::thread::JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    clients.into_iter().flat_map(|c| c.join().expect("client")).collect()
}

/// The same probe against nginx serving the same bytes (`./scripts/bench` passes its
/// address): this machine's floor of latency outliers when nothing at all happens.
fn nginx_floor() -> Option<(f64, f64, f64, usize)> {
    let host = std::env::var("KEYTURN_BENCH_NGINX").ok().filter(|h| !h.is_empty())?;
    let t0 = Instant::now();
    let samples = join_probe(probe_clients(&host, t0, Duration::from_secs(3)));
    Some(summary(samples.iter().filter(|(s, _, _)| *s > Duration::from_millis(200)).map(|(_, l, _)| *l).collect()))
}

/// JWKS latency while keys rotate. Four clients GET the JWKS over keep-alive connections
/// for 8 s, each request's start and latency recorded; after 3 s of steady serving an admin
/// forces an emergency rotation (a real key generation, certificate, fsynced commit and new
/// JWKS) every 400 ms, alternating algorithms. Requests whose time overlaps a rotation (from
/// its API call to 100 ms after its answer) are compared with the steady ones.
fn jwks_during_rotations(daemon: &Daemon, admin_key: &str) -> Probe {
    const STEADY: Duration = Duration::from_secs(3);
    const TOTAL: Duration = Duration::from_secs(8);
    let t0 = Instant::now();
    let clients = probe_clients(daemon.url.trim_start_matches("http://"), t0, TOTAL);
    let http = reqwest::blocking::Client::new();
    std::thread::sleep(STEADY);
    let mut windows = Vec::new();
    let mut n = 0;
    while t0.elapsed() + Duration::from_millis(500) < TOTAL {
        let alg = if n % 2 == 0 { "ES256" } else { "EdDSA" };
        let from = t0.elapsed();
        let res = http
            .post(format!("{}/api/v1/keys/rotate", daemon.url))
            .bearer_auth(admin_key)
            .json(&json!({"mode": "emergency", "alg": alg}))
            .send()
            .expect("rotate");
        assert!(res.status().is_success(), "rotate: {}", res.status());
        windows.push((from, t0.elapsed() + Duration::from_millis(100)));
        n += 1;
        std::thread::sleep(Duration::from_millis(400));
    }
    let samples = join_probe(clients);
    let warm = Duration::from_millis(200);
    let steady = samples.iter().filter(|(s, _, _)| *s > warm && *s < STEADY).map(|(_, l, _)| *l).collect();
    let during = samples
        .iter()
        .filter(|(s, l, _)| windows.iter().any(|(a, b)| *s < *b && *s + *l > *a))
        .map(|(_, l, _)| *l)
        .collect();
    Probe {
        steady: summary(steady),
        during: summary(during),
        rotations: windows.len(),
        failed: samples.iter().filter(|(_, _, ok)| !ok).count(),
        total: samples.len(),
    }
}

fn main() {
    keys::install_crypto_provider();
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is missing: run ./scripts/bench, which installs it");
        std::process::exit(1);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let db = data.join("keyturn.db");
    keyturn(&data, &["init"]);
    let issuer_key = keyturn(&data, &["apikey", "create", "--role", "issuer", "--name", "bench"]);
    let verifier_key = keyturn(&data, &["apikey", "create", "--role", "verifier", "--name", "bench-v"]);
    let admin_key = keyturn(&data, &["apikey", "create", "--role", "admin", "--name", "bench-a"]);
    let mut rows: Vec<Row> = Vec::new();

    // References: raw signing of the same claims with each algorithm, and raw ES256
    // verification, one thread, this process.
    let claims = json!({"iss": ISSUER, "sub": "bench-user", "aud": "api", "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_000_900, "jti": "06b49d200aBcDeFgHiJkLmNoP", "client_id": "apikey:bench"});
    let mut raw_sign = Vec::new();
    let mut es256 = None;
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        // The reference is the signature alone over a real token's signing input, with the
        // key parsed once: the crypto limit.
        let (key, signer, input) = signer_and_input(alg, ISSUER, &claims);
        let rate = raw_rate(2.0, || {
            signer.sign_bytes(input.as_bytes()).expect("sign");
        });
        let jwt_rate = raw_rate(1.0, || {
            signer.sign("at+jwt", &claims).expect("sign");
        });
        rows.push(Row(
            format!("raw {alg} signature (1 thread)"),
            format!("{rate:.0}/s"),
            String::new(),
            String::new(),
            String::new(),
        ));
        rows.push(Row(
            format!("{alg} JWT: claims to JSON, base64, signature (1 thread)"),
            format!("{jwt_rate:.0}/s"),
            format!("raw {rate:.0}/s"),
            format!("{:.2}", jwt_rate / rate),
            String::new(),
        ));
        raw_sign.push((alg, rate));
        if alg == Algorithm::ES256 {
            es256 = Some((signer.sign("at+jwt", &claims).expect("sign"), key.public));
        }
    }
    let (token, public) = es256.expect("ES256 key");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(serde_json::to_value(&public).expect("jwk")).expect("jwk");
    let dkey = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("dkey");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_exp = false;
    v.validate_aud = false;
    let verify_rate = raw_rate(2.0, || {
        jsonwebtoken::decode::<Value>(&token, &dkey, &v).expect("verify");
    });
    rows.push(Row(
        "raw ES256 verify (1 thread)".into(),
        format!("{verify_rate:.0}/s"),
        String::new(),
        String::new(),
        String::new(),
    ));

    let http = reqwest::blocking::Client::new();
    let daemon = Daemon::start(&data);
    let rss_idle = daemon.rss_mb();
    let startup0 = daemon.startup;

    // The floor of any request on this machine: a tiny GET, same connections as issuance.
    let floor = wrk(&format!("{}/healthz", daemon.url), 32, LOAD_SECS, None);
    rows.push(Row(
        "GET /healthz over HTTP (32 conns): the HTTP floor".into(),
        format!("{:.0}/s (p50 {:.2} ms, p99 {:.2} ms)", floor.rps, floor.p50_ms, floor.p99_ms),
        String::new(),
        String::new(),
        String::new(),
    ));

    // Issuance: 32 keep-alive connections for 5 s per algorithm.
    for (alg, raw) in &raw_sign {
        let script = issue_script(dir.path(), alg.as_str(), &issuer_key);
        let before = count(&db, "issued_tokens");
        let w = wrk(&format!("{}/api/v1/tokens", daemon.url), 32, LOAD_SECS, Some(&script));
        let recorded = count(&db, "issued_tokens") - before;
        let answered = w.requests - w.errors;
        assert!(recorded >= answered, "{alg}: {answered} tokens answered but only {recorded} recorded");
        rows.push(Row(
            format!("issuance {alg} over HTTP (32 conns, each token recorded, fsync)"),
            format!(
                "{:.0}/s (p50 {:.2} ms, p99 {:.2} ms; {answered} answered, {recorded} recorded, {} errors)",
                w.rps, w.p50_ms, w.p99_ms, w.errors
            ),
            format!("raw {alg} signature {raw:.0}/s; HTTP floor {:.0}/s", floor.rps),
            format!("{:.2} of raw, {:.2} of floor", w.rps / raw, w.rps / floor.rps),
            "≥ 0.5".into(),
        ));
    }

    // Tokens to introspect.
    let tokens: Vec<String> = (0..500)
        .map(|i| {
            issue(&http, &daemon.url, &issuer_key, json!({"sub": format!("intro-{i}"), "aud": "api", "ttl": "1h"}))
                ["access_token"]
                .as_str()
                .expect("token")
                .to_owned()
        })
        .collect();
    let intro_script = introspect_script(dir.path(), &verifier_key, &tokens);
    let introspect = |daemon: &Daemon, label: &str, conns: u32, rows: &mut Vec<Row>| {
        let w = wrk(&format!("{}/oauth/introspect", daemon.url), conns, LOAD_SECS, Some(&intro_script));
        let not_active = w.script.iter().find(|(k, _)| k == "not_ok").map_or(f64::NAN, |(_, v)| *v);
        assert_eq!(not_active, 0.0, "every introspected token is active");
        rows.push(Row(
            format!("introspection, {label} ({conns} conns)"),
            format!(
                "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} errors, {not_active} not active)",
                w.rps, w.p50_ms, w.p99_ms, w.errors
            ),
            format!("raw ES256 verify {verify_rate:.0}/s"),
            format!("{:.2}", w.rps / verify_rate),
            if w.p99_ms < 2.0 { "p99 < 2 ms — met".into() } else { "p99 < 2 ms — **not met**".into() },
        ));
    };
    introspect(&daemon, "0 revocations", 8, &mut rows);
    introspect(&daemon, "0 revocations", 2, &mut rows);

    // JWKS while keys rotate.
    let probe = jwks_during_rotations(&daemon, &admin_key);
    rows.push(Row(
        "JWKS latency, steady (4 keep-alive clients)".into(),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.2} ms ({} requests)",
            probe.steady.0, probe.steady.1, probe.steady.2, probe.steady.3
        ),
        String::new(),
        String::new(),
        String::new(),
    ));
    if let Some((p50, p99, max, n)) = nginx_floor() {
        rows.push(Row(
            "nginx, same probe, same bytes (this machine's floor)".into(),
            format!("p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.2} ms ({n} requests)"),
            String::new(),
            format!("max = {:.1}× its p99", max / p99),
            String::new(),
        ));
    }
    rows.push(Row(
        format!("JWKS latency, requests overlapping one of {} emergency rotations", probe.rotations),
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.2} ms ({} requests, {} failed of {} in the run)",
            probe.during.0, probe.during.1, probe.during.2, probe.during.3, probe.failed, probe.total
        ),
        format!("steady p99 {:.3} ms", probe.steady.1),
        format!("max = {:.1}× steady p99", probe.during.2 / probe.steady.1),
        format!(
            "no failure, max ≤ 10× p99 — {}",
            if probe.failed == 0 && probe.during.2 <= 10.0 * probe.steady.1 { "met" } else { "**not met**" }
        ),
    ));
    let rss_loaded = daemon.rss_mb();
    daemon.stop();

    // One million revocations and one million issued-token records, written straight into
    // the database (as a year of heavy use would leave them).
    let fill_started = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(&db).expect("db");
        let kid: String = conn
            .query_row("SELECT kid FROM signing_keys WHERE state = 'active' AND alg = 'ES256'", [], |r| r.get(0))
            .expect("active key");
        let tx = conn.transaction().expect("tx");
        {
            let mut rev = tx
                .prepare("INSERT INTO revocations (kind, value, cutoff, covers_until, reason, created_at, created_by) VALUES ('jti', ?1, 0, 4102444800, 'bench', 0, 'bench')")
                .expect("prepare");
            let mut tok = tx
                .prepare("INSERT INTO issued_tokens (jti, sub, kid, aud, client_id, scope, iat, exp, issued_by) VALUES (?1, ?2, ?3, '[\"api\"]', 'apikey:bench', NULL, ?4, ?5, 'apikey:bench')")
                .expect("prepare");
            for i in 0..1_000_000i64 {
                rev.execute([format!("bench-revoked-{i:016x}")]).expect("insert");
                let iat = 1_700_000_000 + i;
                tok.execute(rusqlite::params![
                    format!("{iat:09x}bench{i:011x}"),
                    format!("user-{}", i % 50_000),
                    kid,
                    iat,
                    iat + 900
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let fill = fill_started.elapsed();
    let db_mb = std::fs::metadata(&db).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    let daemon = Daemon::start(&data);
    let startup1m = daemon.startup;
    let rss1m_idle = daemon.rss_mb();
    introspect(&daemon, "1,000,000 revocations + 1,000,000 token records", 8, &mut rows);
    introspect(&daemon, "1,000,000 revocations + 1,000,000 token records", 2, &mut rows);
    let rss1m = daemon.rss_mb();
    daemon.stop();

    let goal = |ok: bool, text: &str| if ok { format!("{text} — met") } else { format!("{text} — **not met**") };
    rows.push(Row(
        "start-up to ready, empty".into(),
        format!("{:.0} ms", startup0.as_secs_f64() * 1000.0),
        String::new(),
        String::new(),
        String::new(),
    ));
    rows.push(Row(
        "start-up to ready, 1,000,000 revocations + 1,000,000 token records".into(),
        format!(
            "{:.0} ms (database {db_mb:.0} MB, filled in {:.1} s)",
            startup1m.as_secs_f64() * 1000.0,
            fill.as_secs_f64()
        ),
        String::new(),
        String::new(),
        goal(startup1m < Duration::from_secs(2), "< 2 s"),
    ));
    rows.push(Row(
        "daemon RSS, empty: idle / after load".into(),
        format!("{rss_idle:.1} MB / {rss_loaded:.1} MB"),
        String::new(),
        String::new(),
        String::new(),
    ));
    rows.push(Row(
        "daemon RSS, 1,000,000 + 1,000,000: idle / after introspection load".into(),
        format!("{rss1m_idle:.1} MB / {rss1m:.1} MB"),
        String::new(),
        String::new(),
        goal(rss1m < 150.0, "< 150 MB"),
    ));

    let profile = if cfg!(debug_assertions) { "DEBUG build (numbers not meaningful)" } else { "release build" };
    println!("keyturn token benchmark — {cores} cores, {profile}, daemon on 127.0.0.1, load from wrk -t2");
    println!("| measure | value | reference | ratio | goal |");
    println!("|---|---|---|---|---|");
    for Row(a, b, c, d, e) in rows {
        println!("| {a} | {b} | {c} | {d} | {e} |");
    }
}
