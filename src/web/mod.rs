//! The web layer: Rocket only. Routes turn HTTP into service calls and service results into
//! HTTP; they hold no domain rules. API errors are JSON in OAuth style.

pub mod admin;
pub mod api;
pub mod error;
pub mod oauth;
pub mod pages;
pub mod wellknown;

use std::sync::Arc;
use std::time::Instant as Monotonic;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::figment::Figment;
use rocket::http::Header;
use rocket::{Build, Data, Request, Response, Rocket};

use crate::service::Keyturn;

/// Largest request body accepted anywhere (the API's limit).
pub const BODY_LIMIT: &str = "64 KiB";

/// Builds the Rocket instance serving `service`, configured by `figment`.
pub fn build(service: Arc<Keyturn>, figment: Figment) -> Rocket<Build> {
    rocket::custom(figment)
        .manage(service)
        .attach(RequestLog)
        .attach(SecurityHeaders)
        .mount("/", wellknown::routes())
        .mount("/", pages::routes())
        .mount("/", api::routes())
        .mount("/", oauth::routes())
        .mount("/", admin::routes())
        .register("/", error::catchers())
        .register("/admin", admin::catchers())
}

/// A request's id: in its log line and its `X-Request-Id` response header.
struct RequestId(String);

/// Logs one line per request (method, path without query, status, duration) through
/// `tracing`, whose writer is non-blocking, so logging never waits on the terminal.
struct RequestLog;

#[rocket::async_trait]
impl Fairing for RequestLog {
    fn info(&self) -> Info {
        Info { name: "request log", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(Monotonic::now);
        req.local_cache(|| RequestId(crate::service::random_id(9)));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let started = req.local_cache(Monotonic::now);
        let took = started.elapsed();
        if let Some(service) = req.rocket().state::<Arc<Keyturn>>() {
            let route = req.route().map(|r| r.uri.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
            service.metrics().http(&route, req.method().as_str(), res.status().code, took);
        }
        let id = &req.local_cache(|| RequestId(crate::service::random_id(9))).0;
        res.set_header(Header::new("X-Request-Id", id.clone()));
        tracing::info!(
            target: "keyturn::http",
            request_id = %id,
            method = %req.method(),
            path = %req.uri().path(),
            status = res.status().code,
            micros = took.as_micros() as u64,
            "request"
        );
    }
}

/// Headers every response carries.
struct SecurityHeaders;

#[rocket::async_trait]
impl Fairing for SecurityHeaders {
    fn info(&self) -> Info {
        Info { name: "security headers", kind: Kind::Response }
    }

    async fn on_response<'r>(&self, _: &'r Request<'_>, res: &mut Response<'r>) {
        res.set_header(Header::new("X-Content-Type-Options", "nosniff"));
        res.set_header(Header::new("Referrer-Policy", "no-referrer"));
        res.set_header(Header::new(
            "Content-Security-Policy",
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ));
        res.set_header(Header::new("X-Frame-Options", "DENY"));
    }
}
