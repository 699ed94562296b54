//! The rotation schedule and timing policy, with a live preview of the next fire times.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use rocket::form::Form;
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::when;
use super::page::{bare, csrf_checked, frame, refused, render, Frame, Page};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::service::policy::{PolicyChange, ROTATION_SCHEDULE, ROTATION_SCHEDULE_ALIAS, TIMINGS};
use crate::service::Keys;
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![schedule_page, schedule_preview, schedule_save]
}

#[derive(Template)]
#[template(path = "admin/schedule.html")]
struct SchedulePage {
    f: Frame,
    rotation_schedule: String,
    /// Each timing setting: name, label, value shown.
    timings: Vec<(&'static str, &'static str, String)>,
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

/// Every state the page needs.
type Ctx<'a> = (&'a Config, &'a Clock, &'a Keys);

fn schedule_view(
    (config, clock, keys): Ctx<'_>,
    s: &AdminSession,
    change: Option<&ScheduleForm>,
    error: Option<String>,
    saved: bool,
) -> SchedulePage {
    let v = keys.policy_view();
    let now = clock.now();
    // What the form sent, where it sent something; else the value in force.
    let pick = |name: &str, current: &str| {
        change.and_then(|c| c.value(name)).map(str::to_owned).unwrap_or_else(|| current.to_owned())
    };
    let rotation_schedule = pick(ROTATION_SCHEDULE, &v.rotation_schedule);
    let preview = crate::schedule::Schedule::parse(&rotation_schedule)
        .map(|sch| sch.preview(now, 5).into_iter().map(|t| when(now, t)).collect())
        .unwrap_or_default();
    SchedulePage {
        f: frame(config, "Schedule", Some(s)),
        timings: TIMINGS.iter().map(|t| (t.name, t.label, pick(t.name, v.timing(t.name)))).collect(),
        pinned: v.pinned,
        warnings: v.warnings,
        rotation_schedule,
        preview,
        error,
        saved,
    }
}

#[get("/admin/schedule?<saved>")]
fn schedule_page(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    keys: &State<Arc<Keys>>,
    s: AdminSession,
    saved: Option<bool>,
) -> Page {
    render(&schedule_view((config, clock, keys), &s, None, None, saved.unwrap_or(false)))
}

/// The next fire times of an expression, for the schedule page's live preview.
#[get("/admin/schedule/preview?<cron>")]
fn schedule_preview(
    clock: &State<Clock>,
    _s: AdminSession,
    cron: &str,
) -> rocket::serde::json::Json<serde_json::Value> {
    let now = clock.now();
    rocket::serde::json::Json(match crate::schedule::Schedule::parse(cron) {
        Ok(s) => serde_json::json!({"fires": s.preview(now, 5).into_iter().map(|t| when(now, t)).collect::<Vec<_>>()}),
        Err(e) => serde_json::json!({"error": e}),
    })
}

/// The schedule form: the CSRF token, the action, and the settings by name (the rotation
/// schedule, or its alias, and each timing setting).
struct ScheduleForm(HashMap<String, String>);

impl ScheduleForm {
    /// What the form sent for `name` (the schedule also under its alias), trimmed, if not empty.
    fn value(&self, name: &str) -> Option<&str> {
        let given = self
            .0
            .get(name)
            .or_else(|| (name == ROTATION_SCHEDULE).then(|| self.0.get(ROTATION_SCHEDULE_ALIAS)).flatten());
        given.map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

#[post("/admin/schedule", data = "<form>")]
async fn schedule_save(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    keys: &State<Arc<Keys>>,
    s: AdminSession,
    form: Form<HashMap<String, String>>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    let form = ScheduleForm(form.into_inner());
    csrf_checked(&s, &form.0.get("csrf").cloned()).map_err(bare)?;
    if let Err(e) = crate::schedule::Schedule::parse(form.value(ROTATION_SCHEDULE).unwrap_or_default()) {
        return Err(refused(Status::BadRequest, schedule_view((config, clock, keys), &s, Some(&form), Some(e), false)));
    }
    if form.value("action") == Some("preview") {
        return Err(refused(Status::Ok, schedule_view((config, clock, keys), &s, Some(&form), None, false)));
    }
    // Only what differs from the current values (pinned ones cannot be sent).
    let current = keys.policy_view();
    let mut change = PolicyChange::default();
    let mut differs = |name: &str, current: &str| {
        if let Some(new) = form.value(name).filter(|new| *new != current) {
            change.set(name, new);
        }
    };
    differs(ROTATION_SCHEDULE, &current.rotation_schedule);
    for t in &TIMINGS {
        differs(t.name, current.timing(t.name));
    }
    if change.is_empty() {
        return Ok(Redirect::to("/admin/schedule"));
    }
    let actor = s.actor();
    match keys.update_policy(&change, &actor).await.map_err(ApiError::from) {
        Ok(_) => Ok(Redirect::to("/admin/schedule?saved=true")),
        Err(e) => {
            Err(refused(e.status, schedule_view((config, clock, keys), &s, Some(&form), Some(e.description), false)))
        }
    }
}
