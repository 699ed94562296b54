//! Start-up refusals, through the real `keyturn` binary: each gives a clear message, a
//! non-zero exit, and leaves the data dir exactly as it was.

use std::net::TcpListener;
use std::path::Path;

use keyturn::store::args;

use crate::support::{populated_data_dir, run_keyturn, snapshot, SQLITE};

/// Runs `keyturn serve` on `data` with `env`, expecting a refusal whose stderr contains
/// `needle`, and checks the data dir is unchanged.
fn assert_refused(data: &Path, env: &[(&str, &str)], code: i32, needle: &str) {
    let before = snapshot(data);
    let data_text = data.display().to_string();
    let mut all_env = vec![("KEYTURN_DATA_DIR", data_text.as_str()), ("KEYTURN_PORT", "0")];
    all_env.extend_from_slice(env);
    let cwd = data.parent().unwrap_or(Path::new("/"));
    let out = run_keyturn(&["serve"], &all_env, if cwd.is_dir() { cwd } else { Path::new("/") });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    assert_eq!(snapshot(data), before, "the data dir changed; stderr: {stderr}");
}

#[test]
fn wrong_or_replaced_kek_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = populated_data_dir(root.path(), "ES256");
    let other = root.path().join("other-kek");
    std::fs::write(&other, [42u8; 32]).expect("write");
    assert_refused(&data, &[("KEYTURN_KEK_FILE", other.to_str().expect("utf8"))], 1, "does not decrypt");
    // Replacing the file in place is the same refusal.
    std::fs::write(data.join("kek"), [43u8; 32]).expect("write");
    assert_refused(&data, &[], 1, "wrong or a replaced key file");
}

#[test]
fn missing_kek_with_sealed_keys_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = populated_data_dir(root.path(), "ES256");
    std::fs::rename(data.join("kek"), root.path().join("kek.moved")).expect("move");
    assert_refused(&data, &[], 1, "is missing, but the database holds keys");
}

#[test]
fn unknown_algorithm_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = populated_data_dir(root.path(), "ES256");
    assert_refused(&data, &[("KEYTURN_ALGORITHMS", "ES256,HS256")], 2, "unknown algorithm 'HS256'");
    // On a fresh machine nothing is created either.
    let fresh = root.path().join("fresh");
    assert_refused(&fresh, &[("KEYTURN_ALGORITHMS", "none")], 2, "unknown algorithm 'none'");
    assert!(!fresh.exists());
}

#[test]
fn rsa_bits_out_of_range_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = populated_data_dir(root.path(), "ES256");
    for bits in ["1024", "8192", "2500"] {
        assert_refused(&data, &[("KEYTURN_ALGORITHMS", "RS256"), ("KEYTURN_RSA_BITS", bits)], 2, "2048–4096");
    }
}

#[test]
fn unwritable_data_dir_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    assert_refused(&file.join("data"), &[], 1, "cannot be created");
    assert_refused(&file, &[], 1, "is not a directory");
    assert_eq!(std::fs::read(&file).expect("read"), b"not a directory");
}

#[test]
fn taken_port_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port().to_string();
    let fresh = root.path().join("fresh");
    assert_refused(&fresh, &[("KEYTURN_PORT", &port)], 1, "already in use");
    assert!(!fresh.exists(), "a refused start creates no data dir");
    let data = populated_data_dir(root.path(), "ES256");
    assert_refused(&data, &[("KEYTURN_PORT", &port)], 1, "already in use");
}

#[test]
fn flipped_byte_in_a_private_key_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = populated_data_dir(root.path(), "ES256");
    {
        let db = crate::support::database(&data, &[]);
        let row =
            &crate::support::rows(&db, "SELECT kid, sealed_private FROM signing_keys WHERE state = 'active'", args![])
                [0];
        let (kid, mut sealed): (String, Vec<u8>) = (row.get(0).expect("kid"), row.get(1).expect("sealed"));
        let middle = sealed.len() / 2;
        sealed[middle] ^= 0x01;
        crate::support::execute(&db, "UPDATE signing_keys SET sealed_private = ?1 WHERE kid = ?2", args![sealed, kid]);
    }
    assert_refused(&data, &[], 1, "does not open under the key-encryption key");
}

#[test]
fn ciphertext_moved_between_keys_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = populated_data_dir(root.path(), "ES256");
    {
        let db = crate::support::database(&data, &[]);
        let rows =
            crate::support::rows(&db, "SELECT sealed_private FROM signing_keys WHERE state = 'pending'", args![]);
        let pending: Vec<u8> = rows[0].get(0).expect("pending key");
        crate::support::execute(
            &db,
            "UPDATE signing_keys SET sealed_private = ?1 WHERE state = 'active'",
            args![pending],
        );
    }
    assert_refused(&data, &[], 1, "holds another key's ciphertext");
}

#[test]
fn config_check_prints_redacted_configuration() {
    let root = tempfile::tempdir().expect("tempdir");
    let secret = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
    let out = run_keyturn(&["config", "check"], &[("KEYTURN_SECRET_KEY", secret), ("KEYTURN_BOGUS", "1")], root.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("secret_key = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    assert!(stdout.contains("port = 8080  # default"), "{stdout}");
    assert!(stderr.contains("KEYTURN_BOGUS"), "unknown settings are named: {stderr}");

    let toml = root.path().join("k.toml");
    std::fs::write(&toml, "publish_lead = \"1m\"\n").expect("write");
    let out = run_keyturn(&["config", "check", "--config", toml.to_str().expect("utf8")], &[], root.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("publish_lead (1m) must be at least"));
}

#[test]
fn help_on_every_command() {
    let root = tempfile::tempdir().expect("tempdir");
    let commands: &[&[&str]] = &[
        &["--help"],
        &["serve", "--help"],
        &["config", "--help"],
        &["config", "check", "--help"],
        &["keys", "--help"],
        &["keys", "list", "--help"],
        &["keys", "rotate", "--help"],
        &["keys", "revoke", "--help"],
        &["token", "--help"],
        &["token", "issue", "--help"],
        &["token", "verify", "--help"],
        &["token", "revoke", "--help"],
        &["client", "--help"],
        &["client", "create", "--help"],
        &["client", "list", "--help"],
        &["client", "disable", "--help"],
        &["apikey", "--help"],
        &["apikey", "create", "--help"],
        &["apikey", "list", "--help"],
        &["apikey", "revoke", "--help"],
        &["admin", "--help"],
        &["admin", "add", "--help"],
        &["admin", "passwd", "--help"],
        &["backup", "--help"],
        &["kek", "--help"],
        &["kek", "rotate", "--help"],
    ];
    for args in commands.iter().copied() {
        let out = run_keyturn(args, &[], root.path());
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn example_config_in_deploy_is_valid() {
    let root = tempfile::tempdir().expect("tempdir");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/keyturn.toml");
    let out = run_keyturn(&["config", "check", "--config", example], &[], root.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("unknown setting"), "{stderr}");
}

#[test]
fn a_bad_cookie_secret_file_is_refused_by_name_with_the_fix() {
    // The cookie secret generated into the data dir: a single node's (a cluster is given one).
    let root = tempfile::tempdir().expect("tempdir");
    let data = crate::support::populated_data_dir_with(root.path(), &[SQLITE]);
    let path = data.join("cookie-secret");
    for bad in ["not base64 at all!", "c2hvcnQ="] {
        std::fs::write(&path, bad).expect("write");
        assert_refused(&data, &[SQLITE], 1, &format!("{}", path.display()));
        assert_refused(&data, &[SQLITE], 1, "delete it");
    }
}

#[test]
fn a_key_in_a_state_keyturn_cannot_read_is_refused() {
    // Corruption of the SQLite file; PostgreSQL's CHECK constraints cannot be bypassed.
    let root = tempfile::tempdir().expect("tempdir");
    let data = crate::support::populated_data_dir_with(root.path(), &[SQLITE]);
    {
        // One flipped byte in the active key's state, as disk corruption would leave it.
        let db = rusqlite::Connection::open(data.join("keyturn.db")).expect("db");
        db.execute_batch("PRAGMA ignore_check_constraints = ON").expect("pragma");
        let changed =
            db.execute("UPDATE signing_keys SET state = 'activf' WHERE state = 'active'", []).expect("corrupt");
        assert_eq!(changed, 1);
    }
    // Before: the unreadable key silently left the key set and the pending key was promoted
    // without its publish lead.
    assert_refused(&data, &[SQLITE], 1, "activf");
}

#[tokio::test]
async fn a_key_encryption_key_without_its_database_is_a_lost_database_not_a_first_start() {
    // The SQLite file beside the key file is what can be lost here.
    let root = tempfile::tempdir().expect("tempdir");
    let data = crate::support::populated_data_dir_with(root.path(), &[SQLITE]);
    for file in ["keyturn.db", "keyturn.db-wal", "keyturn.db-shm"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    // Before: a fresh install started without a word (new keys; API keys and clients gone).
    assert_refused(&data, &[SQLITE], 1, "delete");
    std::fs::write(data.join("keyturn.db"), b"").expect("an empty database file");
    assert_refused(&data, &[SQLITE], 1, "was lost or moved");
    // Told it is a new install — the old key file deleted — it starts afresh.
    std::fs::remove_file(data.join("kek")).expect("delete the old key");
    let cfg = crate::support::config(&data, &[SQLITE]);
    keyturn::service::Keyturn::open(cfg, crate::support::fake_clock()).await.expect("a new install").close().await;
}

#[tokio::test]
async fn a_first_start_is_safe_to_interrupt_and_an_external_key_may_start_a_new_database() {
    let root = tempfile::tempdir().expect("tempdir");
    // Interrupted after the new key was written but before the database said so: the new
    // key file waits under its pending name, and the next start makes a fresh one.
    let data = root.path().join("interrupted");
    std::fs::create_dir(&data).expect("dir");
    std::fs::write(data.join("kek.new"), [7u8; 32]).expect("pending key");
    drop(
        keyturn::service::Keyturn::open(crate::support::config(&data, &[]), crate::support::fake_clock())
            .await
            .expect("start"),
    );
    assert!(data.join("kek").exists() && !data.join("kek.new").exists());
    // Interrupted after the database recorded the new key but before the file was renamed:
    // the next start finishes the rename.
    std::fs::rename(data.join("kek"), data.join("kek.new")).expect("as if not yet renamed");
    drop(
        keyturn::service::Keyturn::open(crate::support::config(&data, &[]), crate::support::fake_clock())
            .await
            .expect("restart"),
    );
    assert!(data.join("kek").exists() && !data.join("kek.new").exists());
    // A key given from outside the data dir (a systemd credential, a container secret) on
    // the very first start is a new install.
    let external = root.path().join("provided-kek");
    std::fs::write(&external, [9u8; 32]).expect("provided key");
    let fresh = root.path().join("fresh");
    let env = [("KEYTURN_KEK_FILE", external.to_str().expect("utf8"))];
    drop(
        keyturn::service::Keyturn::open(crate::support::config(&fresh, &env), crate::support::fake_clock())
            .await
            .expect("first start"),
    );
}
