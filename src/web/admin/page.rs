//! What every dashboard page shares: the frame (title, administrator, CSRF token), rendering,
//! the CSRF check, error pages, and how a refused form is shown again with its reason.

use askama::Template;
use rocket::http::Status;
use rocket::response::content::RawHtml;

use super::AdminSession;
use crate::clock::Instant;

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

pub(super) fn frame(config: &crate::config::Config, title: &str, s: Option<&AdminSession>) -> Frame {
    Frame {
        title: title.to_owned(),
        admin: s.map(|s| s.session.admin.clone()),
        csrf: s.map(|s| s.session.csrf.clone()).unwrap_or_default(),
        issuer: config.issuer.clone(),
    }
}

pub(super) fn csrf_checked(s: &AdminSession, presented: &Option<String>) -> Result<(), Status> {
    if crate::service::admins::Admins::csrf_ok(&s.session, presented.as_deref()) {
        Ok(())
    } else {
        tracing::warn!(admin = %s.session.admin, "form refused: missing or wrong CSRF token");
        Err(Status::Forbidden)
    }
}

#[derive(Template)]
#[template(path = "admin/message.html")]
pub(super) struct MessagePage {
    pub f: Frame,
    pub heading: String,
    pub message: String,
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

/// A page shown again after a refused form, with status 400 (or the error's own status).
pub(super) fn refused<T: Template>(status: Status, page: T) -> (Status, RawHtml<String>) {
    (status, render(&page).unwrap_or_else(|_| RawHtml(String::new())))
}

/// A page that can be shown again with the reason a form was refused.
pub(super) trait Refusable: Template {
    fn refuse(&mut self, why: String);
}

/// Answers a form: on success, `then` fills in what to show once (a new token, a secret)
/// and the page renders; on failure the page renders again with the reason and the error's
/// status, and nothing changed.
pub(super) fn answer<P: Refusable, T>(
    mut page: P,
    outcome: Result<T, crate::web::error::ApiError>,
    then: impl FnOnce(&mut P, T),
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    match outcome {
        Ok(v) => {
            then(&mut page, v);
            render(&page).map_err(bare)
        }
        Err(e) => {
            page.refuse(e.description);
            Err(refused(e.status, page))
        }
    }
}

/// An error status with an empty body, for the catcher to dress as a page.
pub(super) fn bare(status: Status) -> (Status, RawHtml<String>) {
    (status, RawHtml(String::new()))
}

pub(super) fn parse_time(v: &str) -> Option<Instant> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    let with_zone = if v.len() == 16 { format!("{v}:00Z") } else { format!("{v}Z") };
    time::OffsetDateTime::parse(&with_zone, &time::format_description::well_known::Rfc3339).ok()
}
