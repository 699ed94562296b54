//! Real `keyturn serve` processes for the process-level tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A fast lifecycle for process tests: a rotation every few seconds, short-lived tokens,
/// and a rotator lease that lapses quickly. Tests add what they need (algorithms).
pub const FAST_LIFECYCLE: &[(&str, &str)] = &[
    ("KEYTURN_ROTATION_SCHEDULE", "* * * * * *"),
    ("KEYTURN_PUBLISH_LEAD", "2s"),
    ("KEYTURN_JWKS_MAX_AGE", "1s"),
    ("KEYTURN_CLOCK_SKEW", "0s"),
    ("KEYTURN_LEEWAY", "1s"),
    ("KEYTURN_MAX_TOKEN_TTL", "4s"),
    ("KEYTURN_LEASE_TTL", "3s"),
];

/// FAST_LIFECYCLE plus `extra` (later entries win, as in the environment).
pub fn fast_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = FAST_LIFECYCLE.to_vec();
    env.extend_from_slice(extra);
    env
}

/// A running daemon process.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

/// A port free right now (the daemon binds it a moment later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().expect("client")
}

/// Runs `keyturn` once with the data dir and `env` and returns its stdout.
pub fn keyturn_once(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyturn"))
        .args(args)
        .env("KEYTURN_DATA_DIR", data)
        .envs(env.iter().copied())
        .output()
        .expect("run keyturn");
    assert!(out.status.success(), "keyturn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

impl Daemon {
    /// Starts `keyturn serve` on `data` and waits until `/readyz` answers 200.
    pub fn start(data: &Path, env: &[(&str, &str)], name: &str) -> Daemon {
        let port = free_port();
        let log = data.parent().unwrap_or(data).join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keyturn"))
            .arg("serve")
            .env("KEYTURN_DATA_DIR", data)
            .env("KEYTURN_PORT", port.to_string())
            .env("KEYTURN_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn keyturn serve");
        let mut d = Daemon { child, url: format!("http://127.0.0.1:{port}"), log };
        d.wait_ready(Duration::from_secs(30));
        d
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let c = client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("keyturn exited ({status}) before it was ready; log:\n{}", self.log_text());
            }
            if c.get(format!("{}/readyz", self.url)).send().map(|r| r.status().is_success()).unwrap_or(false) {
                return;
            }
            assert!(Instant::now() < deadline, "keyturn not ready within {limit:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// GETs JSON with an optional API key.
    pub fn get(&self, path: &str, key: Option<&str>) -> Value {
        let mut req = client().get(format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let res = req.send().expect("request");
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().expect("json")
    }

    /// Every audit entry, oldest first.
    pub fn audit(&self, key: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut before: Option<i64> = None;
        loop {
            let path = match before {
                Some(b) => format!("/api/v1/audit?limit=1000&before={b}"),
                None => "/api/v1/audit?limit=1000".to_owned(),
            };
            let page = self.get(&path, Some(key));
            out.extend(page["entries"].as_array().expect("entries").iter().cloned());
            match page["next"].as_i64() {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        out.reverse();
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Sends a signal and waits (bounded) for the exit status.
    pub fn signal_and_wait(mut self, signal: &str, limit: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "keyturn did not exit within {limit:?} of SIG{signal}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `keyturn` with `args` on `data` and returns its stdout.
pub fn run_keyturn_out(args: &[&str], data: &Path) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_keyturn")).args(args).env("KEYTURN_DATA_DIR", data).output().expect("keyturn");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
