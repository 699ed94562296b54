//! Signing in and out, and the one-time setup link that creates an administrator.
//!
//! The sign-in and setup forms come before any session, so they cannot carry the session's
//! CSRF token; without a defence another site could post them from a victim's browser
//! (login CSRF: the victim is signed in to the attacker's account, or a stolen setup link
//! is redeemed from the victim's address). Each form carries a token bound to a private,
//! HttpOnly, SameSite=Strict cookie ([`form_token`]), and a post is taken only when the
//! token matches and the request's `Origin` (or `Sec-Fetch-Site`) says it came from this
//! site ([`SameSite`]).

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::{Cookie, CookieJar, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::page::{csrf_checked, frame, render, Frame, MessagePage, Page};
use super::{cookie_name, set_private_cookie, set_session_cookie, AdminSession};
use crate::config::Config;
use crate::service::admins::SignIn;
use crate::service::Admins;
use crate::web::error::ApiError;
use crate::web::source::ClientAddress;

pub fn routes() -> Vec<Route> {
    routes![login_page, login, logout, setup_page, setup]
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    f: Frame,
    error: Option<String>,
    name: String,
    /// No administrator exists yet: the page says how to create the first.
    no_admin: bool,
}

/// Whether no administrator exists yet (a failure to read counts as "some exist": the hint
/// is only help).
async fn no_admin_yet(admins: &Admins) -> bool {
    admins.admin_count().await.map_err(ApiError::from).is_ok_and(|n| n == 0)
}

/// The base name of the pre-session form cookie.
const FORM_COOKIE: &str = "keyturn-form";

/// The pre-session form token: the one in the browser's form cookie, or a new one set now.
fn form_token(jar: &CookieJar<'_>, tls: bool) -> String {
    if let Some(existing) = jar.get_private(&cookie_name(FORM_COOKIE, tls)) {
        return existing.value().to_owned();
    }
    let token = crate::service::random_id(24);
    set_private_cookie(jar, tls, FORM_COOKIE, token.clone());
    token
}

/// Whether a posted sign-in or setup form carries the token of this browser's form cookie.
fn form_token_ok(jar: &CookieJar<'_>, tls: bool, presented: Option<&str>) -> bool {
    let Some(cookie) = jar.get_private(&cookie_name(FORM_COOKIE, tls)) else { return false };
    presented.is_some_and(|p| crate::service::secret_matches(&crate::service::secret_digest(cookie.value()), p))
}

/// Whether a request was sent by a page of this site, as the browser tells it:
/// `Sec-Fetch-Site` (sent by every current browser) is not `cross-site`, and an `Origin`
/// naming a site names this server (its `Host`, or the configured issuer's origin). A
/// browser sends `Origin: null` for this site's own forms too, since every page says
/// `Referrer-Policy: no-referrer`, so `null` alone proves nothing either way; a client that
/// sends neither header (curl, a script) is not a browser being steered by another site.
/// The form token applies to every request all the same.
pub(super) struct SameSite(pub bool);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SameSite {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let headers = req.headers();
        let issuer = req.rocket().state::<Arc<Config>>().map(|c| c.issuer.clone()).unwrap_or_default();
        let cross_site = headers.get_one("Sec-Fetch-Site").is_some_and(|site| site.eq_ignore_ascii_case("cross-site"));
        let foreign_origin = headers
            .get_one("Origin")
            .filter(|o| !o.trim().eq_ignore_ascii_case("null"))
            .is_some_and(|origin| !origin_is_ours(origin, headers.get_one("Host"), &issuer));
        let same = !cross_site && !foreign_origin;
        if !same {
            tracing::warn!(
                origin = headers.get_one("Origin").unwrap_or("-"),
                fetch_site = headers.get_one("Sec-Fetch-Site").unwrap_or("-"),
                "a sign-in or setup form was posted from another site: refused (login CSRF)"
            );
        }
        Outcome::Success(SameSite(same))
    }
}

/// Whether `origin` (`scheme://host[:port]`) is this server's: the host and port of the
/// request's `Host`, or the issuer's origin.
fn origin_is_ours(origin: &str, host: Option<&str>, issuer: &str) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    let Some((_, authority)) = origin.split_once("://") else { return false };
    if host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority)) {
        return true;
    }
    let issuer_origin = issuer.split_once("://").map(|(scheme, rest)| {
        let authority = rest.split('/').next().unwrap_or_default();
        format!("{scheme}://{authority}")
    });
    issuer_origin.is_some_and(|o| o.eq_ignore_ascii_case(origin))
}

/// Why a sign-in or setup form was refused before its fields were looked at.
const FORM_REFUSED: &str =
    "This form expired or was sent from another site. Nothing was done; send it again from this page.";

#[get("/admin/login")]
async fn login_page(
    config: &State<Arc<Config>>,
    admins: &State<Arc<Admins>>,
    jar: &CookieJar<'_>,
    rocket_config: &rocket::Config,
) -> Page {
    let no_admin = no_admin_yet(admins).await;
    let mut f = frame(config, "Sign in", None);
    f.csrf = form_token(jar, rocket_config.tls_enabled());
    render(&LoginPage { f, error: None, name: String::new(), no_admin })
}

#[derive(FromForm)]
struct LoginForm {
    csrf: Option<String>,
    name: String,
    password: String,
}

#[post("/admin/login", data = "<form>")]
async fn login(
    config: &State<Arc<Config>>,
    admins: &State<Arc<Admins>>,
    jar: &CookieJar<'_>,
    rocket_config: &rocket::Config,
    from: ClientAddress,
    same_site: SameSite,
    form: Form<LoginForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    let form = form.into_inner();
    let tls = rocket_config.tls_enabled();
    let no_admin = no_admin_yet(admins).await;
    let page = |status: Status, error: &str, name: String| {
        let mut f = frame(config, "Sign in", None);
        f.csrf = form_token(jar, tls);
        let html =
            render(&LoginPage { f, error: Some(error.to_owned()), name, no_admin }).map(|h| h.0).unwrap_or_default();
        (status, RawHtml(html))
    };
    if !same_site.0 || !form_token_ok(jar, tls, form.csrf.as_deref()) {
        return Err(page(Status::Forbidden, FORM_REFUSED, String::new()));
    }
    let source = from.text();
    let (name, password) = (form.name.trim().to_owned(), form.password);
    let attempt = name.clone();
    let outcome = admins.sign_in(&attempt, &password, &source).await.map_err(ApiError::from);
    match outcome {
        Ok(SignIn::Ok(id, _)) => {
            // A new session id at every sign-in; any earlier session cookie is replaced.
            set_session_cookie(rocket_config.tls_enabled(), jar, &id);
            Ok(Redirect::to("/admin"))
        }
        Ok(SignIn::Refused) => Err(page(Status::Unauthorized, "Wrong name or password.", name)),
        Ok(SignIn::Limited(wait)) => {
            let minutes = wait.as_secs().div_ceil(60).max(1);
            Err(page(
                Status::TooManyRequests,
                &format!(
                    "Too many failed sign-ins from this address or for this account. Try again in {minutes} minutes."
                ),
                name,
            ))
        }
        Err(_) => Err(page(Status::InternalServerError, "Sign-in failed on the server; the log says why.", name)),
    }
}

#[derive(FromForm)]
struct CsrfOnly {
    csrf: Option<String>,
    everywhere: Option<bool>,
}

#[post("/admin/logout", data = "<form>")]
async fn logout(
    admins: &State<Arc<Admins>>,
    jar: &CookieJar<'_>,
    s: AdminSession,
    form: Form<CsrfOnly>,
) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (id, actor, admin, everywhere) =
        (s.id.clone(), s.actor(), s.session.admin.clone(), form.everywhere.unwrap_or(false));
    let ended = if everywhere {
        admins.sign_out_everywhere(&admin, &actor).await.map(drop)
    } else {
        admins.sign_out(&id, &actor).await
    };
    ended.map_err(ApiError::from).map_err(|_| Status::InternalServerError)?;
    for name in ["keyturn-session", "__Host-keyturn-session"] {
        jar.remove_private(Cookie::from(name));
    }
    Ok(Redirect::to("/admin/login"))
}

#[derive(Template)]
#[template(path = "admin/setup.html")]
struct SetupPage {
    f: Frame,
    token: String,
    error: Option<String>,
}

#[get("/admin/setup?<token>")]
async fn setup_page(
    config: &State<Arc<Config>>,
    admins: &State<Arc<Admins>>,
    jar: &CookieJar<'_>,
    rocket_config: &rocket::Config,
    token: Option<String>,
) -> Page {
    let token = token.unwrap_or_default();
    let check = token.clone();
    let usable = admins.setup_link_usable(&check).await.map_err(ApiError::from).unwrap_or(false);
    if !usable {
        return render(&MessagePage {
            f: frame(config, "Setup link", None),
            heading: "This setup link cannot be used".into(),
            message: "It is unknown, already used, or older than 15 minutes. Ask for a new one with `keyturn admin add` on the host.".into(),
        });
    }
    let mut f = frame(config, "Create an administrator", None);
    f.csrf = form_token(jar, rocket_config.tls_enabled());
    render(&SetupPage { f, token, error: None })
}

#[derive(FromForm)]
struct SetupForm {
    csrf: Option<String>,
    token: String,
    name: String,
    password: String,
    confirm: String,
}

#[post("/admin/setup", data = "<form>")]
async fn setup(
    config: &State<Arc<Config>>,
    admins: &State<Arc<Admins>>,
    jar: &CookieJar<'_>,
    rocket_config: &rocket::Config,
    from: ClientAddress,
    same_site: SameSite,
    form: Form<SetupForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    let form = form.into_inner();
    let tls = rocket_config.tls_enabled();
    let again = |status: Status, error: String| {
        let mut f = frame(config, "Create an administrator", None);
        f.csrf = form_token(jar, tls);
        let html =
            render(&SetupPage { f, token: form.token.clone(), error: Some(error) }).map(|h| h.0).unwrap_or_default();
        (status, RawHtml(html))
    };
    if !same_site.0 || !form_token_ok(jar, tls, form.csrf.as_deref()) {
        return Err(again(Status::Forbidden, FORM_REFUSED.into()));
    }
    if form.password != form.confirm {
        return Err(again(Status::BadRequest, "The two passwords differ.".into()));
    }
    let source = from.text();
    let (token, name, password, src) =
        (form.token.clone(), form.name.trim().to_owned(), form.password.clone(), source.clone());
    match admins.complete_setup(&token, &name, &password, Some(&src)).await.map_err(ApiError::from) {
        Ok(()) => {}
        Err(e) => return Err(again(e.status, e.description)),
    }
    let (name, password) = (form.name.trim().to_owned(), form.password.clone());
    match admins.sign_in(&name, &password, &source).await.map_err(ApiError::from) {
        Ok(SignIn::Ok(id, _)) => {
            set_session_cookie(rocket_config.tls_enabled(), jar, &id);
            Ok(Redirect::to("/admin"))
        }
        _ => Ok(Redirect::to("/admin/login")),
    }
}
