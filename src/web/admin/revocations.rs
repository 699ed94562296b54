//! Revocations in force, searchable, and revoking a token by jti.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::when;
use super::page::{bare, csrf_checked, frame, refused, render, Frame, Page};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::service::revocations::RevokeTarget;
use crate::service::Revocations;
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![revocations_page, revocation_add]
}

struct RevocationRow {
    kind: String,
    value: String,
    revoked: String,
    until: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "admin/revocations.html")]
struct RevocationsPage {
    f: Frame,
    rows: Vec<RevocationRow>,
    search: String,
    error: Option<String>,
    /// What the action just taken did.
    notice: Option<String>,
}

/// Every state the page needs.
type Ctx<'a> = (&'a Config, &'a Clock, &'a Revocations);

async fn revocations_view(
    (config, clock, revocations): Ctx<'_>,
    s: &AdminSession,
    search: String,
    error: Option<String>,
) -> Result<RevocationsPage, Status> {
    let (entries, _) = revocations
        .revocation_feed(0, 100_000)
        .await
        .map_err(ApiError::from)
        .map_err(|_| Status::InternalServerError)?;
    let now = clock.now();
    let needle = search.trim().to_owned();
    let rows = entries
        .iter()
        .rev()
        .filter(|e| needle.is_empty() || e.value.contains(&needle) || e.reason.contains(&needle))
        .take(500)
        .map(|e| RevocationRow {
            kind: e.kind.clone(),
            value: e.value.clone(),
            revoked: when(now, e.revoked_at),
            until: when(now, e.until),
            reason: e.reason.clone(),
        })
        .collect();
    Ok(RevocationsPage { f: frame(config, "Revocations", Some(s)), rows, search, error, notice: None })
}

#[get("/admin/revocations?<search>&<done>")]
async fn revocations_page(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    revocations: &State<Arc<Revocations>>,
    s: AdminSession,
    search: Option<String>,
    done: Option<&str>,
) -> Page {
    let mut page = revocations_view((config, clock, revocations), &s, search.unwrap_or_default(), None).await?;
    if done == Some("added") {
        page.notice = Some("Revocation added: the token is refused from now on, and the feed says so.".into());
    }
    render(&page)
}

#[derive(FromForm)]
struct AddRevocationForm {
    csrf: Option<String>,
    jti: String,
    reason: String,
}

#[post("/admin/revocations", data = "<form>")]
async fn revocation_add(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    revocations: &State<Arc<Revocations>>,
    s: AdminSession,
    form: Form<AddRevocationForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let (target, reason, actor) = (RevokeTarget::Jti(form.jti.trim().to_owned()), form.reason.clone(), s.actor());
    match revocations.revoke(&target, &reason, &actor).await.map_err(ApiError::from) {
        Ok(_) => Ok(Redirect::to("/admin/revocations?done=added")),
        Err(e) => {
            let page = revocations_view((config, clock, revocations), &s, String::new(), Some(e.description))
                .await
                .map_err(bare)?;
            Err(refused(e.status, page))
        }
    }
}
