//! The audit log, filtered by actor, action and time.

use std::sync::Arc;

use askama::Template;
use rocket::form::FromForm;
use rocket::http::Status;
use rocket::{get, routes, Route, State};

use super::format::when;
use super::page::{frame, parse_time, render, Frame, Page};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::records::AuditQuery;
use crate::service::Audit;
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![audit_page]
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    source: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    f: Frame,
    rows: Vec<AuditRow>,
    actor: String,
    action: String,
    from: String,
    to: String,
}

#[derive(FromForm, Default)]
struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[get("/admin/audit?<q..>")]
async fn audit_page(
    config: &State<Arc<Config>>,
    audit: &State<Arc<Audit>>,
    clock: &State<Clock>,
    s: AdminSession,
    q: AuditParams,
) -> Page {
    let filter = AuditQuery {
        actor: q.actor.clone().filter(|v| !v.trim().is_empty()),
        action: q.action.clone().filter(|v| !v.trim().is_empty()),
        from: q.from.as_deref().and_then(parse_time),
        to: q.to.as_deref().and_then(parse_time),
        before: None,
        limit: 500,
    };
    let entries = audit.search(&filter).await.map_err(ApiError::from).map_err(|_| Status::InternalServerError)?;
    let now = clock.now();
    let rows = entries
        .into_iter()
        .map(|e| AuditRow {
            at: when(now, e.at),
            actor: e.actor,
            action: e.action,
            target: e.target.unwrap_or_default(),
            source: e.source.unwrap_or_default(),
            detail: e.detail.unwrap_or_default(),
        })
        .collect();
    render(&AuditPage {
        f: frame(config, "Audit log", Some(&s)),
        rows,
        actor: q.actor.unwrap_or_default(),
        action: q.action.unwrap_or_default(),
        from: q.from.unwrap_or_default(),
        to: q.to.unwrap_or_default(),
    })
}
