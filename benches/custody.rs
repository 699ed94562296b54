//! Key custody benchmark: issuance per second with keys in a PKCS#11 token (SoftHSM2) beside
//! software keys, per algorithm, in the same run, and what the token's signature costs:
//!
//! - issuance (`POST /api/v1/tokens`, every answer a recorded token) on one SQLite node with
//!   `key_custody = "software"` and with `key_custody = "pkcs11"`, wrk with 32 connections;
//! - raw signatures on one thread: the software signer against the token's `C_Sign` on the
//!   same signing input, so the share of a token's time spent in the token can be read off.
//!
//! `./scripts/bench custody` runs it (SoftHSM2 installed from Debian's packages when missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{issue_script, issuer_key, raw_rate, serve, signer_and_input, wrk, Node};
use serde_json::json;

const LOAD_SECS: u64 = 5;
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1618-bench";
const ISSUER: &str = "http://keyturn.bench";

/// A SoftHSM2 token directory with one token, and the settings that use it.
fn token(dir: &Path) -> Vec<(String, String)> {
    std::fs::create_dir_all(dir.join("tokens")).expect("token dir");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\n", dir.join("tokens").display()),
    )
    .expect("conf");
    std::fs::write(dir.join("pin"), PIN).expect("pin");
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "0000-so"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    vec![
        ("SOFTHSM2_CONF".into(), conf.display().to_string()),
        ("KEYTURN_KEY_CUSTODY".into(), "pkcs11".into()),
        ("KEYTURN_PKCS11_MODULE".into(), MODULE.into()),
        ("KEYTURN_PKCS11_TOKEN_LABEL".into(), "bench".into()),
        ("KEYTURN_PKCS11_PIN_FILE".into(), dir.join("pin").display().to_string()),
    ]
}

fn keyturn(data: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    cmd.args(args)
        .env("KEYTURN_DATA_DIR", data)
        .env("KEYTURN_ISSUER", ISSUER)
        .env("KEYTURN_ALGORITHMS", "ES256,ES384,EdDSA,RS256,PS256")
        .env("KEYTURN_LOG_LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

fn start(data: &Path, env: &[(String, String)]) -> Node {
    serve(keyturn(data, env, &["serve"]))
}

fn api_key(data: &Path, env: &[(String, String)]) -> String {
    issuer_key(keyturn(data, env, &["apikey", "create", "--role", "issuer", "--name", "bench"]))
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hsm = token(&dir.path().join("hsm"));
    let algorithms = ["ES256", "ES384", "EdDSA", "RS256", "PS256"];
    let mut rows = Vec::new();
    let mut rates: Vec<(f64, f64)> = Vec::new();
    for (custody, env) in [("software", Vec::new()), ("pkcs11", hsm.clone())] {
        let data: PathBuf = dir.path().join(custody);
        let node = start(&data, &env);
        let key = api_key(&data, &env);
        for (i, alg) in algorithms.iter().enumerate() {
            let script = issue_script(dir.path(), alg, &key);
            let w = wrk(&format!("{}/api/v1/tokens", node.url), 32, LOAD_SECS, Some(&script));
            assert_eq!(w.errors, 0, "{custody} {alg}: errors");
            if custody == "software" {
                rates.push((w.rps, 0.0));
            } else {
                rates[i].1 = w.rps;
            }
        }
    }
    // Raw signatures on one thread: the software signer and the token, on the same input.
    std::env::set_var("SOFTHSM2_CONF", &hsm[0].1);
    let token = keyturn::keys::pkcs11::Token::open(Path::new(MODULE), "bench", &dir.path().join("hsm").join("pin"))
        .expect("token");
    let claims = json!({"iss": ISSUER, "sub": "alice", "aud": "api", "iat": 1_800_000_000, "exp": 1_800_000_900});
    for (i, name) in algorithms.iter().enumerate() {
        let alg: keyturn::keys::Algorithm = name.parse().expect("alg");
        let (_, signer, input) = signer_and_input(alg, ISSUER, &claims);
        let software = raw_rate(1.0, || {
            signer.sign_bytes(input.as_bytes()).expect("sign");
        });
        let (kid, _) = token.generate(alg, keyturn::keys::RsaBits::B2048).expect("generate");
        let in_token = raw_rate(1.0, || {
            token.sign(&kid, alg, input.as_bytes()).expect("sign");
        });
        let (soft, hsm_rate) = rates[i];
        rows.push(format!(
            "| {name} | {soft:.0}/s | {hsm_rate:.0}/s | {:.2} | {software:.0}/s ({:.0} µs) | {in_token:.0}/s ({:.0} µs) |",
            hsm_rate / soft,
            1e6 / software,
            1e6 / in_token,
        ));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("Key custody — {cores} cores, one SQLite node, wrk with 32 connections, {LOAD_SECS} s per run");
    println!();
    println!("| algorithm | issuance, software keys | issuance, keys in SoftHSM2 | token / software | raw signatures, software (one thread) | raw signatures, SoftHSM2 C_Sign (one thread) |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
