//! Graceful shutdown: SIGTERM and SIGINT stop the daemon within a bounded time with exit 0,
//! after in-flight requests finish; the WAL is checkpointed and the lease handed over.

use std::time::{Duration, Instant};

use crate::daemon::{client, keyturn_once, Daemon};

#[test]
fn sigterm_and_sigint_exit_zero_promptly_and_checkpoint() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[]);
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
        let log = d.log.clone();
        let status = d.signal_and_wait(signal, Duration::from_secs(15));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let stopped: Vec<&str> = text.lines().filter(|l| l.contains("keyturn stopped")).collect();
        assert_eq!(stopped.len(), 1, "one line says what the shutdown did:\n{text}");
        assert!(stopped[0].contains("rotator lease handed over"), "{}", stopped[0]);
        assert!(status.success(), "SIG{signal}: exit {status}");
        eprintln!("SIG{signal}: exited 0 after {:?}", started.elapsed());
        let db = crate::support::database(&data, &[]);
        if db.dialect() == keyturn::store::Dialect::Sqlite {
            let wal = data.join("keyturn.db-wal");
            let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            assert_eq!(wal_len, 0, "the WAL was checkpointed into the database");
        }
        let lease = crate::support::scalar(&db, "SELECT count(*) FROM leases", keyturn::store::args![]);
        assert_eq!(lease, 0, "the rotator lease was handed over");
    }
}

#[test]
fn in_flight_requests_finish_after_sigterm() {
    use std::io::{Read, Write};
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[]);
    let key = keyturn_once(&data, &["apikey", "create", "--role", "issuer", "--name", "t"], &[]).trim().to_owned();
    let d = Daemon::start(&data, &[], "in-flight");
    let addr = d.url.trim_start_matches("http://").to_owned();
    let body = br#"{"sub": "late", "aud": "api"}"#;
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    // `Expect: 100-continue`: the server says "100 Continue" when the handler starts reading
    // the body, so the test knows the request is in flight (not merely sent) before SIGTERM.
    write!(
        conn,
        "POST /api/v1/tokens HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("headers");
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).expect("100 Continue");
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&interim));
    conn.write_all(&body[..10]).expect("half a body");
    // The request is in flight, its body half sent: now SIGTERM.
    d.signal("TERM");
    // The daemon says it is shutting down while the request still waits for its body.
    d.wait_for_log("shutting down", Duration::from_secs(10));
    conn.write_all(&body[10..]).expect("rest of the body");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "the in-flight request was answered: {answer}");
    assert!(answer.contains("access_token"));
    let status = d.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(status.success(), "exit {status}");
}
