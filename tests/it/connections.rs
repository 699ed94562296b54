//! Connections an attacker (or an unlucky network) opens and then neglects: idle ones,
//! half-sent headers, bodies that never arrive, a flood from one address. Each test runs the
//! real binary and talks raw TCP, so it sees exactly what a client sees. keyturn must stay
//! reachable and close what is neglected, by its limits and time-outs (`web::serve`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::daemon::{client, Daemon};
use crate::support::eventually;

/// The daemon's address as a socket address.
fn addr(d: &Daemon) -> SocketAddr {
    d.url.trim_start_matches("http://").parse().expect("address")
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: IpAddr = from.parse().expect("ip");
    socket.bind(&SocketAddr::new(from, 0).into()).expect("bind the source address");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

/// Whether the server closed `conn`: a read returns end of file (or a reset) within `limit`.
fn closed_within(conn: &mut TcpStream, limit: Duration) -> bool {
    conn.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (a 408, say) before the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// What the server answers on `conn` (until it closes it, or `limit` passes).
fn answer_within(conn: &mut TcpStream, limit: Duration) -> String {
    conn.set_read_timeout(Some(limit)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn healthz_answers(d: &Daemon) -> bool {
    client().get(format!("{}/healthz", d.url)).send().is_ok_and(|r| r.status().is_success())
}

const TIMEOUTS: [(&str, &str); 2] = [("KEYTURN_CLIENT_HEADER_TIMEOUT", "2s"), ("KEYTURN_CLIENT_BODY_TIMEOUT", "2s")];

/// The reported attack: more idle connections (no byte sent) than the process has file
/// descriptors. Before the limits, accept failed for everyone and nothing answered. Now the
/// flood's address is held to its share, the daemon answers others throughout, and the idle
/// connections are closed after the header time-out.
#[test]
fn an_idle_flood_from_one_address_neither_exhausts_descriptors_nor_locks_others_out() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let mut env = TIMEOUTS.to_vec();
    env.extend([("KEYTURN_MAX_CONNECTIONS", "200"), ("KEYTURN_MAX_CONNECTIONS_PER_ADDRESS", "100")]);
    let mut d = Daemon::spawn(&data, &env, "idle-flood");
    // The descriptors systemd would give, scaled down: 256 (the flood below is 400).
    let limited = std::process::Command::new("prlimit")
        .args(["--nofile=256:256", "--pid", &d.child.id().to_string()])
        .status()
        .expect("prlimit (util-linux)");
    assert!(limited.success(), "prlimit failed");
    d.wait_ready(Duration::from_secs(30));
    let to = addr(&d);

    let mut flood: Vec<TcpStream> = (0..400).map(|_| connect_from("127.0.0.2", to)).collect();
    assert!(healthz_answers(&d), "another client is answered while the flood is open");
    // Over its address's share (100), the flood's connections are closed as they arrive.
    let refused = eventually("the flood's extra connections to be refused", Duration::from_secs(10), || {
        let text = client().get(format!("{}/metrics", d.url)).send().ok()?.text().ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("keyturn_connections_refused_total{limit=\"max_connections_per_address\"}"))?;
        let n: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (n >= 200).then_some(n)
    });
    assert!(refused <= 300, "{refused} refused of 400, with 100 allowed");
    // The rest are closed after the header time-out (2 s), not left open.
    for c in &mut flood {
        assert!(closed_within(c, Duration::from_secs(10)), "an idle connection was still open after 10 s");
    }
    assert!(healthz_answers(&d));
    let open = eventually("the open-connection gauge to fall", Duration::from_secs(10), || {
        let text = client().get(format!("{}/metrics", d.url)).send().ok()?.text().ok()?;
        let line = text.lines().find(|l| l.starts_with("keyturn_connections_open "))?.to_owned();
        (line.trim_end().ends_with(" 1") || line.trim_end().ends_with(" 0")).then_some(line)
    });
    assert!(open.starts_with("keyturn_connections_open"));
}

/// Many addresses together reach the total limit: new connections are closed on arrival
/// (none is left hanging), and the daemon serves again as soon as they end.
#[test]
fn the_total_connection_limit_closes_new_connections_until_some_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    // Long time-outs: the held connections must stay open until the test drops them.
    let env = [
        ("KEYTURN_CLIENT_HEADER_TIMEOUT", "60s"),
        ("KEYTURN_MAX_CONNECTIONS", "30"),
        ("KEYTURN_MAX_CONNECTIONS_PER_ADDRESS", "20"),
    ];
    let d = Daemon::start(&data, &env, "total-limit");
    let to = addr(&d);
    let held: Vec<TcpStream> =
        ["127.0.0.2", "127.0.0.3"].iter().flat_map(|ip| (0..15).map(|_| connect_from(ip, to))).collect();
    // Wait until the daemon has accepted all thirty, then one more is closed at once.
    eventually("thirty connections to be accepted", Duration::from_secs(10), || {
        let mut extra = connect_from("127.0.0.4", to);
        closed_within(&mut extra, Duration::from_millis(300)).then_some(())
    });
    d.wait_for_log("connection limit reached", Duration::from_secs(10));
    drop(held);
    eventually("the daemon to answer again", Duration::from_secs(10), || healthz_answers(&d).then_some(()));
}

/// Half-sent headers (a slow-loris client), a body declared and never sent, and an idle
/// keep-alive connection: each is closed within its time-out; the body's with a 408.
#[test]
fn neglected_requests_are_closed_by_their_time_outs() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = Daemon::start(&data, &TIMEOUTS, "time-outs");
    let to = addr(&d);

    let mut loris = connect_from("127.0.0.2", to);
    loris.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyturn\r\nX-Slow: ").expect("half the headers");
    assert!(closed_within(&mut loris, Duration::from_secs(10)), "half-sent headers held the connection");

    // The reported case: Content-Length 1 MiB, 12 bytes sent.
    let mut body = connect_from("127.0.0.2", to);
    body.write_all(
        b"POST /oauth/token HTTP/1.1\r\nHost: keyturn\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1048576\r\n\r\ngrant_type=c",
    )
    .expect("headers and 12 bytes");
    let answer = answer_within(&mut body, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "a body that never arrives gets 408: {answer:?}");
    assert!(answer.contains("request_timeout"), "{answer}");

    let mut idle = connect_from("127.0.0.2", to);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyturn\r\n\r\n").expect("a request");
    let mut first = [0u8; 12];
    idle.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    idle.read_exact(&mut first).expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, Duration::from_secs(10)), "an idle keep-alive connection stayed open");
    assert!(healthz_answers(&d));
}

/// A body longer than the limit is not read to its end: the application refuses it with
/// 413 (as it always did), and the connection, whose body was left unread, closes.
#[test]
fn an_oversized_body_is_refused_and_its_connection_closed() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = Daemon::start(&data, &TIMEOUTS, "oversized");
    let mut conn = connect_from("127.0.0.2", addr(&d));
    let big = vec![b'a'; 200 * 1024];
    write!(
        conn,
        "POST /api/v1/tokens HTTP/1.1\r\nHost: keyturn\r\nAuthorization: Bearer kt_x.y\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .expect("headers");
    // The server stops reading after the limit, so the rest may not be accepted: ignore that.
    let _ = conn.write_all(&big);
    let answer = answer_within(&mut conn, Duration::from_secs(10));
    let status = answer.lines().next().unwrap_or_default().to_owned();
    assert!(status.starts_with("HTTP/1.1 4"), "{answer:?}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
}
