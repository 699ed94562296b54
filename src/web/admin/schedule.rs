//! The rotation schedule and timing policy, with a live preview of the next fire times.

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
use crate::service::policy::PolicyChange;
use crate::service::Keyturn;
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![schedule_page, schedule_preview, schedule_save]
}

#[derive(Template)]
#[template(path = "admin/schedule.html")]
struct SchedulePage {
    f: Frame,
    cron: String,
    publish_lead: String,
    clock_skew: String,
    max_token_ttl: String,
    leeway: String,
    jwks_max_age: String,
    pinned: Vec<&'static str>,
    preview: Vec<String>,
    warnings: Vec<String>,
    error: Option<String>,
    saved: bool,
}

impl SchedulePage {
    fn is_pinned(&self, name: &str) -> bool {
        self.pinned.contains(&name)
    }
}

fn schedule_view(
    service: &Keyturn,
    s: &AdminSession,
    change: Option<&ScheduleForm>,
    error: Option<String>,
    saved: bool,
) -> SchedulePage {
    let v = service.policy_view();
    let now = service.now();
    let pick = |form: Option<&String>, current: &str| {
        form.map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).unwrap_or_else(|| current.to_owned())
    };
    let cron = pick(change.map(|c| &c.cron), &v.cron);
    let preview = crate::schedule::Schedule::parse(&cron)
        .map(|sch| sch.preview(now, 5).into_iter().map(|t| when(now, t)).collect())
        .unwrap_or_default();
    SchedulePage {
        f: frame(service, "Schedule", Some(s)),
        publish_lead: pick(change.map(|c| &c.publish_lead), &v.publish_lead),
        clock_skew: pick(change.map(|c| &c.clock_skew), &v.clock_skew),
        max_token_ttl: pick(change.map(|c| &c.max_token_ttl), &v.max_token_ttl),
        leeway: pick(change.map(|c| &c.leeway), &v.leeway),
        jwks_max_age: pick(change.map(|c| &c.jwks_max_age), &v.jwks_max_age),
        pinned: v.pinned,
        warnings: v.warnings,
        cron,
        preview,
        error,
        saved,
    }
}

#[get("/admin/schedule?<saved>")]
fn schedule_page(service: &State<Arc<Keyturn>>, s: AdminSession, saved: Option<bool>) -> Page {
    render(&schedule_view(service, &s, None, None, saved.unwrap_or(false)))
}

/// The next fire times of an expression, for the schedule page's live preview.
#[get("/admin/schedule/preview?<cron>")]
fn schedule_preview(
    service: &State<Arc<Keyturn>>,
    _s: AdminSession,
    cron: &str,
) -> rocket::serde::json::Json<serde_json::Value> {
    let now = service.now();
    rocket::serde::json::Json(match crate::schedule::Schedule::parse(cron) {
        Ok(s) => serde_json::json!({"fires": s.preview(now, 5).into_iter().map(|t| when(now, t)).collect::<Vec<_>>()}),
        Err(e) => serde_json::json!({"error": e}),
    })
}

#[derive(FromForm)]
struct ScheduleForm {
    csrf: Option<String>,
    cron: String,
    publish_lead: String,
    clock_skew: String,
    max_token_ttl: String,
    leeway: String,
    jwks_max_age: String,
    /// "preview" shows the next fire times without saving.
    action: Option<String>,
}

#[post("/admin/schedule", data = "<form>")]
async fn schedule_save(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<ScheduleForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let form = form.into_inner();
    if let Err(e) = crate::schedule::Schedule::parse(&form.cron) {
        return Err(refused(Status::BadRequest, schedule_view(service, &s, Some(&form), Some(e), false)));
    }
    if form.action.as_deref() == Some("preview") {
        return Err(refused(Status::Ok, schedule_view(service, &s, Some(&form), None, false)));
    }
    // Only what differs from the current values (pinned ones cannot be sent).
    let current = service.policy_view();
    let differs = |new: &str, cur: &str| (new.trim() != cur && !new.trim().is_empty()).then(|| new.trim().to_owned());
    let change = PolicyChange {
        cron: differs(&form.cron, &current.cron),
        publish_lead: differs(&form.publish_lead, &current.publish_lead),
        clock_skew: differs(&form.clock_skew, &current.clock_skew),
        max_token_ttl: differs(&form.max_token_ttl, &current.max_token_ttl),
        leeway: differs(&form.leeway, &current.leeway),
        jwks_max_age: differs(&form.jwks_max_age, &current.jwks_max_age),
    };
    if change.entries().is_empty() {
        return Ok(Redirect::to("/admin/schedule"));
    }
    let actor = s.actor();
    match service.update_policy(&change, &actor).await.map_err(ApiError::from) {
        Ok(_) => Ok(Redirect::to("/admin/schedule?saved=true")),
        Err(e) => Err(refused(e.status, schedule_view(service, &s, Some(&form), Some(e.description), false))),
    }
}
