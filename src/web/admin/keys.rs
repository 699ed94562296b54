//! The keys page, and rotating or revoking a key behind a confirmation page that says what
//! will happen.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::{when, when_text};
use super::page::{csrf_checked, frame, render, Frame, Page};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::keys::KeyId;
use crate::service::rotation::RotateMode;
use crate::service::{Keys, Tokens};
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![keys_page, rotate_confirm, rotate, revoke_confirm, revoke]
}

struct KeyRow {
    kid: String,
    alg: String,
    state: &'static str,
    /// Where its private half lives.
    custody: &'static str,
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
    timeline: super::timeline::Timeline,
    /// What the action just taken did.
    notice: Option<String>,
}

/// The message after an action, from the codes the actions redirect with (never text from
/// the URL itself).
fn done_message(done: Option<&str>, alg: Option<&str>, kid: Option<&str>) -> Option<String> {
    let alg = alg.filter(|a| a.parse::<crate::keys::Algorithm>().is_ok());
    let kid = kid.filter(|k| k.len() <= 64 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    Some(match (done?, alg, kid) {
        ("rotated", Some(a), Some(k)) => format!("{a} rotated: key {k} signs now."),
        ("repeated", Some(a), Some(k)) => format!(
            "{a} was rotated in an emergency moments ago (key {k} signs): nothing changed. Revoke the key if it is compromised."
        ),
        ("scheduled", Some(a), Some(k)) => {
            format!(
                "{a} rotation requested: key {k} starts signing once it has been published for the lead (see Next)."
            )
        }
        ("revoked", _, Some(k)) => format!("Key {k} revoked: it left the JWKS and its tokens count as revoked."),
        _ => return None,
    })
}

#[get("/admin/keys?<done>&<alg>&<kid>")]
async fn keys_page(
    keyset: &State<Arc<Keys>>,
    clock: &State<Clock>,
    config: &State<Arc<Config>>,
    s: AdminSession,
    done: Option<&str>,
    alg: Option<&str>,
    kid: Option<&str>,
) -> Page {
    let views = keyset.list_keys().await.map_err(ApiError::from).map_err(|_| Status::InternalServerError)?;
    let now = clock.now();
    let at = |v: Option<crate::clock::Instant>| v.map(|t| when(now, t)).unwrap_or_else(|| "—".into());
    let mut keys: Vec<KeyRow> = views
        .iter()
        .rev()
        .map(|k| KeyRow {
            kid: k.kid.clone(),
            alg: k.alg.to_string(),
            state: k.state.as_str(),
            custody: k.custody.as_str(),
            published: at(Some(k.published_at)),
            activated: at(k.activated_at),
            retired: at(k.retired_at),
            ended: at(k.expired_at.or(k.revoked_at)),
            next: k.next.as_ref().map(|n| format!("{} {}", n.event, at(n.at))).unwrap_or_else(|| "—".into()),
            revocable: k.state.is_published(),
        })
        .collect();
    keys.sort_by(|a, b| a.alg.cmp(&b.alg));
    let algorithms: Vec<String> = config.algorithms.iter().map(|a| a.to_string()).collect();
    let next_fire = keyset.policy().schedule.next_after(now);
    let timeline = super::timeline::draw(&views, &algorithms, now, next_fire, 14, 14);
    let notice = done_message(done, alg, kid);
    render(&KeysPage { f: frame(config, "Keys", Some(&s)), algorithms, keys, timeline, notice })
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
    /// An emergency rotation with no published pending key: a never-published key signs.
    fresh_key: bool,
}

#[get("/admin/keys/rotate?<alg>&<mode>")]
async fn rotate_confirm(
    config: &State<Arc<Config>>,
    keys: &State<Arc<Keys>>,
    clock: &State<Clock>,
    s: AdminSession,
    alg: String,
    mode: String,
) -> Page {
    let alg: crate::keys::Algorithm = alg.parse().map_err(|_| Status::BadRequest)?;
    let mode = if mode == "emergency" { RotateMode::Emergency } else { RotateMode::Graceful };
    // The same preview the API's dry_run gives.
    let preview = keys.rotate_preview(Some(alg), mode).map_err(|e| ApiError::from(e).status)?;
    let dash = || "—".to_owned();
    render(&RotateConfirm {
        f: frame(config, "Rotate now", Some(&s)),
        alg: alg.to_string(),
        emergency: mode == RotateMode::Emergency,
        active: preview.retire.unwrap_or_else(dash),
        pending: preview.activate.unwrap_or_else(dash),
        when: when_text(clock.now(), &preview.at),
        fresh_key: preview.fresh_key,
    })
}

#[derive(FromForm)]
struct RotateForm {
    csrf: Option<String>,
    alg: String,
    mode: String,
}

#[post("/admin/keys/rotate", data = "<form>")]
async fn rotate(keys: &State<Arc<Keys>>, s: AdminSession, form: Form<RotateForm>) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let alg = form.alg.parse().map_err(|_| Status::BadRequest)?;
    let mode = if form.mode == "emergency" { RotateMode::Emergency } else { RotateMode::Graceful };
    let actor = s.actor();
    let outcome = keys.rotate(Some(alg), mode, &actor).await.map_err(ApiError::from).map_err(|e| e.status)?;
    let done = match (outcome.repeated, outcome.done) {
        (true, _) => "repeated",
        (false, true) => "rotated",
        (false, false) => "scheduled",
    };
    let kid = outcome.activate.unwrap_or_default();
    Ok(Redirect::to(format!("/admin/keys?done={done}&alg={}&kid={kid}", outcome.alg)))
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
async fn revoke_confirm(
    config: &State<Arc<Config>>,
    keys: &State<Arc<Keys>>,
    tokens: &State<Arc<Tokens>>,
    s: AdminSession,
    kid: &str,
) -> Page {
    let key = keys.published().key(&KeyId::new(kid)).cloned().ok_or(Status::NotFound)?;
    let k = key.kid.clone();
    let live = tokens.live_tokens_of(&k).await.map_err(ApiError::from).map_err(|_| Status::InternalServerError)?;
    render(&RevokeConfirm {
        f: frame(config, "Revoke key", Some(&s)),
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
    keys: &State<Arc<Keys>>,
    s: AdminSession,
    kid: &str,
    form: Form<RevokeForm>,
) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (kid, reason, actor) = (KeyId::new(kid), form.reason.clone(), s.actor());
    let outcome = keys.revoke_key(&kid, &reason, &actor).await.map_err(ApiError::from).map_err(|e| e.status)?;
    Ok(Redirect::to(format!("/admin/keys?done=revoked&kid={}", outcome.kid)))
}
