//! Cluster benchmark, one SQLite node as the reference measured in the same run:
//!
//! - issuance (ES256, every answered token checked to be recorded), introspection and JWKS on
//!   one SQLite node, one PostgreSQL node and three PostgreSQL nodes on one database, with
//!   the same load generator (wrk; for three nodes one wrk per node at the same time, the
//!   same 32 connections in all);
//! - revocation propagation: a revocation made on one node, until another node's
//!   introspection calls the token inactive (p50 / p99).
//!
//! Needs a PostgreSQL server: `./scripts/bench cluster` starts one of its own and passes it as
//! `KEYTURN_BENCH_POSTGRES`. Talks only to 127.0.0.1, bounded in time (about a minute).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{introspect_script, issue_script, serve, wrk, Node, Wrk};
use serde_json::{json, Value};

const LOAD_SECS: u64 = 5;
const ISSUER: &str = "http://keyturn.bench";
const SECRET: &str = "YmVuY2gtY29va2llLXNlY3JldC0zMi1ieXRlcyEhISE=";

/// Where a setup keeps its state: the SQLite file in the data dir, or a PostgreSQL database.
struct Setup {
    name: &'static str,
    database_url: Option<String>,
    kek: PathBuf,
    root: PathBuf,
}

impl Setup {
    fn env(&self, data: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("KEYTURN_DATA_DIR".into(), data.display().to_string()),
            ("KEYTURN_KEK_FILE".into(), self.kek.display().to_string()),
            ("KEYTURN_SECRET_KEY".into(), SECRET.into()),
            ("KEYTURN_ISSUER".into(), ISSUER.into()),
            ("KEYTURN_LOG_LEVEL".into(), "warn".into()),
        ];
        if let Some(url) = &self.database_url {
            env.push(("KEYTURN_DATABASE_URL".into(), url.clone()));
        }
        env
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .args(args)
            .envs(self.env(&self.root.join("cli")))
            .output()
            .expect("keyturn");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    }

    fn node(&self, i: usize) -> Node {
        // One SQLite node uses the CLI's data dir: that is where its database is.
        let data = if self.database_url.is_some() { self.root.join(format!("node{i}")) } else { self.root.join("cli") };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyturn"));
        cmd.arg("serve").envs(self.env(&data));
        serve(cmd)
    }

    fn recorded(&self) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let n = runtime.block_on(async {
            let store = keyturn::store::Store::open_at(&self.location()).expect("open");
            store
                .read(|c| {
                    Box::pin(async move {
                        c.query_one("SELECT count(*) FROM issued_tokens", keyturn::store::args![]).await?.get::<i64>(0)
                    })
                })
                .await
                .expect("count")
        });
        n as u64
    }

    fn location(&self) -> keyturn::store::Location {
        match &self.database_url {
            Some(url) => keyturn::store::Location::Postgres(Box::new(keyturn::store::Target::parse(url).expect("url"))),
            None => keyturn::store::Location::File(self.root.join("cli").join("keyturn.db")),
        }
    }
}

fn load(nodes: &[Node], path: &str, script: Option<&Path>) -> Wrk {
    let per = 32 / nodes.len() as u32;
    let runs: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (url, script) = (format!("{}{path}", n.url), script.map(Path::to_owned));
            std::thread::spawn(move || wrk(&url, per, LOAD_SECS, script.as_deref()))
        })
        .collect();
    let results: Vec<Wrk> = runs.into_iter().map(|r| r.join().expect("wrk")).collect();
    let mut total = Wrk::default();
    for w in &results {
        total.rps += w.rps;
        total.requests += w.requests;
        total.errors += w.errors;
        total.p50_ms = total.p50_ms.max(w.p50_ms);
        total.p99_ms = total.p99_ms.max(w.p99_ms);
    }
    total.script = results.into_iter().flat_map(|w| w.script).collect();
    total
}

/// Processor time in seconds, from `/proc`: of the processes named `comm` (`keyturn`,
/// `postgres`, `wrk`), and of the whole machine (busy, every core).
fn cpu_seconds() -> (std::collections::HashMap<String, f64>, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let mut by_name = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state …`: the fields after the closing parenthesis, utime and stime 14th and 15th.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let used = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *by_name.entry(comm).or_insert(0.0) += (used(11) + used(12)) / tick;
        if entry.file_name().to_str() == Some(&std::process::id().to_string()) {
            // The children this bench ran and reaped (wrk, once it exited): cutime and cstime.
            by_name.insert("reaped".into(), (used(13) + used(14)) / tick);
        }
    }
    let busy = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let cpu: Vec<f64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
            Some(cpu.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum::<f64>() / tick)
        })
        .unwrap_or(0.0);
    (by_name, busy)
}

/// Where the cores went during one load: cores used (processor seconds per second of load)
/// by keyturn, PostgreSQL, wrk, and by everything.
fn cores_used(before: &(std::collections::HashMap<String, f64>, f64), secs: f64) -> String {
    let after = cpu_seconds();
    let of = |name: &str| (after.0.get(name).unwrap_or(&0.0) - before.0.get(name).unwrap_or(&0.0)) / secs;
    format!(
        "keyturn {:.2}, PostgreSQL {:.2}, wrk {:.2}; all {:.2}",
        of("keyturn"),
        of("postgres"),
        of("wrk") + of("reaped"),
        (after.1 - before.1) / secs
    )
}

struct Measured {
    issue: Wrk,
    /// Cores used during the issuance load, by whom.
    issue_cores: String,
    answered: u64,
    recorded: u64,
    introspect: Wrk,
    jwks: Wrk,
}

fn measure(setup: &Setup, nodes: &[Node], dir: &Path) -> Measured {
    let refs: Vec<&Node> = nodes.iter().collect();
    setup.cli(&["init"]);
    let issuer = setup.cli(&["apikey", "create", "--role", "issuer", "--name", "bench-i"]);
    let verifier = setup.cli(&["apikey", "create", "--role", "verifier", "--name", "bench-v"]);
    keys_known(&refs, &issuer, &verifier);
    let script = issue_script(dir, "ES256", &issuer);
    let before = setup.recorded();
    let cpu = cpu_seconds();
    let issue = load(nodes, "/api/v1/tokens", Some(&script));
    let issue_cores = cores_used(&cpu, LOAD_SECS as f64);
    let recorded = setup.recorded() - before;
    let answered = issue.requests - issue.errors;
    assert!(recorded >= answered, "{}: {answered} tokens answered but only {recorded} recorded", setup.name);
    let http = reqwest::blocking::Client::new();
    let tokens: Vec<String> = (0..300)
        .map(|i| {
            let res: Value = http
                .post(format!("{}/api/v1/tokens", nodes[i % nodes.len()].url))
                .bearer_auth(&issuer)
                .json(&json!({"sub": format!("intro-{i}"), "aud": "api", "ttl": "1h"}))
                .send()
                .expect("issue")
                .json()
                .expect("json");
            res["access_token"].as_str().expect("token").to_owned()
        })
        .collect();
    let script = introspect_script(dir, &verifier, &tokens);
    let introspect = load(nodes, "/", Some(&script));
    let jwks = load(nodes, "/.well-known/jwks.json", None);
    Measured { issue, issue_cores, answered, recorded, introspect, jwks }
}

/// Waits until every node knows the API keys the CLI just created (within a second).
fn keys_known(nodes: &[&Node], issuer: &str, verifier: &str) {
    let http = reqwest::blocking::Client::new();
    let started = Instant::now();
    for n in nodes {
        loop {
            let issue = http
                .post(format!("{}/api/v1/tokens", n.url))
                .bearer_auth(issuer)
                .json(&json!({"sub": "probe", "aud": "api"}))
                .send()
                .is_ok_and(|r| r.status().is_success());
            let verify = http
                .post(format!("{}/oauth/introspect", n.url))
                .bearer_auth(verifier)
                .form(&[("token", "x")])
                .send()
                .is_ok_and(|r| r.status().is_success());
            if issue && verify {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "the nodes never knew the new API keys");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Revocations made on one node, each timed until another node calls the token inactive.
fn propagation(setup: &Setup, a: &Node, b: &Node, rounds: usize) -> (f64, f64) {
    setup.cli(&["init"]);
    let issuer = setup.cli(&["apikey", "create", "--role", "issuer", "--name", "prop-i"]);
    let verifier = setup.cli(&["apikey", "create", "--role", "verifier", "--name", "prop-v"]);
    let admin = setup.cli(&["apikey", "create", "--role", "admin", "--name", "prop-a"]);
    keys_known(&[a, b], &issuer, &verifier);
    let http = reqwest::blocking::Client::new();
    let active = |token: &str| -> bool {
        let res: Value = http
            .post(format!("{}/oauth/introspect", b.url))
            .bearer_auth(&verifier)
            .form(&[("token", token)])
            .send()
            .expect("introspect")
            .json()
            .expect("json");
        res["active"] == true
    };
    let mut took = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let res: Value = http
            .post(format!("{}/api/v1/tokens", a.url))
            .bearer_auth(&issuer)
            .json(&json!({"sub": format!("prop-{i}"), "aud": "api"}))
            .send()
            .expect("issue")
            .json()
            .expect("json");
        let (token, jti) = (res["access_token"].as_str().expect("token"), res["jti"].as_str().expect("jti"));
        assert!(active(token), "the token is active on the other node");
        let started = Instant::now();
        let status = http
            .post(format!("{}/api/v1/revocations", a.url))
            .bearer_auth(&admin)
            .json(&json!({"jti": jti, "reason": "bench"}))
            .send()
            .expect("revoke")
            .status();
        assert!(status.is_success(), "revoke: {status}");
        while active(token) {
            assert!(started.elapsed() < Duration::from_secs(10), "the revocation never reached the other node");
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    (at(0.5), at(0.99))
}

fn main() {
    let Some(server) = std::env::var("KEYTURN_BENCH_POSTGRES").ok().filter(|s| !s.is_empty()) else {
        eprintln!("KEYTURN_BENCH_POSTGRES is not set: run ./scripts/bench cluster, which starts a PostgreSQL server");
        std::process::exit(1);
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek");
    std::fs::write(&kek, [0x5au8; 32]).expect("kek");
    let database = |name: &str| {
        let mut admin = postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls).expect("connect");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        format!("{server}/{name}")
    };
    // `BENCH_SETUPS=2` runs the first two only (one SQLite node and one PostgreSQL node).
    let count = std::env::var("BENCH_SETUPS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    let setups = [
        ("one SQLite node", None, 1usize),
        ("one PostgreSQL node", Some(database("bench_one")), 1),
        ("three PostgreSQL nodes", Some(database("bench_three")), 3),
    ];
    let setups = setups.into_iter().take(count);
    let mut used = Vec::new();
    let mut rows = Vec::new();
    let mut reference: Option<f64> = None;
    let mut prop = None;
    for (name, url, n) in setups {
        let root = dir.path().join(name.replace(' ', "-"));
        let setup = Setup { name, database_url: url, kek: kek.clone(), root };
        setup.cli(&["init"]);
        let nodes: Vec<Node> = (0..n).map(|i| setup.node(i)).collect();
        let m = measure(&setup, &nodes, dir.path());
        let per_sec = m.recorded as f64 / LOAD_SECS as f64;
        let ratio = reference.map_or(1.0, |r| per_sec / r);
        reference.get_or_insert(per_sec);
        rows.push(format!(
            "| {name} | {:.0}/s (p99 {:.1} ms; {} answered, {} recorded, {} errors) | {ratio:.2} | {:.0}/s (p99 {:.1} ms, {} not active) | {:.0}/s (p99 {:.1} ms) |",
            m.issue.rps,
            m.issue.p99_ms,
            m.answered,
            m.recorded,
            m.issue.errors,
            m.introspect.rps,
            m.introspect.p99_ms,
            m.introspect.script.iter().fold(0.0, |n, (_, v)| n + v),
            m.jwks.rps,
            m.jwks.p99_ms,
        ));
        used.push(format!("| {name} | {:.0}/s | {} |", m.issue.rps, m.issue_cores));
        if n == 3 {
            prop = Some(propagation(&setup, &nodes[0], &nodes[1], 100));
        }
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("Cluster — {cores} cores, PostgreSQL on the same machine, wrk with 32 connections in all, {LOAD_SECS} s per run");
    println!();
    println!("| setup | issuance ES256 (every answered token recorded) | recorded/s vs one SQLite node | introspection | JWKS |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!("Cores used during the issuance load (processor seconds per second, from /proc):");
    println!();
    println!("| setup | issuance | cores used |");
    println!("|---|---|---|");
    for c in used {
        println!("{c}");
    }
    if let Some((p50, p99)) = prop {
        println!();
        println!("Revocation propagation, made on node 1 until node 2's introspection says inactive, 100 rounds: p50 {p50:.1} ms, p99 {p99:.1} ms (goal p99 < 1000 ms)");
    }
}
