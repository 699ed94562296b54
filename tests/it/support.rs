//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs the real `keyturn` binary with a clean `KEYTURN_*` environment plus `env`.
pub fn run_keyturn(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYTURN_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn keyturn");
    wait_bounded(child)
}

/// Waits for a child at most 60 s; a refusal must come quickly, a hang is a failure.
fn wait_bounded(mut child: std::process::Child) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("keyturn did not exit within 60 s; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
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
