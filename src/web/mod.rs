//! The web layer: Rocket only. Routes turn HTTP into service calls and service results into
//! HTTP; they hold no domain rules. API errors are JSON in OAuth style.

pub mod admin;
pub mod api;
pub mod error;
pub mod federation;
pub mod forward;
pub mod oauth;
pub mod pages;
pub mod serve;
pub mod source;
mod tls;
pub mod wellknown;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant as Monotonic;

use crate::service::Keyturn;
use rocket::fairing::{Fairing, Info, Kind};
use rocket::figment::Figment;
use rocket::http::Header;
use rocket::shield::Shield;
use rocket::{Build, Data, Request, Response, Rocket};

/// Largest request body accepted anywhere, in bytes: the one limit the server
/// (`serve::BODY_BYTES` reads one byte more, to tell a longer body), Rocket's JSON and form
/// limits and the OAuth form reader all take.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// [`BODY_LIMIT_BYTES`] as people read it, for error messages.
pub const BODY_LIMIT: &str = "64 KiB";

/// [`BODY_LIMIT_BYTES`] as Rocket's limits take it.
pub fn body_limit() -> rocket::data::ByteUnit {
    rocket::data::ByteUnit::Byte(BODY_LIMIT_BYTES as u64)
}

/// Builds the Rocket instance serving `service`, configured by `figment`.
pub fn build(service: Arc<Keyturn>, figment: Figment) -> Rocket<Build> {
    // Each handler takes the capability it uses; the daemon itself only where a page spans
    // them (the overview, readiness, metrics).
    rocket::custom(figment)
        .manage(service.config_handle())
        .manage(service.clock().clone())
        .manage(service.metrics().clone())
        .manage(service.shared().clone())
        .manage(service.keys().clone())
        .manage(service.tokens().clone())
        .manage(service.revocations().clone())
        .manage(service.clients().clone())
        .manage(service.federation().clone())
        .manage(service.admins().clone())
        .manage(service.audit().clone())
        .manage(service)
        // keyturn sets its own security headers (below), so Rocket's default Shield, which
        // would set a subset of them again on every response, is replaced by an empty one.
        .attach(Shield::new())
        .attach(RequestLog)
        .mount("/", wellknown::routes())
        .mount("/", pages::routes())
        .mount("/", api::routes())
        .mount("/", oauth::routes())
        .mount("/", forward::routes())
        .mount("/", federation::routes())
        .mount("/", admin::routes())
        .register("/", error::catchers())
        .register("/admin", admin::catchers())
}

/// The headers every response carries (besides `X-Request-Id`).
pub(crate) const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
];

/// The one log line of an answered request.
pub(crate) fn log_request(id: &str, method: &str, path: &str, status: u16, took: std::time::Duration) {
    tracing::info!(
        target: "keyturn::http",
        request_id = %id,
        method = %method,
        path = %path,
        status = status,
        micros = took.as_micros() as u64,
        "request"
    );
}

/// A request's id: in its log line and its `X-Request-Id` response header. A random prefix
/// made once per process and a counter: unique across restarts and replicas, and cheap
/// enough for the JWKS path (ids correlate log lines; they are not secrets).
pub(crate) struct RequestId(pub(crate) String);

impl RequestId {
    pub(crate) fn next() -> RequestId {
        static PREFIX: OnceLock<String> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = PREFIX.get_or_init(|| crate::service::random_id(6));
        RequestId(format!("{prefix}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed)))
    }
}

/// Logs one line per request (method, path without query, status, duration) through
/// `tracing`, whose writer is non-blocking, so logging never waits on the terminal; counts the
/// request for `/metrics`; and sets the headers every response carries. One fairing for all
/// three, since it runs on every request, the JWKS fetches of a whole fleet included.
struct RequestLog;

#[rocket::async_trait]
impl Fairing for RequestLog {
    fn info(&self) -> Info {
        Info { name: "request log and security headers", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(Monotonic::now);
        req.local_cache(RequestId::next);
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let started = req.local_cache(Monotonic::now);
        let took = started.elapsed();
        if let Some(metrics) = req.rocket().state::<Arc<crate::metrics::Metrics>>() {
            let route = req.route().map_or("unmatched", |r| r.uri.as_str());
            metrics.http(route, req.method().as_str(), res.status().code, took);
        }
        let id = &req.local_cache(RequestId::next).0;
        res.set_header(Header::new("X-Request-Id", id.clone()));
        for (name, value) in SECURITY_HEADERS {
            res.set_header(Header::new(name, value));
        }
        // Dashboard pages are one administrator's view, and some show a secret once (a new
        // client secret, API key or token): no cache, shared or private, keeps any of them.
        if req.uri().path().starts_with("/admin") {
            res.set_header(Header::new("Cache-Control", "no-store"));
            res.set_header(Header::new("Pragma", "no-cache"));
        }
        log_request(id, req.method().as_str(), req.uri().path().as_str(), res.status().code, took);
    }
}

#[cfg(test)]
mod body_limit_tests {
    #[test]
    fn the_body_limit_reads_as_it_counts() {
        let read: rocket::data::ByteUnit = super::BODY_LIMIT.parse().expect("a size");
        assert_eq!(read, super::body_limit());
        assert_eq!(super::serve::BODY_BYTES, super::BODY_LIMIT_BYTES);
    }
}
