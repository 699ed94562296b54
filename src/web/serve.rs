//! The HTTP server: it owns the listening socket, so it decides how many connections stay
//! open and for how long. (Rocket 0.5's own server sets no header-read, body-read or idle
//! time-out and no connection limit: idle connections could take every file descriptor.)
//!
//! - At most `max_connections` open connections, and at most `max_connections_per_address`
//!   from one client address (trusted proxies are exempt: every client behind them shares
//!   their address). A connection over a limit is closed as soon as it is accepted.
//! - A request's headers must arrive within `client_header_timeout`, counted from the
//!   connection's start or its previous answer; its body within `client_body_timeout` (else
//!   408 and the connection closes).
//! - A connection with no request in flight and none begun for `client_header_timeout` is
//!   closed: HTTP/1 at its next header read, HTTP/2 with GOAWAY ([`Activity`]). Answering
//!   the server's PINGs is not activity.
//! - A body is read up to [`BODY_BYTES`] and one byte more: a longer one is refused by the
//!   application's own limits, and the connection closes after the answer.
//! - HTTP/2: at most [`H2_STREAMS`] streams at once per connection, and flow-control windows
//!   of one body's size, so the protocol layer holds at most [`H2_WINDOW`] of unread body
//!   bytes per connection.
//! - Every body byte held in memory is counted against one budget for the connection
//!   ([`CONNECTION_BODY_BUDGET`]) and one for the process ([`PROCESS_BODY_BUDGET`]), taken
//!   before the bytes are read off the connection ([`BodyBudget`]): when either is spent,
//!   reading waits (the sender is held back by flow control), within the body time-out.
//!
//! Each request, read whole, is dispatched in process to the Rocket application (its
//! routes, fairings and catchers), through Rocket's local client, which runs the same
//! dispatch as Rocket's own server — except a plain GET or HEAD of the JWKS, the request a
//! whole fleet of verifiers makes, which is answered here from the published snapshot
//! ([`jwks_answer`], built by the same function as the Rocket route's answer). The socket is
//! tokio's, and TLS is tokio-rustls configured as Rocket configures its own ([`super::tls`]):
//! nothing here reaches into Rocket's internals.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, IF_NONE_MATCH,
    TRANSFER_ENCODING,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rocket::http::{Cookie, Header, Method};
use rocket::local::asynchronous::Client;
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;

mod conn;

use crate::service::Keyturn;
use conn::{Activity, BodyBudget, FirstByteDeadline, Held};

/// The most request-body bytes read: the application's one limit ([`super::BODY_LIMIT_BYTES`]).
pub const BODY_BYTES: usize = super::BODY_LIMIT_BYTES;

/// The most bytes of a request's line and headers.
const HEAD_BYTES: usize = 64 * 1024;

/// HTTP/2 streams one connection may have open at once (hyper's default is 200).
pub const H2_STREAMS: u32 = 16;

/// HTTP/2 flow-control windows, per stream and per connection: one whole body, so a
/// connection's unread bytes inside the protocol layer never exceed it.
pub const H2_WINDOW: u32 = BODY_BYTES as u32;

/// Body bytes one connection may hold in memory at once: one whole body (and the byte that
/// shows it is too long) plus a few small ones.
pub const CONNECTION_BODY_BUDGET: usize = BODY_BYTES + 16 * 1024;

/// Body bytes the whole process may hold in memory at once: 256 whole bodies (legitimate
/// bodies are forms and small JSON documents of a few hundred bytes).
pub const PROCESS_BODY_BUDGET: usize = 256 * BODY_BYTES;

/// The room taken ahead of each read from a body: an HTTP/2 DATA frame's default maximum.
const BODY_STEP: usize = 16 * 1024;

/// How long requests in flight have to finish after a shutdown begins, then how long more
/// their connections have to close.
const GRACE: Duration = Duration::from_secs(5);
const MERCY: Duration = Duration::from_secs(5);

/// The bound listening socket, and the TLS acceptor when TLS is configured.
pub struct Bound {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Bound {
    /// Binds the configured address (before anything else starts, so a taken port or a bad
    /// certificate refuses start-up without a change).
    pub async fn bind(config: &Config) -> std::io::Result<Bound> {
        // The certificate first: a bad one refuses start-up before the port is taken.
        let tls = config.tls().map(|(cert, key)| super::tls::acceptor(cert, key)).transpose()?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(config.address, config.port)).await?;
        Ok(Bound { listener, tls })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// The open connections, in all and per client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    /// Whether the last connection was refused for the total limit (logged once per episode).
    refusing: bool,
}

/// Counts open connections; hands out a [`Slot`] while a connection may open.
struct Slots {
    open: Mutex<Open>,
    /// Woken when a connection closes.
    freed: Notify,
    service: Arc<Keyturn>,
}

/// One open connection's place: given back when the connection ends.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let config = self.service.config();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= config.max_connections {
            if !open.refusing {
                open.refusing = true;
                tracing::warn!(
                    limit = config.max_connections,
                    "connection limit reached: new connections are closed until some end (max_connections)"
                );
            }
            self.service.metrics().connection_refused("max_connections");
            return None;
        }
        let from_here = open.by_address.get(&ip).copied().unwrap_or(0);
        if from_here >= config.max_connections_per_address && !config.trusted_proxies.contains(&ip) {
            self.service.metrics().connection_refused("max_connections_per_address");
            return None;
        }
        if open.refusing {
            open.refusing = false;
            tracing::info!("accepting connections again: below the connection limit");
        }
        open.total += 1;
        *open.by_address.entry(ip).or_insert(0) += 1;
        self.service.metrics().connections_open(open.total);
        Some(Slot { slots: self.clone(), ip })
    }

    /// Resolves once every connection has ended.
    async fn all_closed(&self) {
        loop {
            let freed = self.freed.notified();
            if self.open.lock().unwrap_or_else(PoisonError::into_inner).total == 0 {
                return;
            }
            freed.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.ip);
            }
        }
        self.slots.service.metrics().connections_open(open.total);
        drop(open);
        self.slots.freed.notify_one();
    }
}

/// Serves `app` on `bound` until the application's shutdown handle is notified or the
/// process gets SIGTERM or SIGINT; then stops accepting, gives requests in flight
/// [`GRACE`] to finish and [`MERCY`] more to close, and runs the shutdown fairings.
pub async fn serve(bound: Bound, app: Client, service: Arc<Keyturn>) {
    let app = Arc::new(app);
    let slots = Arc::new(Slots { open: Mutex::default(), freed: Notify::new(), service });
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    let stop = stop_requested(app.rocket().shutdown());
    tokio::pin!(stop);
    accept_until(bound, &app, &slots, &stop_seen, stop.as_mut()).await;
    tracing::info!("shutting down: no new connections; requests in flight have 5 s to finish");
    // Every connection is asked to finish (HTTP/2: GOAWAY); the application is told too:
    // anything waiting on its shutdown handle ends.
    let _ = stopping.send(true);
    app.rocket().shutdown().notify();
    if tokio::time::timeout(GRACE + MERCY, slots.all_closed()).await.is_err() {
        tracing::warn!("shutdown: connections still open after 10 s are dropped");
    }
    if let Ok(app) = Arc::try_unwrap(app) {
        app.terminate().await;
    }
}

/// Resolves when the application's shutdown handle is notified, or on SIGTERM or SIGINT.
async fn stop_requested(shutdown: rocket::Shutdown) {
    use tokio::signal::unix::SignalKind;
    tokio::select! {
        _ = shutdown => {}
        _ = signalled(SignalKind::terminate()) => {}
        _ = signalled(SignalKind::interrupt()) => {}
    }
}

/// Resolves when the process gets `kind` (never, if it cannot listen for it).
async fn signalled(kind: tokio::signal::unix::SignalKind) {
    match tokio::signal::unix::signal(kind) {
        Ok(mut signal) => drop(signal.recv().await),
        Err(_) => std::future::pending().await,
    }
}

async fn accept_until(
    bound: Bound,
    app: &Arc<Client>,
    slots: &Arc<Slots>,
    stopping: &tokio::sync::watch::Receiver<bool>,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) {
    let header_timeout = slots.service.config().client_header_timeout;
    let front = Arc::new(Front::new(app.clone(), slots.service.clone()));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.as_mut() => return,
            accepted = bound.listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait until a connection ends (or a
                // moment passes) rather than spin on accept.
                tracing::warn!("cannot accept a connection: {e}");
                let _ = tokio::time::timeout(Duration::from_millis(100), slots.freed.notified()).await;
                continue;
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (front, tls, stopping) = (front.clone(), bound.tls.clone(), stopping.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => front.serve(tcp, peer, stopping).await,
                // The handshake is part of the header time-out: a client that opens a
                // connection and never finishes it is closed like one that sends nothing.
                Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => front.serve(stream, peer, stopping).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake not finished within the header time-out"),
                },
            }
        });
    }
}

/// What every connection is served with: the protocol settings, the application, and the
/// body budget the whole process shares.
struct Front {
    builder: auto::Builder<TokioExecutor>,
    app: Arc<Client>,
    service: Arc<Keyturn>,
    process_budget: Arc<Semaphore>,
    header_timeout: Duration,
    body_timeout: Duration,
}

impl Front {
    fn new(app: Arc<Client>, service: Arc<Keyturn>) -> Front {
        let (header_timeout, body_timeout) =
            (service.config().client_header_timeout, service.config().client_body_timeout);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            // A request's line and headers in at most 64 KiB, else 431: hyper's default (about
            // 400 KiB) times 4096 connections would be over 1.5 GiB of buffers.
            .max_buf_size(HEAD_BYTES)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_STREAMS)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            .adaptive_window(false)
            .max_header_list_size(HEAD_BYTES as u32)
            .keep_alive_interval(Some(header_timeout))
            .keep_alive_timeout(header_timeout);
        let process_budget = Arc::new(Semaphore::new(PROCESS_BODY_BUDGET));
        Front { builder, app, service, process_budget, header_timeout, body_timeout }
    }

    /// Serves one connection (plain or after its TLS handshake) until it ends, is idle for
    /// the header time-out, or the server stops.
    async fn serve<IO>(&self, io: IO, peer: SocketAddr, mut stopping: tokio::sync::watch::Receiver<bool>)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (header_timeout, body_timeout) = (self.header_timeout, self.body_timeout);
        let activity = Arc::new(Activity::new());
        let budget = BodyBudget::new(self.process_budget.clone());
        let (app, keyturn, seen) = (self.app.clone(), self.service.clone(), activity.clone());
        let service = hyper::service::service_fn(move |req| {
            let (app, keyturn, budget) = (app.clone(), keyturn.clone(), budget.clone());
            let request = seen.begin();
            async move {
                let _request = request;
                if let Some(res) = jwks_answer(&keyturn, &req) {
                    return Ok::<_, Infallible>(res);
                }
                Ok::<_, Infallible>(answer(&app, peer, req, body_timeout, &budget).await)
            }
        });
        let io = TokioIo::new(FirstByteDeadline::new(io, header_timeout));
        let connection = self.builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut closing = false;
        let ended = loop {
            let idle_until = activity.idle_deadline(header_timeout);
            tokio::select! {
                ended = connection.as_mut() => break ended,
                _ = tokio::time::sleep_until(idle_until), if !closing => {
                    if activity.idle_for(header_timeout) {
                        tracing::debug!(%peer, "connection idle for the header time-out: closed");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
                _ = stopping.wait_for(|stop| *stop), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%peer, "connection ended: {e}");
        }
    }
}

/// The JWKS, answered here from the published snapshot without the dispatch through Rocket:
/// it is what every verifier of a fleet fetches, so its path is kept short. The same bytes,
/// headers (`ETag`, `Cache-Control`, 304 on a matching `If-None-Match`, the security headers,
/// `X-Request-Id`), counts and log line as every other answer. Only a bodiless GET or HEAD
/// of exactly the JWKS path takes it; anything else goes to the application.
fn jwks_answer(service: &Keyturn, req: &hyper::Request<Incoming>) -> Option<hyper::Response<Full<Bytes>>> {
    const PATH: &str = "/.well-known/jwks.json";
    let head = req.method() == hyper::Method::HEAD;
    if req.uri().path() != PATH
        || !(req.method() == hyper::Method::GET || head)
        || req.headers().contains_key(CONTENT_LENGTH)
        || req.headers().contains_key(TRANSFER_ENCODING)
    {
        return None;
    }
    let started = std::time::Instant::now();
    let inm = req.headers().get(IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let answer = super::wellknown::jwks_answer(service.keys(), service.metrics(), inm);
    let (id, status) = (super::RequestId::next(), answer.status());
    let body = answer.body().map_or_else(Bytes::new, |b| Bytes::from_owner(b.clone()));
    let mut out = hyper::Response::new(Full::new(body));
    *out.status_mut() = hyper::StatusCode::from_u16(status).ok()?;
    let mut out = without_body_for_head(head, out);
    let headers = out.headers_mut();
    headers.reserve(4 + super::SECURITY_HEADERS.len());
    for (name, value) in answer.headers() {
        headers.insert(name, HeaderValue::from_str(&value).ok()?);
    }
    headers.insert(X_REQUEST_ID, HeaderValue::from_str(&id.0).ok()?);
    for (name, value) in security_headers() {
        headers.insert(name.clone(), value.clone());
    }
    let method = if head { "HEAD" } else { "GET" };
    let took = started.elapsed();
    service.metrics().http(PATH, method, status, took);
    super::log_request(&id.0, method, PATH, status, took);
    Some(out)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// [`super::SECURITY_HEADERS`], parsed once: the JWKS answer adds them to every response.
fn security_headers() -> &'static [(HeaderName, HeaderValue)] {
    static PARSED: OnceLock<Vec<(HeaderName, HeaderValue)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        super::SECURITY_HEADERS
            .iter()
            .filter_map(|(name, value)| {
                Some((HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_static(value)))
            })
            .collect()
    })
}

/// Reads the request's body within the time-out, the size limit and the body budgets,
/// then has the application answer it.
async fn answer(
    app: &Client,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
    body_timeout: Duration,
    budget: &BodyBudget,
) -> hyper::Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let mut held = Held::default();
    let waiting_for_budget = AtomicBool::new(false);
    let read = async {
        let mut data = Vec::new();
        if body.is_end_stream() {
            return Ok::<_, hyper::Error>((data, false));
        }
        loop {
            // Room for the next frame is taken before it is read off the connection, so a
            // spent budget holds the sender back instead of growing memory.
            let want = BODY_STEP.min(BODY_BYTES + 1 - data.len());
            let need = (data.len() + want).saturating_sub(held.bytes);
            if need > 0 {
                waiting_for_budget.store(true, Ordering::Relaxed);
                budget.take(&mut held, need).await;
                waiting_for_budget.store(false, Ordering::Relaxed);
            }
            let Some(frame) = body.frame().await else { break };
            if let Ok(chunk) = frame?.into_data() {
                let keep = chunk.len().min(BODY_BYTES + 1 - data.len());
                let extra = (data.len() + keep).saturating_sub(held.bytes);
                if extra > 0 {
                    // An HTTP/1 read can be larger than the step: count it all the same.
                    budget.take(&mut held, extra).await;
                }
                // Exactly what the budget counted: a doubling Vec would hold up to twice that.
                data.reserve_exact(keep);
                data.extend_from_slice(&chunk[..keep]);
                if data.len() > BODY_BYTES {
                    return Ok((data, true));
                }
            }
        }
        held.keep_only(data.len());
        Ok((data, false))
    };
    let (data, cut) = match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            tracing::info!(%peer, "request body could not be read: {e}");
            return refusal(400, "invalid_request", "the request body could not be read".into());
        }
        Err(_) if waiting_for_budget.load(Ordering::Relaxed) => {
            tracing::warn!(%peer, "request body refused: the memory for request bodies stayed spent for {}s", body_timeout.as_secs());
            let mut busy = refusal(
                503,
                "temporarily_unavailable",
                "too many request bodies are in flight: try again shortly".into(),
            );
            busy.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            return busy;
        }
        Err(_) => {
            tracing::info!(%peer, "request body not received within {}s: answered 408", body_timeout.as_secs());
            let text = format!("the request body did not arrive within {} s", body_timeout.as_secs());
            return refusal(408, "request_timeout", text);
        }
    };
    // Boxed: Rocket's dispatch is a large future, and hyper allocates each stream's whole
    // future when the stream opens; unboxed, every HTTP/2 stream still sending its body
    // would hold room for a dispatch it has not reached.
    let answered = Box::pin(dispatch(app, peer, parts, data, cut)).await;
    drop(held);
    answered
}

/// Has the application answer a request whose body was read whole.
async fn dispatch(
    app: &Client,
    peer: SocketAddr,
    parts: hyper::http::request::Parts,
    data: Vec<u8>,
    cut: bool,
) -> hyper::Response<Full<Bytes>> {
    let Ok(method) = parts.method.as_str().parse::<Method>() else {
        return refusal(405, "method_not_allowed", "this method is not served".into());
    };
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut request = app.req(method, uri).remote(peer).body(data);
    for (name, value) in &parts.headers {
        // Rocket's server skips header values that are not UTF-8 too.
        let Ok(value) = std::str::from_utf8(value.as_bytes()) else { continue };
        if name == COOKIE {
            for cookie in value.split(';').map(str::trim) {
                if let Ok(cookie) = Cookie::parse_encoded(cookie.to_owned()) {
                    request = request.cookie(cookie);
                }
            }
        }
        request.add_header(Header::new(name.as_str().to_owned(), value.to_owned()));
    }
    // HTTP/2 carries the host in the URI (`:authority`), not in a header.
    if !parts.headers.contains_key(HOST) {
        if let Some(authority) = parts.uri.authority() {
            request.add_header(Header::new("Host", authority.as_str().to_owned()));
        }
    }
    let response = request.dispatch().await;
    let mut out = hyper::Response::builder().status(response.status().code);
    for header in response.headers().iter() {
        if header.name() != CONTENT_LENGTH.as_str() {
            out = out.header(header.name.as_str(), header.value.as_bytes());
        }
    }
    if cut {
        // The rest of the body was never read: the connection cannot carry another request.
        out = out.header(CONNECTION, HeaderValue::from_static("close"));
    }
    let body = response.into_bytes().await.unwrap_or_default();
    let out = out.body(Full::new(Bytes::from(body))).unwrap_or_else(|e| {
        tracing::error!("the application's answer is not a valid HTTP response: {e}");
        refusal(500, "server_error", "the answer could not be sent".into())
    });
    without_body_for_head(parts.method == hyper::Method::HEAD, out)
}

/// The answer to a HEAD request: the headers of the GET answer, its `Content-Length`
/// included, and no body. (hyper leaves a HEAD answer's body out on HTTP/1 by itself, but
/// on HTTP/2 would send it, which clients take as a protocol error.)
fn without_body_for_head(head: bool, response: hyper::Response<Full<Bytes>>) -> hyper::Response<Full<Bytes>> {
    if !head {
        return response;
    }
    let length = response.body().size_hint().exact().unwrap_or(0);
    let (mut parts, _) = response.into_parts();
    // A 304 or 204 has no body to give the length of.
    let bodiless = matches!(parts.status, hyper::StatusCode::NOT_MODIFIED | hyper::StatusCode::NO_CONTENT);
    if !bodiless {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    hyper::Response::from_parts(parts, Full::new(Bytes::new()))
}

/// An answer the server gives itself (the request never reached the application), in the
/// API's JSON error shape; the connection closes after it.
fn refusal(status: u16, error: &str, description: String) -> hyper::Response<Full<Bytes>> {
    let body = serde_json::json!({"error": error, "error_description": description}).to_string();
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
