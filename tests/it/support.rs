//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use keyturn::clock::Clock;
use keyturn::config::{self, Config, Inputs};
use keyturn::Server;
use time::macros::datetime;

/// A fake clock at a fixed, known instant.
pub fn fake_clock() -> Clock {
    Clock::fake(datetime!(2026-06-01 12:00:00 UTC))
}

/// Loads a configuration from `KEYTURN_*` pairs, as the daemon would from its environment.
pub fn config(data_dir: &Path, env: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("KEYTURN_DATA_DIR".to_owned(), data_dir.display().to_string()),
        ("KEYTURN_PORT".to_owned(), "0".to_owned()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    config::load(&Inputs { config_path: None, cwd: data_dir.to_owned(), env: vars }).expect("valid test configuration")
}

/// Starts a real server on 127.0.0.1, port 0.
pub async fn start(data_dir: &Path, env: &[(&str, &str)], clock: Clock) -> Server {
    keyturn::start(config(data_dir, env), clock).await.expect("server starts")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

/// GETs a JSON document.
pub async fn get_json(url: &str) -> serde_json::Value {
    let res = http().get(url).send().await.expect("request");
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.json().await.expect("json body")
}

/// The `kid`s of a JWKS, in order.
pub fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_owned()).collect()
}

/// How long a `keyturn` command may take before the test fails: a refusal must come quickly,
/// a hang is a failure.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The real `keyturn` binary, the one way tests run it: the caller's `KEYTURN_*` variables
/// are removed, then `env` is set, so nothing in the test runner's environment decides what
/// it does. Spawn it (a daemon), or hand it to [`finish`].
pub fn keyturn(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYTURN_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Runs `cmd` to its end, at most [`COMMAND_LIMIT`] (then it is killed and the test fails),
/// and returns what it printed.
pub fn finish(mut cmd: Command) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn keyturn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_LIMIT) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("keyturn did not exit within {COMMAND_LIMIT:?}");
        }
    }
}

/// Runs `keyturn` with `env` in `cwd` (where it looks for `keyturn.toml`) and returns its
/// output; its exit status is the caller's to check (refusals exit non-zero on purpose).
pub fn run_keyturn(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = keyturn(args, env);
    cmd.current_dir(cwd);
    finish(cmd)
}

/// Runs `keyturn` on the data dir `data` (from the directory above it) and returns its
/// stdout; the test fails unless it exits 0.
pub fn keyturn_ok(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let data_dir = data.display().to_string();
    let mut all = vec![("KEYTURN_DATA_DIR", data_dir.as_str())];
    all.extend_from_slice(env);
    let out = run_keyturn(args, &all, data.parent().unwrap_or(data));
    assert!(out.status.success(), "keyturn {args:?} exited {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

/// Waits until `probe` answers `Some`, trying every 20 ms for at most `limit`, and returns
/// the answer; fails the test naming `what` otherwise. The one way tests wait for something.
pub fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`eventually`] for async tests: the probe is awaited, and the wait does not block the
/// runtime.
pub async fn eventually_async<T, F>(what: &str, limit: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir` with a digest of its bytes (and its mode), to prove a refusal
/// changed nothing.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let paths: Vec<PathBuf> = if dir.is_dir() {
        std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect()
    } else {
        vec![dir.to_owned()]
    };
    for path in paths {
        let meta = std::fs::metadata(&path).expect("metadata");
        let digest = if meta.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
            d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
        } else {
            "dir".to_owned()
        };
        out.insert(path, format!("{digest} {:o}", meta.permissions().mode()));
    }
    out
}

/// Creates a data dir with keys for `algorithms` by opening the service once, then closing it.
pub fn populated_data_dir(root: &Path, algorithms: &str) -> PathBuf {
    let data = root.join("data");
    let service = keyturn::service::Keyturn::open(config(&data, &[("KEYTURN_ALGORITHMS", algorithms)]), fake_clock())
        .expect("first start");
    drop(service);
    data
}
