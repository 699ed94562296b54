//! Interop across live rotations: node's `jose` (`createRemoteJWKSet` + `jwtVerify`) and
//! Python's PyJWT (`PyJWKClient`) verify tokens issued at every moment while keys rotate
//! every few seconds, with zero failures; a revoked key's tokens fail once they refetch.
//!
//! `./scripts/test` installs both clients (tests/interop/node_modules, target/interop-venv).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{client, keyturn_once, Daemon};
use crate::support::eventually;

const ALGS: [&str; 5] = ["ES256", "ES384", "EdDSA", "RS256", "PS256"];

const ENV: &[(&str, &str)] = &[
    ("KEYTURN_ALGORITHMS", "ES256,ES384,EdDSA,RS256,PS256"),
    ("KEYTURN_ROTATION_SCHEDULE", "* * * * * *"),
    ("KEYTURN_PUBLISH_LEAD", "2s"),
    ("KEYTURN_JWKS_MAX_AGE", "1s"),
    ("KEYTURN_CLOCK_SKEW", "0s"),
    ("KEYTURN_LEEWAY", "2s"),
    ("KEYTURN_MAX_TOKEN_TTL", "60s"),
    ("KEYTURN_ISSUER", "https://issuer.interop.test"),
];

/// A verifier process speaking the line protocol of tests/interop/verify.*.
struct Verifier {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Verifier {
    fn spawn(name: &'static str, mut cmd: Command) -> Verifier {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Verifier { name, child, stdin, stdout }
    }

    /// Verifies one token; returns Ok(kid) or Err(reason).
    fn verify(&mut self, id: usize, token: &str) -> Result<String, String> {
        writeln!(self.stdin, "{id} {token}").expect("write");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some(id.to_string().as_str()), "{}: out of step: {line}", self.name);
        match (parts.next(), parts.next()) {
            (Some("ok"), Some(kid)) => Ok(kid.to_owned()),
            (_, reason) => Err(reason.unwrap_or("?").to_owned()),
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// The installed clients, or a failure saying how to install them.
fn verifiers(jwks_url: &str, issuer: &str) -> (Verifier, Verifier) {
    let dir = interop_dir();
    assert!(
        dir.join("node_modules/jose").is_dir(),
        "node's jose is not installed: run ./scripts/test, which installs it (npm ci in tests/interop)"
    );
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    assert!(python.is_file(), "PyJWT is not installed: run ./scripts/test, which installs it into target/interop-venv");
    let mut node = Command::new("node");
    node.current_dir(&dir).arg("verify.mjs").args([jwks_url, issuer, "api", "1000"]);
    let mut py = Command::new(python);
    py.current_dir(&dir).arg("verify.py").args([jwks_url, issuer, "api", "1"]);
    (Verifier::spawn("jose", node), Verifier::spawn("PyJWT", py))
}

fn issue(d: &Daemon, key: &str, alg: &str) -> Value {
    let res = client()
        .post(format!("{}/api/v1/tokens", d.url))
        .bearer_auth(key)
        .json(&json!({"sub": "interop", "aud": "api", "ttl": "60s", "alg": alg}))
        .send()
        .expect("issue");
    assert!(res.status().is_success(), "issue {alg}: {}", res.status());
    res.json().expect("json")
}

#[test]
fn jose_and_pyjwt_verify_across_live_rotations_and_reject_revoked_keys() {
    across_live_rotations(ENV, "interop");
}

/// The same with every key made, used and destroyed inside a PKCS#11 token (SoftHSM2): the
/// tokens it signs look to the clients exactly like those of software keys.
#[test]
fn jose_and_pyjwt_verify_keys_held_in_a_token_across_live_rotations() {
    let hsm = crate::custody::Hsm::new("keyturn-interop");
    let mut env: Vec<(&str, String)> = ENV.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    env.extend(hsm.env());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    across_live_rotations(&env, "interop-token");
    assert!(hsm.private_keys().contains("Private Key Object"), "the keys are in the token");
}

fn across_live_rotations(env: &[(&str, &str)], name: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let issuer = "https://issuer.interop.test";
    keyturn_once(&data, &["init"], env);
    let key = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "interop"], env).trim().to_owned();
    let d = Daemon::start(&data, env, name);
    let (mut jose, mut pyjwt) = verifiers(&format!("{}/.well-known/jwks.json", d.url), issuer);

    // Issue and verify continuously until every algorithm has signed with 11 keys (at least
    // 10 rotations each), bounded in time.
    let mut signers: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut id = 0usize;
    eventually("11 keys per algorithm (10 rotations each)", Duration::from_secs(120), || {
        let alg = ALGS[id % ALGS.len()];
        let issued = issue(&d, &key, alg);
        let token = issued["access_token"].as_str().expect("token");
        let kid = issued["kid"].as_str().expect("kid").to_owned();
        signers.entry(alg).or_default().insert(kid.clone());
        for v in [&mut jose, &mut pyjwt] {
            match v.verify(id, token) {
                Ok(k) => assert_eq!(k, kid),
                Err(reason) => failures.push(format!("{} failed {alg} token {id} (kid {kid}): {reason}", v.name)),
            }
        }
        id += 1;
        (signers.len() == ALGS.len() && signers.values().all(|k| k.len() >= 11)).then_some(())
    });
    assert!(failures.is_empty(), "{} of {} verifications failed:\n{}", failures.len(), 2 * id, failures.join("\n"));
    eprintln!(
        "{name}: {id} tokens verified by jose and PyJWT across {:?} keys per algorithm",
        signers.values().map(BTreeSet::len).collect::<Vec<_>>()
    );

    // Revoke the active ES256 key: its tokens fail once the clients refetch (max-age 1 s).
    let issued = issue(&d, &key, "ES256");
    let token = issued["access_token"].as_str().expect("token").to_owned();
    let kid = issued["kid"].as_str().expect("kid").to_owned();
    assert!(jose.verify(id, &token).is_ok() && pyjwt.verify(id + 1, &token).is_ok(), "verifies before revocation");
    id += 2;
    let res = client()
        .post(format!("{}/api/v1/keys/{kid}/revoke", d.url))
        .bearer_auth(&key)
        .json(&json!({"reason": "interop test"}))
        .send()
        .expect("revoke");
    assert!(res.status().is_success(), "revoke: {}", res.status());
    for v in [&mut jose, &mut pyjwt] {
        // The client's cache may live for max-age (1 s); it must refuse within 10 s.
        let what = format!("{} to refuse a revoked key's token", v.name);
        eventually(&what, Duration::from_secs(10), || {
            let refused = v.verify(id, &token).is_err();
            id += 1;
            refused.then_some(())
        });
        // Tokens of the replacement still verify.
        let fresh = issue(&d, &key, "ES256");
        assert!(
            v.verify(id, fresh["access_token"].as_str().expect("token")).is_ok(),
            "{}: the replacement verifies",
            v.name
        );
        id += 1;
    }
}
