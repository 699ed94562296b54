//! HTTP/2 as an attacker uses it, against the real binary: many connections, each with every
//! stream it may open sending a body that never ends, and connections kept open only by
//! answering the server's PINGs. keyturn must hold its memory within its body budgets,
//! answer others throughout, and close what does no work (`web::serve`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpSocket;

use crate::daemon::{client, Daemon};
use crate::support::eventually;

/// The daemon's address as a socket address.
fn addr(d: &Daemon) -> SocketAddr {
    d.url.trim_start_matches("http://").parse().expect("address")
}

/// The daemon's resident memory, in MiB.
fn rss_mib(d: &Daemon) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).expect("/proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

fn healthz_answers(d: &Daemon) -> bool {
    client().get(format!("{}/healthz", d.url)).send().is_ok_and(|r| r.status().is_success())
}

/// An HTTP/2 (prior knowledge, h2c) connection to `to` from the loopback address `from`,
/// driven in the background (which also answers the server's PINGs). The handle resolves
/// when the server closes the connection.
async fn h2c(from: &str, to: SocketAddr) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().expect("ip"), 0)).expect("bind the source address");
    let tcp = socket.connect(to).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driven = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driven)
}

/// Opens a POST stream to the token endpoint and sends up to 64 KiB of body as fast as
/// flow control lets it, never ending the stream. Counts the bytes sent in `sent`.
async fn unfinished_body(mut send: h2::client::SendRequest<Bytes>, sent: Arc<AtomicU64>) {
    let Ok(ready) = send.ready().await else { return };
    send = ready;
    let req = hyper::Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "65536")
        .body(())
        .expect("request");
    let Ok((_answer, mut stream)) = send.send_request(req, false) else { return };
    let mut left = 64 * 1024 - 1;
    stream.reserve_capacity(left);
    while left > 0 {
        match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) if n > 0 => {
                let n = n.min(left);
                if stream.send_data(Bytes::from(vec![b'a'; n]), false).is_err() {
                    return;
                }
                sent.fetch_add(n as u64, Ordering::Relaxed);
                left -= n;
            }
            Some(Ok(_)) => continue,
            _ => return,
        }
    }
    // Held open, never ended, until the test drops the runtime.
    std::future::pending::<()>().await;
}

/// The reported attack, at the size the issue names: 600 h2c connections (three addresses,
/// within the per-address limit), each with as many streams as the server allows, each
/// sending a 64 KiB body that never ends. Before the bounds, 252 such connections grew the
/// daemon's memory by 1.3 GiB in 11 s. Now the flow-control windows and the body budgets
/// hold the senders back: memory grows by well under 200 MiB and `/healthz` answers
/// throughout.
#[test]
fn unfinished_http2_bodies_on_600_connections_stay_within_the_body_budgets() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    // Long time-outs: the bodies must stay unfinished while memory is measured.
    let env = [("KEYTURN_CLIENT_HEADER_TIMEOUT", "120s"), ("KEYTURN_CLIENT_BODY_TIMEOUT", "120s")];
    let d = Daemon::start(&data, &env, "h2-bodies");
    assert!(healthz_answers(&d));
    let before = rss_mib(&d);
    let to = addr(&d);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sent = Arc::new(AtomicU64::new(0));
    let streams = keyturn::web::serve::H2_STREAMS as usize;
    runtime.block_on(async {
        for i in 0..600 {
            let from = ["127.0.0.2", "127.0.0.3", "127.0.0.4"][i % 3];
            let (send, driven) = h2c(from, to).await;
            std::mem::forget(driven);
            for _ in 0..streams {
                tokio::spawn(unfinished_body(send.clone(), sent.clone()));
            }
        }
    });
    // Flooded: wait until the senders are held back (no byte more for a second), checking
    // all along that others are still answered.
    let mut last = u64::MAX;
    let mut peak = before;
    eventually("the senders to be held back by flow control", Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_secs(1));
        assert!(healthz_answers(&d), "/healthz answers during the flood");
        peak = peak.max(rss_mib(&d));
        let now = sent.load(Ordering::Relaxed);
        let stalled = now == last;
        last = now;
        stalled.then_some(())
    });
    peak = peak.max(rss_mib(&d));
    let grew = peak - before;
    let offered = 600.0 * streams as f64 * 64.0 / 1024.0;
    let sent_mib = last as f64 / (1024.0 * 1024.0);
    println!("RSS {before:.0} -> {peak:.0} MiB (+{grew:.0}); {sent_mib:.0} MiB sent of {offered:.0} MiB offered");
    assert!(grew < 160.0, "memory grew by {grew:.0} MiB under unfinished HTTP/2 bodies (bound: well under 200)");
    assert!(sent_mib < offered / 4.0, "the senders were held back: {sent_mib:.0} MiB of {offered:.0} MiB got in");
    assert!(healthz_answers(&d), "/healthz answers at the end of the flood");
    drop(runtime);
    eventually("the daemon to answer after the flood", Duration::from_secs(20), || healthz_answers(&d).then_some(()));
}

/// The reported case: an HTTP/2 connection that only answers the server's PINGs stayed open
/// for 45 s and more. Now one with no request for `client_header_timeout` gets GOAWAY and is
/// closed; PINGs are not activity.
#[test]
fn an_http2_connection_that_only_answers_pings_is_closed_after_the_header_time_out() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_CLIENT_HEADER_TIMEOUT", "2s"), ("KEYTURN_CLIENT_BODY_TIMEOUT", "2s")];
    let d = Daemon::start(&data, &env, "h2-idle");
    let to = addr(&d);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (send, driven) = h2c("127.0.0.2", to).await;
        let mut send = send.ready().await.expect("ready");
        let req = hyper::Request::get("/healthz").body(()).expect("request");
        let (answer, _) = send.send_request(req, true).expect("send");
        assert_eq!(answer.await.expect("answer").status(), 200, "the connection works");
        let started = tokio::time::Instant::now();
        // The client keeps answering PINGs (the h2 connection task does) and asks nothing.
        tokio::time::timeout(Duration::from_secs(20), driven)
            .await
            .expect("the idle HTTP/2 connection was still open after 20 s")
            .expect("join");
        let after = started.elapsed();
        assert!(after >= Duration::from_millis(1500), "closed after {after:?}, before the time-out");
        // A connection with a request in flight is not idle: a body still arriving keeps it.
    });
    assert!(healthz_answers(&d));
}
