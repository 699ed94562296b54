//! Dashboard pages and their forms. Every POST checks the CSRF token first; every page is
//! rendered by askama from `templates/admin/`.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::{CookieJar, Status};
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::when;
use super::{set_session_cookie, AdminSession};
use crate::keys::{KeyId, KeyState};
use crate::service::admins::SignIn;
use crate::service::rotation::RotateMode;
use crate::service::Keyturn;
use crate::web::api::blocking;

pub fn routes() -> Vec<Route> {
    routes![
        overview,
        login_page,
        login,
        logout,
        setup_page,
        setup,
        keys_page,
        rotate_confirm,
        rotate,
        revoke_confirm,
        revoke
    ]
}

pub(super) type Page = Result<RawHtml<String>, Status>;

pub(super) fn render(t: &impl Template) -> Page {
    t.render().map(RawHtml).map_err(|e| {
        tracing::error!("rendering a page failed: {e}");
        Status::InternalServerError
    })
}

/// Shared page frame data.
pub struct Frame {
    pub title: String,
    pub admin: Option<String>,
    pub csrf: String,
    pub issuer: String,
}

pub(super) fn frame(service: &Keyturn, title: &str, s: Option<&AdminSession>) -> Frame {
    Frame {
        title: title.to_owned(),
        admin: s.map(|s| s.session.admin.clone()),
        csrf: s.map(|s| s.session.csrf.clone()).unwrap_or_default(),
        issuer: service.config().issuer.clone(),
    }
}

pub(super) fn csrf_checked(s: &AdminSession, presented: &Option<String>) -> Result<(), Status> {
    if Keyturn::csrf_ok(&s.session, presented.as_deref()) {
        Ok(())
    } else {
        tracing::warn!(admin = %s.session.admin, "form refused: missing or wrong CSRF token");
        Err(Status::Forbidden)
    }
}

#[derive(Template)]
#[template(path = "admin/message.html")]
struct MessagePage {
    f: Frame,
    heading: String,
    message: String,
}

/// An error page without a session (the catcher's).
pub fn error_html(status: Status, message: &str) -> String {
    let page = MessagePage {
        f: Frame {
            title: status.reason().unwrap_or("Error").to_owned(),
            admin: None,
            csrf: String::new(),
            issuer: String::new(),
        },
        heading: format!("{} {}", status.code, status.reason().unwrap_or("")),
        message: message.to_owned(),
    };
    page.render().unwrap_or_else(|_| message.to_owned())
}

// ---- sign-in, setup, sign-out

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    f: Frame,
    error: Option<String>,
    name: String,
}

#[get("/admin/login")]
fn login_page(service: &State<Arc<Keyturn>>) -> Page {
    render(&LoginPage { f: frame(service, "Sign in", None), error: None, name: String::new() })
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
    ip: Option<std::net::IpAddr>,
    form: Form<LoginForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    let form = form.into_inner();
    let source = ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
    let (name, password) = (form.name.trim().to_owned(), form.password);
    let attempt = name.clone();
    let outcome = blocking(service, move |s| s.sign_in(&attempt, &password, &source)).await;
    let page = |status: Status, error: &str, name: String| {
        let html = render(&LoginPage { f: frame(service, "Sign in", None), error: Some(error.to_owned()), name })
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
    ip: Option<std::net::IpAddr>,
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
    let source = ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
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

// ---- overview

struct AlgRow {
    alg: String,
    active_kid: String,
    active_since: String,
    pending_kid: String,
    next_rotation: String,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    f: Frame,
    algorithms: Vec<AlgRow>,
    next_fire: String,
    tokens_24h: u64,
    revocations: usize,
    warnings: Vec<String>,
    schedule: String,
    publish_lead: String,
}

#[get("/admin")]
async fn overview(service: &State<Arc<Keyturn>>, s: AdminSession) -> Page {
    let o = blocking(service, |svc| svc.overview()).await.map_err(|_| Status::InternalServerError)?;
    let policy = service.policy();
    let dash = || "—".to_owned();
    let algorithms = o
        .algorithms
        .iter()
        .map(|a| AlgRow {
            alg: a.alg.to_string(),
            active_kid: a.active_kid.clone().unwrap_or_else(dash),
            active_since: a.active_since.map(|t| when(o.now, t)).unwrap_or_else(dash),
            pending_kid: a.pending_kid.clone().unwrap_or_else(dash),
            next_rotation: a.next_rotation.map(|t| when(o.now, t)).unwrap_or_else(dash),
        })
        .collect();
    render(&OverviewPage {
        f: frame(service, "Overview", Some(&s)),
        algorithms,
        next_fire: o.next_fire.map(|t| when(o.now, t)).unwrap_or_else(dash),
        tokens_24h: o.tokens_24h,
        revocations: o.revocations,
        warnings: o.warnings,
        schedule: policy.schedule.as_str().to_owned(),
        publish_lead: crate::config::format_duration(policy.publish_lead),
    })
}

// ---- keys

struct KeyRow {
    kid: String,
    alg: String,
    state: &'static str,
    published: String,
    activated: String,
    retired: String,
    ended: String,
    next: String,
    revocable: bool,
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
struct KeysPage {
    f: Frame,
    algorithms: Vec<String>,
    keys: Vec<KeyRow>,
}

#[get("/admin/keys")]
async fn keys_page(service: &State<Arc<Keyturn>>, s: AdminSession) -> Page {
    let views = blocking(service, |svc| svc.list_keys()).await.map_err(|_| Status::InternalServerError)?;
    let now = service.now();
    let parse = |v: &Option<String>| {
        v.as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .map(|t| when(now, t))
            .unwrap_or_else(|| "—".into())
    };
    let mut keys: Vec<KeyRow> = views
        .iter()
        .rev()
        .map(|k| KeyRow {
            kid: k.kid.clone(),
            alg: k.alg.to_string(),
            state: k.state.as_str(),
            published: parse(&Some(k.published_at.clone())),
            activated: parse(&k.activated_at),
            retired: parse(&k.retired_at),
            ended: parse(&k.expired_at.clone().or(k.revoked_at.clone())),
            next: k.next.as_ref().map(|n| format!("{} {}", n.event, parse(&n.at))).unwrap_or_else(|| "—".into()),
            revocable: k.state.is_published(),
        })
        .collect();
    keys.sort_by(|a, b| a.alg.cmp(&b.alg));
    let algorithms = service.config().algorithms.iter().map(|a| a.to_string()).collect();
    render(&KeysPage { f: frame(service, "Keys", Some(&s)), algorithms, keys })
}

#[derive(Template)]
#[template(path = "admin/confirm_rotate.html")]
struct RotateConfirm {
    f: Frame,
    alg: String,
    emergency: bool,
    active: String,
    pending: String,
    when: String,
}

#[get("/admin/keys/rotate?<alg>&<mode>")]
async fn rotate_confirm(service: &State<Arc<Keyturn>>, s: AdminSession, alg: String, mode: String) -> Page {
    let alg_v: crate::keys::Algorithm = alg.parse().map_err(|_| Status::BadRequest)?;
    let published = service.published();
    let find = |state| published.keys.iter().find(|k| k.alg == alg_v && k.state == state);
    let (active, pending) = (find(KeyState::Active), find(KeyState::Pending));
    let policy = service.policy();
    let now = service.now();
    let at =
        pending.map(|p| (p.published_at + policy.publish_lead + crate::keys::lifecycle::STAMP_GRANULARITY).max(now));
    render(&RotateConfirm {
        f: frame(service, "Rotate now", Some(&s)),
        alg: alg_v.to_string(),
        emergency: mode == "emergency",
        active: active.map(|k| k.kid.to_string()).unwrap_or_else(|| "—".into()),
        pending: pending.map(|k| k.kid.to_string()).unwrap_or_else(|| "—".into()),
        when: at.map(|t| when(now, t)).unwrap_or_else(|| "now".into()),
    })
}

#[derive(FromForm)]
struct RotateForm {
    csrf: Option<String>,
    alg: String,
    mode: String,
}

#[post("/admin/keys/rotate", data = "<form>")]
async fn rotate(service: &State<Arc<Keyturn>>, s: AdminSession, form: Form<RotateForm>) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let alg = form.alg.parse().map_err(|_| Status::BadRequest)?;
    let mode = if form.mode == "emergency" { RotateMode::Emergency } else { RotateMode::Graceful };
    let actor = s.actor();
    blocking(service, move |svc| svc.rotate(Some(alg), mode, &actor)).await.map_err(|e| e.status)?;
    Ok(Redirect::to("/admin/keys"))
}

#[derive(Template)]
#[template(path = "admin/confirm_revoke.html")]
struct RevokeConfirm {
    f: Frame,
    kid: String,
    alg: String,
    state: &'static str,
    live_tokens: u64,
}

#[get("/admin/keys/<kid>/revoke")]
async fn revoke_confirm(service: &State<Arc<Keyturn>>, s: AdminSession, kid: &str) -> Page {
    let key = service.published().key(&KeyId::new(kid)).cloned().ok_or(Status::NotFound)?;
    let k = key.kid.clone();
    let live = blocking(service, move |svc| svc.live_tokens_of(&k)).await.map_err(|_| Status::InternalServerError)?;
    render(&RevokeConfirm {
        f: frame(service, "Revoke key", Some(&s)),
        kid: key.kid.to_string(),
        alg: key.alg.to_string(),
        state: key.state.as_str(),
        live_tokens: live,
    })
}

#[derive(FromForm)]
struct RevokeForm {
    csrf: Option<String>,
    reason: String,
}

#[post("/admin/keys/<kid>/revoke", data = "<form>")]
async fn revoke(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    kid: &str,
    form: Form<RevokeForm>,
) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (kid, reason, actor) = (KeyId::new(kid), form.reason.clone(), s.actor());
    blocking(service, move |svc| svc.revoke_key(&kid, &reason, &actor)).await.map_err(|e| e.status)?;
    Ok(Redirect::to("/admin/keys"))
}
