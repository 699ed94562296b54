//! Operating keyturn from the host: the CLI beside a running daemon, online backup under
//! load, and key-encryption-key rotation (including interrupted ones).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{client, keyturn_once, Daemon};
use crate::support::SQLITE;

fn kids(d: &Daemon) -> Vec<String> {
    d.get("/.well-known/jwks.json", None)["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

fn introspect(d: &Daemon, key: &str, token: &str) -> Value {
    client()
        .post(format!("{}/oauth/introspect", d.url))
        .bearer_auth(key)
        .form(&[("token", token)])
        .send()
        .expect("introspect")
        .json()
        .expect("json")
}

/// Polls `f` every 20 ms until true; returns how long it took (bounded at 10 s).
fn time_until(mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(10), "never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The same issuer for the daemon and every command, as a deployment sets it: left to its
/// default it would follow each process's port.
const ISSUER: (&str, &str) = ("KEYTURN_ISSUER", "https://keyturn.operate.test");

fn run(data: &Path, args: &[&str]) -> std::process::Output {
    run_with(data, &[], args)
}

fn run_with(data: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let data_dir = data.display().to_string();
    let mut all = vec![("KEYTURN_DATA_DIR", data_dir.as_str()), ISSUER];
    all.extend_from_slice(env);
    crate::support::run_keyturn(args, &all, data.parent().unwrap_or(data))
}

#[test]
fn cli_changes_reach_the_running_daemon_within_a_second() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[ISSUER]);
    let verifier =
        keyturn_once(&data, &["apikey", "create", "--role", "verifier", "--name", "v"], &[ISSUER]).trim().to_owned();
    let d = Daemon::start(&data, &[ISSUER], "cli-live");

    let before = kids(&d);
    let out = run(&data, &["keys", "rotate", "--emergency"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = time_until(|| kids(&d).len() > before.len());
    eprintln!("CLI rotation visible in the daemon's JWKS after {took:?}");
    assert!(took < Duration::from_millis(1500), "the JWKS followed in {took:?}");

    let token = String::from_utf8(run(&data, &["token", "issue", "--sub", "carol", "--aud", "api"]).stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert_eq!(introspect(&d, &verifier, &token)["active"], true, "the daemon accepts a CLI-issued token");
    let verify = run(&data, &["token", "verify", &token]);
    assert!(verify.status.success(), "token verify exits 0 for an active token");
    let out = run(&data, &["token", "revoke", "--sub", "carol", "--reason", "test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = time_until(|| introspect(&d, &verifier, &token)["active"] == false);
    eprintln!("CLI revocation visible in the daemon's index after {took:?}");
    assert!(took < Duration::from_millis(1500), "the revocation index followed in {took:?}");
    assert_eq!(run(&data, &["token", "verify", &token]).status.code(), Some(1), "inactive: exit 1");

    // An API key the daemon has authenticated (and so holds in memory) stops working once
    // the CLI revokes it.
    let out = run(&data, &["apikey", "list"]);
    let listing = String::from_utf8(out.stdout).expect("utf8");
    let id = listing.lines().find(|l| l.contains("\tv\tverifier\t")).and_then(|l| l.split('\t').next()).expect("id");
    let status = || {
        client()
            .post(format!("{}/oauth/introspect", d.url))
            .bearer_auth(&verifier)
            .form(&[("token", token.as_str())])
            .send()
            .expect("introspect")
            .status()
            .as_u16()
    };
    assert_eq!(status(), 200);
    let out = run(&data, &["apikey", "revoke", id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = time_until(|| status() == 401);
    eprintln!("CLI API-key revocation refused by the daemon after {took:?}");
    assert!(took < Duration::from_millis(1500), "the API key cache followed in {took:?}");

    let listing = String::from_utf8(run(&data, &["keys", "list"]).stdout).expect("utf8");
    assert!(listing.contains("active") && listing.contains("retired") && listing.contains("pending"), "{listing}");
    let out = run(&data, &["apikey", "list"]);
    let listing = String::from_utf8(out.stdout).expect("utf8");
    assert!(listing.contains("\tv\tverifier\t") && !listing.contains(&verifier), "{listing}");
}

#[test]
fn backup_under_load_starts_a_daemon_with_the_same_keys() {
    // `keyturn backup` copies the SQLite file; PostgreSQL is backed up with its own tools.
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[SQLITE]);
    let issuer =
        keyturn_once(&data, &["apikey", "create", "--role", "issuer", "--name", "i"], &[SQLITE]).trim().to_owned();
    let d = Daemon::start(&data, &[SQLITE], "backup-src");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (stop, answered, url, key) = (stop.clone(), answered.clone(), d.url.clone(), issuer.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = client()
                    .post(format!("{url}/api/v1/tokens"))
                    .bearer_auth(&key)
                    .json(&json!({"sub": "s", "aud": "a"}))
                    .send();
                if r.map(|r| r.status().is_success()).unwrap_or(false) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            answered.load(Ordering::Relaxed)
        })
    };
    // The backup starts once the load is really running.
    crate::support::eventually("issuance under load", Duration::from_secs(10), || {
        (answered.load(Ordering::Relaxed) >= 5).then_some(())
    });
    let copy_dir = root.path().join("restored");
    std::fs::create_dir_all(&copy_dir).expect("dir");
    let out = run_with(&data, &[SQLITE], &["backup", copy_dir.join("keyturn.db").to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the backup"), "reminds about the KEK");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(copy_dir.join("keyturn.db")).expect("backup").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup is as private as the database ({mode:o})");
    }
    stop.store(true, Ordering::Relaxed);
    let issued = load.join().expect("load");
    assert!(issued > 10, "the backup ran under load ({issued} tokens)");
    let source_kids = kids(&d);

    // Restore: the copy plus the key-encryption key, in a fresh data dir.
    std::fs::copy(data.join("kek"), copy_dir.join("kek")).expect("kek");
    let restored = Daemon::start(&copy_dir, &[SQLITE], "backup-copy");
    assert_eq!(kids(&restored), source_kids, "the restored daemon publishes the same keys");
    let db = rusqlite::Connection::open(copy_dir.join("keyturn.db")).expect("db");
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(integrity, "ok");
    let out = run_with(&data, &[SQLITE], &["backup", copy_dir.join("keyturn.db").to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "an existing file is not overwritten");
}

#[test]
fn kek_rotation_and_its_interruptions_keep_the_data_dir_startable() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[]);
    keyturn_once(&data, &["apikey", "create", "--role", "verifier", "--name", "v"], &[]);
    let d = Daemon::start(&data, &[], "kek");
    let kids_before = kids(&d);
    let out = run(&data, &["kek", "rotate"]);
    assert_eq!(out.status.code(), Some(2), "refused while a daemon runs: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop every keyturn process"));
    d.signal_and_wait("TERM", Duration::from_secs(15));

    let old = std::fs::read(data.join("kek")).expect("kek");
    let out = run(&data, &["kek", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = std::fs::read(data.join("kek")).expect("kek");
    assert_ne!(old, new, "a new key file");
    assert!(!data.join("kek.new").exists());
    let d = Daemon::start(&data, &[], "kek-after");
    assert_eq!(kids(&d), kids_before, "same keys under the new key-encryption key");
    d.signal_and_wait("TERM", Duration::from_secs(15));

    // Interrupted after the database committed but before the file was replaced: the new
    // key waits as kek.new; start-up finishes the rotation.
    std::fs::write(data.join("kek.new"), &new).expect("write");
    std::fs::write(data.join("kek"), &old).expect("write");
    let d = Daemon::start(&data, &[], "kek-finish");
    assert_eq!(kids(&d), kids_before);
    assert_eq!(std::fs::read(data.join("kek")).expect("kek"), new, "start-up finished the rotation");
    d.signal_and_wait("TERM", Duration::from_secs(15));

    // Interrupted before the database committed: kek.new is stale and is removed.
    std::fs::write(data.join("kek.new"), [9u8; 32]).expect("write");
    let d = Daemon::start(&data, &[], "kek-discard");
    assert_eq!(kids(&d), kids_before);
    assert!(!data.join("kek.new").exists(), "the stale new key was discarded");
}
