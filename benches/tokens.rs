//! Token-side benchmark: issuance over HTTP against raw ES256 signing, introspection
//! throughput and latency with 0 and 1,000,000 revocations, start-up time and memory with
//! 1,000,000 revocations. Runs the real release daemon on 127.0.0.1 as its own process;
//! bounded in time (about a minute). `cargo bench --bench tokens`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const LOAD_SECS: u64 = 5;

fn keyturn(data: &Path, args: &[&str]) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_keyturn")).args(args).env("KEYTURN_DATA_DIR", data).output().expect("keyturn");
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
            // Fixed, so tokens issued before a restart on another port stay valid.
            .env("KEYTURN_ISSUER", "http://keyturn.bench")
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
            std::thread::sleep(Duration::from_millis(5));
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

/// Runs `concurrency` workers for `secs`, each calling `make` in a loop; returns
/// (requests per second, sorted latencies in microseconds, failures).
async fn load<F, Fut>(concurrency: usize, secs: u64, make: F) -> (f64, Vec<u64>, u64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make = Arc::new(make);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (make, stop) = (make.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut fails, mut i) = (Vec::new(), 0u64, w);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if make(i).await {
                    lat.push(t.elapsed().as_micros() as u64);
                } else {
                    fails += 1;
                }
                i += concurrency;
            }
            (lat, fails)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut fails) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await.expect("worker");
        all.extend(l);
        fails += f;
    }
    all.sort_unstable();
    (all.len() as f64 / started.elapsed().as_secs_f64(), all, fails)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn raw_rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    keyturn::install_crypto_provider();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let issuer_key = keyturn(&data, &["apikey", "create", "--role", "issuer", "--name", "bench"]);
    let verifier_key = keyturn(&data, &["apikey", "create", "--role", "verifier", "--name", "bench-v"]);

    // Reference: raw ES256 sign and verify of the same claims, one thread, this process.
    let now = keyturn::clock::from_unix(1_800_000_000);
    let key = keyturn::keys::generate::generate(
        keyturn::keys::Algorithm::ES256,
        keyturn::keys::RsaBits::B2048,
        "http://bench",
        now,
        Duration::from_secs(60),
        now + Duration::from_secs(86_400),
    )
    .expect("key");
    let signer = keyturn::keys::signer::SigningKey::new(key.kid.clone(), keyturn::keys::Algorithm::ES256, &key.private);
    let claims = json!({"iss": "http://bench", "sub": "alice", "aud": "api", "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_000_600, "jti": "x".repeat(24), "client_id": "apikey:bench"});
    let sign_rate = raw_rate(2.0, || {
        signer.sign("at+jwt", &claims).expect("sign");
    });
    let token = signer.sign("at+jwt", &claims).expect("sign");
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(serde_json::to_value(&key.public).expect("jwk")).expect("jwk");
    let dkey = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("dkey");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.validate_exp = false;
    v.validate_aud = false;
    let verify_rate = raw_rate(2.0, || {
        jsonwebtoken::decode::<Value>(&token, &dkey, &v).expect("verify");
    });

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");

    let daemon = Daemon::start(&data);
    let (issue_rate, issue_lat, issue_fail) = rt.block_on(load(16, LOAD_SECS, {
        let (http, url, key) = (http.clone(), daemon.url.clone(), issuer_key.clone());
        move |i| {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            async move {
                let res = http
                    .post(format!("{url}/api/v1/tokens"))
                    .bearer_auth(&key)
                    .json(&json!({"sub": format!("user-{i}"), "aud": "api"}))
                    .send()
                    .await;
                res.map(|r| r.status().is_success()).unwrap_or(false)
            }
        }
    }));
    // Tokens to introspect.
    let tokens: Arc<Vec<String>> = Arc::new(rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..200 {
            let v: Value = http
                .post(format!("{}/api/v1/tokens", daemon.url))
                .bearer_auth(&issuer_key)
                .json(&json!({"sub": format!("intro-{i}"), "aud": "api", "ttl": "1h"}))
                .send()
                .await
                .expect("issue")
                .json()
                .await
                .expect("json");
            out.push(v["access_token"].as_str().expect("token").to_owned());
        }
        out
    }));
    let introspect = |url: String, tokens: Arc<Vec<String>>| {
        let (http, key) = (http.clone(), verifier_key.clone());
        move |i: usize| {
            let (http, key, url) = (http.clone(), key.clone(), url.clone());
            let token = tokens[i % tokens.len()].clone();
            async move {
                let res = http
                    .post(format!("{url}/oauth/introspect"))
                    .bearer_auth(&key)
                    .form(&[("token", token)])
                    .send()
                    .await;
                match res {
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        let ok = serde_json::from_str::<Value>(&text).map(|v| v["active"] == true).unwrap_or(false);
                        if !ok && i == 0 {
                            eprintln!("introspection answered {status}: {text}");
                        }
                        ok
                    }
                    Err(e) => {
                        if i == 0 {
                            eprintln!("introspection failed: {e}");
                        }
                        false
                    }
                }
            }
        }
    };
    let (intro0_rate, intro0_lat, intro0_fail) =
        rt.block_on(load(4, LOAD_SECS, introspect(daemon.url.clone(), tokens.clone())));
    let rss0 = daemon.rss_mb();
    let startup0 = daemon.startup;
    daemon.stop();

    // One million revocations, written straight into the database.
    {
        let mut db = rusqlite::Connection::open(data.join("keyturn.db")).expect("db");
        let tx = db.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare("INSERT INTO revocations (kind, value, cutoff, covers_until, reason, created_at, created_by) VALUES ('jti', ?1, 0, 4102444800, 'bench', 0, 'bench')")
                .expect("prepare");
            for i in 0..1_000_000u64 {
                stmt.execute([format!("bench-revoked-{i:016x}")]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    let daemon = Daemon::start(&data);
    let startup1m = daemon.startup;
    let (intro1m_rate, intro1m_lat, intro1m_fail) =
        rt.block_on(load(4, LOAD_SECS, introspect(daemon.url.clone(), tokens.clone())));
    let rss1m = daemon.rss_mb();
    daemon.stop();

    let profile = if cfg!(debug_assertions) { "DEBUG build (numbers not meaningful)" } else { "release build" };
    println!("keyturn token benchmark — {cores} cores, {profile}, daemon on 127.0.0.1, load from this process");
    println!("| measure | value | reference | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!("| raw ES256 sign (1 thread) | {sign_rate:.0}/s | | | |");
    println!("| raw ES256 verify (1 thread) | {verify_rate:.0}/s | | | |");
    println!(
        "| issuance over HTTP (16 conns, every token recorded) | {issue_rate:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {issue_fail} failed) | raw sign {sign_rate:.0}/s | {:.3} | ≥ 0.5 |",
        pct(&issue_lat, 0.5),
        pct(&issue_lat, 0.99),
        issue_rate / sign_rate
    );
    println!(
        "| introspection, 0 revocations (4 conns) | {intro0_rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({intro0_fail} failed) | raw verify {verify_rate:.0}/s | {:.3} | p99 < 2 ms |",
        pct(&intro0_lat, 0.5),
        pct(&intro0_lat, 0.99),
        intro0_rate / verify_rate
    );
    println!(
        "| introspection, 1,000,000 revocations (4 conns) | {intro1m_rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({intro1m_fail} failed) | raw verify {verify_rate:.0}/s | {:.3} | p99 < 2 ms |",
        pct(&intro1m_lat, 0.5),
        pct(&intro1m_lat, 0.99),
        intro1m_rate / verify_rate
    );
    println!("| start-up to ready, no revocations | {:.0} ms | | | |", startup0.as_secs_f64() * 1000.0);
    println!("| start-up to ready, 1,000,000 revocations | {:.0} ms | | | < 2 s |", startup1m.as_secs_f64() * 1000.0);
    println!("| daemon RSS, no revocations | {rss0:.1} MB | | | |");
    println!("| daemon RSS, 1,000,000 revocations | {rss1m:.1} MB | | | < 150 MB |");
}
