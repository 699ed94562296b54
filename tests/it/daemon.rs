//! Real `keyturn serve` processes for the process-level tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{eventually, keyturn};

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
/// The rotator (audit source) of each scheduled lifecycle change, oldest first.
pub fn rotators(audit: &[Value]) -> Vec<String> {
    audit
        .iter()
        .filter(|e| e["actor"] == "system" && e["source"].as_str().is_some_and(|s| s.starts_with("rotator ")))
        .map(|e| e["source"].as_str().unwrap_or_default().to_owned())
        .collect()
}

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

/// Runs `keyturn` once on the data dir with `env` and returns its stdout (exit 0 checked).
pub fn keyturn_once(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    crate::support::keyturn_ok(data, args, env)
}

impl Daemon {
    /// Starts `keyturn serve` on `data` and waits until `/readyz` answers 200.
    pub fn start(data: &Path, env: &[(&str, &str)], name: &str) -> Daemon {
        let mut d = Daemon::spawn(data, env, name);
        d.wait_ready(Duration::from_secs(30));
        d
    }

    /// Starts `keyturn serve` without waiting for it to be ready (nodes started together).
    pub fn spawn(data: &Path, env: &[(&str, &str)], name: &str) -> Daemon {
        // A port given in `env` (to keep one issuer URL across restarts), else a free one.
        let given = env.iter().rev().find(|(k, _)| *k == "KEYTURN_PORT").and_then(|(_, v)| v.parse().ok());
        let port = given.unwrap_or_else(free_port);
        let log = data.parent().unwrap_or(data).join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let (data_dir, port_text) = (data.display().to_string(), port.to_string());
        let mut all =
            vec![("KEYTURN_DATA_DIR", data_dir.as_str()), ("KEYTURN_PORT", &port_text), ("KEYTURN_LOG_LEVEL", "info")];
        all.extend_from_slice(env);
        let child = keyturn(&["serve"], &all)
            .current_dir(data.parent().unwrap_or(data))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn keyturn serve");
        Daemon { child, url: format!("http://127.0.0.1:{port}"), log }
    }

    pub fn wait_ready(&mut self, limit: Duration) {
        let c = client();
        let what = format!("keyturn serve ({}) to be ready", self.log.display());
        let (child, url, log) = (&mut self.child, &self.url, &self.log);
        eventually(&what, limit, || {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                panic!("keyturn exited ({status}) before it was ready; log:\n{text}");
            }
            c.get(format!("{url}/readyz")).send().is_ok_and(|r| r.status().is_success()).then_some(())
        });
    }

    /// Waits until the log has a line containing `needle`, and returns the log.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let what = format!("{needle:?} in {}", self.log.display());
        eventually(&what, limit, || Some(self.log_text()).filter(|t| t.contains(needle)))
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
        self.signal(signal);
        let child = &mut self.child;
        eventually(&format!("keyturn to exit after SIG{signal}"), limit, || child.try_wait().ok().flatten())
    }

    /// Sends `signal` (`TERM`, `INT`, …) to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }
}
