//! Signing in and out, and the one-time setup link that creates an administrator.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::{CookieJar, Status};
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::page::{csrf_checked, frame, render, Frame, MessagePage, Page};
use super::{set_session_cookie, AdminSession};
use crate::service::admins::SignIn;
use crate::service::Keyturn;
use crate::web::api::blocking;
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
async fn no_admin_yet(service: &Arc<Keyturn>) -> bool {
    blocking(service, |s| s.admin_count()).await.is_ok_and(|n| n == 0)
}

#[get("/admin/login")]
async fn login_page(service: &State<Arc<Keyturn>>) -> Page {
    let no_admin = no_admin_yet(service).await;
    render(&LoginPage { f: frame(service, "Sign in", None), error: None, name: String::new(), no_admin })
}

#[derive(FromForm)]
struct LoginForm {
    name: String,
    password: String,
}

#[post("/admin/login", data = "<form>")]
async fn login(
    service: &State<Arc<Keyturn>>,
    jar: &CookieJar<'_>,
    config: &rocket::Config,
    from: ClientAddress,
    form: Form<LoginForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    let form = form.into_inner();
    let source = from.text();
    let (name, password) = (form.name.trim().to_owned(), form.password);
    let attempt = name.clone();
    let outcome = blocking(service, move |s| s.sign_in(&attempt, &password, &source)).await;
    let no_admin = no_admin_yet(service).await;
    let page = |status: Status, error: &str, name: String| {
        let html =
            render(&LoginPage { f: frame(service, "Sign in", None), error: Some(error.to_owned()), name, no_admin })
                .map(|h| h.0)
                .unwrap_or_default();
        (status, RawHtml(html))
    };
    match outcome {
        Ok(SignIn::Ok(id, _)) => {
            // A new session id at every sign-in; any earlier session cookie is replaced.
            set_session_cookie(config.tls_enabled(), jar, &id);
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
    service: &State<Arc<Keyturn>>,
    jar: &CookieJar<'_>,
    s: AdminSession,
    form: Form<CsrfOnly>,
) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (id, actor, admin, everywhere) =
        (s.id.clone(), s.actor(), s.session.admin.clone(), form.everywhere.unwrap_or(false));
    blocking(service, move |svc| {
        if everywhere {
            svc.sign_out_everywhere(&admin, &actor).map(drop)
        } else {
            svc.sign_out(&id, &actor)
        }
    })
    .await
    .map_err(|_| Status::InternalServerError)?;
    for name in ["keyturn-session", "__Host-keyturn-session"] {
        jar.remove_private(rocket::http::Cookie::from(name));
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
async fn setup_page(service: &State<Arc<Keyturn>>, token: Option<String>) -> Page {
    let token = token.unwrap_or_default();
    let check = token.clone();
    let usable = blocking(service, move |s| s.setup_link_usable(&check)).await.unwrap_or(false);
    if !usable {
        return render(&MessagePage {
            f: frame(service, "Setup link", None),
            heading: "This setup link cannot be used".into(),
            message: "It is unknown, already used, or older than 15 minutes. Ask for a new one with `keyturn admin add` on the host.".into(),
        });
    }
    render(&SetupPage { f: frame(service, "Create an administrator", None), token, error: None })
}

#[derive(FromForm)]
struct SetupForm {
    token: String,
    name: String,
    password: String,
    confirm: String,
}

#[post("/admin/setup", data = "<form>")]
async fn setup(
    service: &State<Arc<Keyturn>>,
    jar: &CookieJar<'_>,
    config: &rocket::Config,
    from: ClientAddress,
    form: Form<SetupForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    let form = form.into_inner();
    let again = |status: Status, error: String| {
        let html = render(&SetupPage {
            f: frame(service, "Create an administrator", None),
            token: form.token.clone(),
            error: Some(error),
        })
        .map(|h| h.0)
        .unwrap_or_default();
        (status, RawHtml(html))
    };
    if form.password != form.confirm {
        return Err(again(Status::BadRequest, "The two passwords differ.".into()));
    }
    let source = from.text();
    let (token, name, password, src) =
        (form.token.clone(), form.name.trim().to_owned(), form.password.clone(), source.clone());
    match blocking(service, move |s| s.complete_setup(&token, &name, &password, Some(&src))).await {
        Ok(()) => {}
        Err(e) => return Err(again(e.status, e.description)),
    }
    let (name, password) = (form.name.trim().to_owned(), form.password.clone());
    match blocking(service, move |s| s.sign_in(&name, &password, &source)).await {
        Ok(SignIn::Ok(id, _)) => {
            set_session_cookie(config.tls_enabled(), jar, &id);
            Ok(Redirect::to("/admin"))
        }
        _ => Ok(Redirect::to("/admin/login")),
    }
}
