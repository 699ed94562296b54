//! Server-rendered pages (askama) and the static files they use, embedded in the binary so
//! keyturn needs nothing beside itself at run time.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::service::Keys;
use askama::Template;
use rocket::http::{Header, Status};
use rocket::response::content::RawHtml;
use rocket::{get, routes, Route, State};

pub fn routes() -> Vec<Route> {
    routes![index, stylesheet, script, favicon_svg, favicon_ico]
}

/// One row of the published-keys table.
pub struct KeyRow {
    pub alg: String,
    pub state: &'static str,
    pub kid: String,
    pub published: String,
}

#[derive(Template)]
#[template(path = "index.html")]
struct Index {
    issuer: String,
    version: &'static str,
    keys: Vec<KeyRow>,
}

/// The landing page: what this server is, where its documents are, which keys it publishes.
#[get("/")]
fn index(
    keys: &State<Arc<Keys>>,
    clock: &State<Clock>,
    config: &State<Arc<Config>>,
) -> Result<RawHtml<String>, Status> {
    let published = keys.published();
    let published_now = clock.now();
    let keys = published
        .keys
        .iter()
        .filter(|k| k.state.is_published())
        .map(|k| KeyRow {
            alg: k.alg.to_string(),
            state: k.state.as_str(),
            kid: k.kid.to_string(),
            published: crate::web::admin::format::when(published_now, k.published_at),
        })
        .collect();
    let page = Index { issuer: config.issuer.clone(), version: env!("CARGO_PKG_VERSION"), keys };
    page.render().map(RawHtml).map_err(|e| {
        tracing::error!("rendering the index page failed: {e}");
        Status::InternalServerError
    })
}

const KEYTURN_CSS: &str = include_str!("../../static/keyturn.css");

/// A stylesheet with its cache header.
#[derive(rocket::Responder)]
#[response(content_type = "text/css")]
struct Css {
    body: &'static str,
    cache: Header<'static>,
}

#[get("/static/keyturn.css")]
fn stylesheet() -> Css {
    Css { body: KEYTURN_CSS, cache: Header::new("Cache-Control", "public, max-age=3600") }
}

const KEYTURN_JS: &str = include_str!("../../static/keyturn.js");

/// A script with its cache header.
#[derive(rocket::Responder)]
#[response(content_type = "text/javascript")]
struct Js {
    body: &'static str,
    cache: Header<'static>,
}

#[get("/static/keyturn.js")]
fn script() -> Js {
    Js { body: KEYTURN_JS, cache: Header::new("Cache-Control", "public, max-age=3600") }
}

const FAVICON_SVG: &str = include_str!("../../static/favicon.svg");

/// The icon, an SVG (every current browser takes one).
#[derive(rocket::Responder)]
#[response(content_type = "image/svg+xml")]
struct Svg {
    body: &'static str,
    cache: Header<'static>,
}

#[get("/static/favicon.svg")]
fn favicon_svg() -> Svg {
    Svg { body: FAVICON_SVG, cache: Header::new("Cache-Control", "public, max-age=86400") }
}

/// Browsers ask for `/favicon.ico` on their own: the same SVG, so that request is answered
/// instead of logged as a 404.
#[get("/favicon.ico")]
fn favicon_ico() -> Svg {
    favicon_svg()
}
