//! The documents verifiers fetch: JWKS, discovery, and the health probes. Served from the
//! service's in-memory snapshot: no database read, no serialization per request.

use std::borrow::Cow;
use std::sync::Arc;

use rocket::http::{ContentType, Header, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::response::{self, Responder};
use rocket::serde::json::serde_json::json;
use rocket::{get, routes, Request, Response, Route, State};

use crate::keys::jwks::Document;
use crate::metrics::Metrics;
use crate::service::{Keys, Keyturn};

pub fn routes() -> Vec<Route> {
    routes![jwks, openid_configuration, oauth_metadata, healthz, readyz, metrics]
}

/// The `If-None-Match` request header, when present.
pub struct IfNoneMatch(pub Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for IfNoneMatch {
    type Error = std::convert::Infallible;
    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(IfNoneMatch(req.headers().get_one("If-None-Match").map(str::to_owned)))
    }
}

/// A cacheable document: 200 with the body, or 304 when the client's ETag matches.
pub struct Cached {
    doc: Document,
    content_type: ContentType,
    cache_control: String,
    /// Whether the answer is 304 Not Modified.
    pub not_modified: bool,
}

impl Cached {
    fn new(doc: Document, content_type: ContentType, max_age: u64, inm: Option<&str>) -> Self {
        Cached::with_cache_control(doc, content_type, format!("public, max-age={max_age}"), inm)
    }

    /// The status: 200, or 304 Not Modified.
    pub fn status(&self) -> u16 {
        if self.not_modified {
            304
        } else {
            200
        }
    }

    /// The answer's own headers (`ETag`, `Cache-Control`, and `Content-Type` with a body).
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> + '_ {
        [("ETag", Cow::Borrowed(&*self.doc.etag)), ("Cache-Control", Cow::Borrowed(self.cache_control.as_str()))]
            .into_iter()
            .chain((!self.not_modified).then(|| ("Content-Type", Cow::Owned(self.content_type.to_string()))))
    }

    /// The body: the document, or nothing for 304.
    pub fn body(&self) -> Option<&Arc<[u8]>> {
        (!self.not_modified).then_some(&self.doc.body)
    }

    /// A document with its own `Cache-Control`.
    pub fn with_cache_control(
        doc: Document,
        content_type: ContentType,
        cache_control: String,
        inm: Option<&str>,
    ) -> Self {
        let not_modified = inm.is_some_and(|h| doc.matches_if_none_match(h));
        Cached { doc, content_type, cache_control, not_modified }
    }
}

impl<'r> Responder<'r, 'static> for Cached {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let mut res = Response::build();
        res.status(Status::new(self.status()));
        for (name, value) in self.headers() {
            res.header(Header::new(name, value.into_owned()));
        }
        if let Some(body) = self.body().cloned() {
            // One chunk of exactly the document: Rocket otherwise streams every body through a
            // fresh zeroed 4 KiB buffer (seen in the JWKS profile).
            res.max_chunk_size(body.len().max(1)).sized_body(body.len(), std::io::Cursor::new(body));
        }
        res.ok()
    }
}

/// The JWKS answer, from the published snapshot: the one function both the route below and
/// the server's short path for the JWKS (`web::serve`) answer with.
pub fn jwks_answer(keys: &Keys, metrics: &Metrics, if_none_match: Option<&str>) -> Cached {
    let published = keys.published();
    let max_age = published.policy.jwks_max_age.as_secs();
    let answer = Cached::new(published.jwks.clone(), jwk_set_json(), max_age, if_none_match);
    metrics.jwks_answered(answer.not_modified);
    answer
}

fn openmetrics() -> ContentType {
    ContentType::new("application", "openmetrics-text").with_params([("version", "1.0.0"), ("charset", "utf-8")])
}

fn jwk_set_json() -> ContentType {
    ContentType::new("application", "jwk-set+json")
}

#[get("/.well-known/jwks.json")]
fn jwks(keys: &State<Arc<Keys>>, metrics: &State<Arc<Metrics>>, inm: IfNoneMatch) -> Cached {
    jwks_answer(keys, metrics, inm.0.as_deref())
}

#[get("/.well-known/openid-configuration")]
fn openid_configuration(keys: &State<Arc<Keys>>, inm: IfNoneMatch) -> Cached {
    let published = keys.published();
    Cached::new(
        published.openid_configuration.clone(),
        ContentType::JSON,
        published.policy.jwks_max_age.as_secs(),
        inm.0.as_deref(),
    )
}

#[get("/.well-known/oauth-authorization-server")]
fn oauth_metadata(keys: &State<Arc<Keys>>, inm: IfNoneMatch) -> Cached {
    let published = keys.published();
    Cached::new(
        published.oauth_metadata.clone(),
        ContentType::JSON,
        published.policy.jwks_max_age.as_secs(),
        inm.0.as_deref(),
    )
}

/// Health answers without a store: the process is alive and serving.
#[get("/healthz")]
fn healthz() -> (Status, (ContentType, String)) {
    (Status::Ok, (ContentType::JSON, json!({"status": "ok"}).to_string()))
}

/// Readiness: the database answers and every configured algorithm has an active key.
#[get("/readyz")]
async fn readyz(
    service: &State<Arc<Keyturn>>,
    config: &State<Arc<crate::config::Config>>,
) -> (Status, (ContentType, String)) {
    // Its own deadline: the database's, which bounds each call it makes, once over.
    let deadline = config.database_timeout;
    let checked = tokio::time::timeout(deadline, service.readiness()).await.unwrap_or_else(|_| {
        Err(format!("the readiness checks did not finish within {} ms (database_timeout)", deadline.as_millis()))
    });
    match checked {
        Ok(()) => (Status::Ok, (ContentType::JSON, json!({"status": "ready"}).to_string())),
        Err(reason) => (
            Status::ServiceUnavailable,
            (ContentType::JSON, json!({"status": "not ready", "reason": reason}).to_string()),
        ),
    }
}

/// Prometheus metrics, in OpenMetrics text.
#[get("/metrics")]
async fn metrics(service: &State<Arc<Keyturn>>) -> Result<(ContentType, String), Status> {
    service.metrics_text().await.map(|text| (openmetrics(), text)).map_err(|e| {
        tracing::error!("rendering metrics failed: {e}");
        Status::InternalServerError
    })
}
