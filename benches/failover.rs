//! Failover benchmark: two keyturn nodes on a PostgreSQL primary with a synchronous standby
//! (`pg_basebackup`), under issuance load from four clients; the primary is stopped at once
//! (`pg_ctl -m immediate`, as a crash) and the standby promoted. Measured:
//!
//! - the failover gap: the last token answered before the kill to the first after the
//!   promotion, and the tokens answered and refused during the run;
//! - the reference, in the same run: a plain tokio-postgres client on the same multi-host URL
//!   (`target_session_attrs=read-write`) inserting a row in a loop, reconnecting after each
//!   failure. Its gap is what the database and the driver cost; keyturn's share is the rest.
//!
//! Every answered token is then looked up on the promoted standby. `./scripts/bench failover`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{issuer_key, serve};
use serde_json::json;

const LOAD_SECS: u64 = 5;
const CLIENTS: usize = 4;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A PostgreSQL tool run as the server's user (PostgreSQL refuses root).
fn pg(tool: &str, args: &[&str]) -> Output {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (scripts/bench installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .max()
        .expect("PostgreSQL's binaries");
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    let out = cmd.args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Server {
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn at(root: &Path, name: &str) -> Server {
        let dir = root.join(name);
        std::fs::create_dir(&dir).expect("dir");
        if is_root() {
            assert!(Command::new("chown").arg("postgres").arg(&dir).status().expect("chown").success());
        }
        Server { dir, port: free_port() }
    }

    fn data(&self) -> String {
        self.dir.join("db").display().to_string()
    }

    fn start(&self) {
        let options =
            format!("-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200", self.port, self.dir.display());
        let log = self.dir.join("log").display().to_string();
        pg("pg_ctl", &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]);
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = pg("psql", &["-h", "127.0.0.1", "-p", &port, "-U", "keyturn", "-d", db, "-XAtqc", sql]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn kill(&self) {
        let _ = pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
    }
}

/// Answers (time, status) and, for tokens, their jti.
#[derive(Default)]
struct Log {
    answers: Vec<(Instant, u16)>,
    jtis: Vec<String>,
}

fn main() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let primary = Server::at(root.path(), "primary");
    pg("initdb", &["-D", &primary.data(), "-A", "trust", "-U", "keyturn"]);
    primary.start();
    primary.psql("postgres", "CREATE DATABASE keyturn");
    let standby = Server::at(root.path(), "standby");
    let port = primary.port.to_string();
    let data = standby.data();
    pg(
        "pg_basebackup",
        &["-h", "127.0.0.1", "-p", &port, "-U", "keyturn", "-D", &data, "-R", "-X", "stream", "-c", "fast"],
    );
    standby.start();
    primary.psql("postgres", "ALTER SYSTEM SET synchronous_standby_names = '*'");
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let waiting = Instant::now();
    while primary.psql("postgres", "SELECT sync_state FROM pg_stat_replication") != "sync" {
        assert!(waiting.elapsed() < Duration::from_secs(30), "the standby never became synchronous");
        std::thread::sleep(Duration::from_millis(20));
    }
    primary.psql("keyturn", "CREATE TABLE probe (at timestamptz NOT NULL)");
    let url = format!(
        "postgresql://keyturn@127.0.0.1:{},127.0.0.1:{}/keyturn?target_session_attrs=read-write",
        primary.port, standby.port
    );

    let kek = root.path().join("kek");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let keyturn = |node: &str, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyturn"));
        cmd.args(args)
            .env("KEYTURN_DATA_DIR", root.path().join(node))
            .env("KEYTURN_DATABASE_URL", &url)
            .env("KEYTURN_KEK_FILE", &kek)
            .env("KEYTURN_SECRET_KEY", "YmVuY2gtY29va2llLXNlY3JldC0zMi1ieXRlcyEhISE=")
            .env("KEYTURN_ISSUER", "http://keyturn.bench")
            .env("KEYTURN_DATABASE_TIMEOUT", "1s")
            .env("KEYTURN_LOG_LEVEL", "warn");
        cmd
    };
    let init = keyturn("cli", &["init"]).output().expect("keyturn init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let key = issuer_key(keyturn("cli", &["apikey", "create", "--role", "issuer", "--name", "bench"]));
    let nodes = [serve(keyturn("a", &["serve"])), serve(keyturn("b", &["serve"]))];
    let urls: Vec<String> = nodes.iter().map(|n| format!("{}/api/v1/tokens", n.url)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (stop, log, urls, key) = (stop.clone(), log.clone(), urls.clone(), key.clone());
        clients.push(std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({"sub": "bench", "aud": "api"});
                let Ok(res) = http.post(&urls[i % urls.len()]).bearer_auth(&key).json(&body).send() else { continue };
                let (at, status) = (Instant::now(), res.status().as_u16());
                let jti = (status == 200).then(|| res.json::<serde_json::Value>().ok()).flatten();
                let mut log = log.lock().expect("lock");
                log.answers.push((at, status));
                if let Some(jti) = jti.and_then(|b| b["jti"].as_str().map(str::to_owned)) {
                    log.jtis.push(jti);
                }
            }
        }));
    }
    // The reference: a bare client of the same URL, writing a row at a time.
    let probes = Arc::new(Mutex::new(Vec::new()));
    let reference = {
        let (stop, probes, url) = (stop.clone(), probes.clone(), url.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let mut config: tokio_postgres::Config = url.parse().expect("url");
                config.connect_timeout(Duration::from_secs(1));
                while !stop.load(Ordering::Relaxed) {
                    let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await else { continue };
                    let driver = tokio::spawn(connection);
                    while !stop.load(Ordering::Relaxed) {
                        let write = client.execute("INSERT INTO probe VALUES (now())", &[]);
                        match tokio::time::timeout(Duration::from_secs(1), write).await {
                            Ok(Ok(_)) => probes.lock().expect("lock").push(Instant::now()),
                            _ => break,
                        }
                    }
                    driver.abort();
                }
            });
        })
    };

    std::thread::sleep(Duration::from_secs(LOAD_SECS));
    let killed = Instant::now();
    primary.kill();
    standby.psql("postgres", "SELECT pg_promote(true, 60)");
    let promoted = Instant::now();
    std::thread::sleep(Duration::from_secs(LOAD_SECS));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    reference.join().expect("reference");

    let log = log.lock().expect("lock");
    let ok: Vec<Instant> = log.answers.iter().filter(|(_, s)| *s == 200).map(|(t, _)| *t).collect();
    let gap = |times: &[Instant]| {
        let last = times.iter().filter(|t| **t < killed).max().copied();
        let first = times.iter().filter(|t| **t >= promoted).min().copied();
        match (last, first) {
            (Some(l), Some(f)) => (f - l, f - promoted),
            _ => panic!("no answers on one side of the failover"),
        }
    };
    let (keyturn_gap, keyturn_after) = gap(&ok);
    let (reference_gap, reference_after) = gap(&probes.lock().expect("lock"));
    let refused = log.answers.iter().filter(|(_, s)| *s == 503).count();
    let other = log.answers.iter().filter(|(_, s)| *s != 200 && *s != 503).count();
    let stored = standby.psql("keyturn", "SELECT jti FROM issued_tokens");
    let stored: std::collections::HashSet<&str> = stored.lines().collect();
    let recorded = log.jtis.iter().filter(|j| stored.contains(j.as_str())).count();
    drop(nodes);
    standby.kill();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "Failover — two nodes, {CLIENTS} clients, primary stopped at once (immediate) after {LOAD_SECS} s, standby promoted at once ({:.0} ms), {LOAD_SECS} s more",
        ms(promoted - killed)
    );
    println!();
    println!("| | gap: last answer before the kill → first after the promotion | first answer after the promotion |");
    println!("|---|---|---|");
    println!("| keyturn (issuance) | {:.0} ms | {:.0} ms |", ms(keyturn_gap), ms(keyturn_after));
    println!(
        "| reference (a bare INSERT loop, same URL) | {:.0} ms | {:.0} ms |",
        ms(reference_gap),
        ms(reference_after)
    );
    println!();
    println!(
        "tokens answered {}, refused 503 {refused}, other answers {other}; answered and found on the promoted standby: {recorded} of {}",
        ok.len(),
        log.jtis.len()
    );
    assert_eq!(recorded, log.jtis.len(), "an answered token is missing on the promoted standby");
    assert_eq!(other, 0, "only 200 and 503");
}
