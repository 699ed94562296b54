//! The dashboard at `/admin`: server-rendered askama pages, usable without JavaScript.
//! Sign-in makes a server-side session referenced by a private cookie (HttpOnly,
//! SameSite=Strict; Secure with the `__Host-` prefix under TLS); every state-changing form
//! carries the session's CSRF token, checked here before anything happens. Errors are pages;
//! a request without a session is sent to the sign-in page.

mod admins;
mod audit;
mod chart;
mod clients;
pub(crate) mod format;
mod keys;
mod overview;
mod page;
mod revocations;
mod schedule;
mod session;
mod subjects;
mod timeline;
mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{Catcher, Request};

use super::error::ApiError;
use super::source::ClientAddress;
use crate::service::admins::Session;
use crate::service::Actor;

/// Every dashboard route.
pub fn routes() -> Vec<rocket::Route> {
    [
        session::routes(),
        overview::routes(),
        keys::routes(),
        schedule::routes(),
        tokens::routes(),
        subjects::routes(),
        revocations::routes(),
        clients::routes(),
        audit::routes(),
        admins::routes(),
    ]
    .concat()
}

/// The session cookie's base name.
const SESSION_COOKIE: &str = "keyturn-session";

/// A dashboard cookie's name: `__Host-` prefixed under TLS, where the browser enforces
/// Secure, no Domain and Path=/.
pub(super) fn cookie_name(base: &str, tls: bool) -> String {
    if tls {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// Sets a dashboard cookie: private (encrypted and signed), HttpOnly, SameSite=Strict,
/// Secure and `__Host-` prefixed under TLS.
pub(super) fn set_private_cookie(jar: &CookieJar<'_>, tls: bool, base: &str, value: String) {
    let cookie = Cookie::build((cookie_name(base, tls), value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(tls)
        .path("/");
    jar.add_private(cookie);
}

/// Sets the session cookie.
pub fn set_session_cookie(req_tls: bool, jar: &CookieJar<'_>, id: &str) {
    set_private_cookie(jar, req_tls, SESSION_COOKIE, id.to_owned());
}

/// A signed-in administrator, from the session cookie.
pub struct AdminSession {
    pub id: String,
    pub session: Session,
    pub source: Option<IpAddr>,
}

impl AdminSession {
    pub fn actor(&self) -> Actor {
        Actor::admin(&self.session.admin, self.source.map(|ip| ip.to_string()))
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for AdminSession {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let name = cookie_name(SESSION_COOKIE, req.rocket().config().tls_enabled());
        let Some(id) = req.cookies().get_private(&name).map(|c| c.value().to_owned()) else {
            return Outcome::Error((Status::Unauthorized, ()));
        };
        let Some(admins) = req.rocket().state::<Arc<crate::service::admins::Admins>>() else {
            return Outcome::Error((Status::InternalServerError, ()));
        };
        let lookup = id.clone();
        match admins.session(&lookup).await.map_err(ApiError::from) {
            Ok(Some(session)) => Outcome::Success(AdminSession { id, session, source: ClientAddress::of(req).0 }),
            Ok(None) => {
                req.cookies().remove_private(Cookie::from(name));
                Outcome::Error((Status::Unauthorized, ()))
            }
            Err(_) => Outcome::Error((Status::InternalServerError, ())),
        }
    }
}

/// Without a session: to the sign-in page.
#[rocket::catch(401)]
fn unauthorized() -> Redirect {
    Redirect::to("/admin/login")
}

#[rocket::catch(default)]
fn error_page(status: Status, _: &Request<'_>) -> (Status, RawHtml<String>) {
    let message = match status.code {
        403 => "This form was refused: its security token is missing or stale. Go back, reload the page and try again.",
        404 => "There is no such page.",
        413 => "What you sent is too large.",
        422 | 400 => "The form was incomplete or malformed.",
        _ => "Something went wrong on the server; the log says what.",
    };
    (status, RawHtml(page::error_html(status, message)))
}

pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![unauthorized, error_page]
}
