//! Graceful shutdown: SIGTERM and SIGINT stop the daemon within a bounded time with exit 0,
//! after in-flight requests finish; the WAL is checkpointed and the lease handed over.

use std::time::{Duration, Instant};

use crate::daemon::{client, keyturn_once, Daemon};

#[test]
fn sigterm_and_sigint_exit_zero_promptly_and_checkpoint() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let key = keyturn_once(&data, &["apikey", "create", "--role", "issuer", "--name", "t"], &[]).trim().to_owned();
    for signal in ["TERM", "INT"] {
        let d = Daemon::start(&data, &[], &format!("shutdown-{signal}"));
        // Some writes, so the WAL has something in it.
        for _ in 0..20 {
            let res = client()
                .post(format!("{}/api/v1/tokens", d.url))
                .bearer_auth(&key)
                .json(&serde_json::json!({"sub": "s", "aud": "a"}))
                .send()
                .expect("issue");
            assert!(res.status().is_success());
        }
        let started = Instant::now();
        let status = d.signal_and_wait(signal, Duration::from_secs(15));
        assert!(status.success(), "SIG{signal}: exit {status}");
        eprintln!("SIG{signal}: exited 0 after {:?}", started.elapsed());
        let wal = data.join("keyturn.db-wal");
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal_len, 0, "the WAL was checkpointed into the database");
        let db = rusqlite::Connection::open(data.join("keyturn.db")).expect("db");
        let lease: i64 = db.query_row("SELECT count(*) FROM leases", [], |r| r.get(0)).expect("lease");
        assert_eq!(lease, 0, "the rotator lease was handed over");
    }
}
