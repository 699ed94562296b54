//! A subject's page: the sessions a web app's user holds (started, last refreshed, the
//! device label, who minted it), each ended on its own or all at once ("log out
//! everywhere") after a confirmation that says what happens. Ends are audited with the
//! administrator and the reason.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::{path_segment, when};
use super::page::{csrf_checked, frame, render, Frame, Page};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::service::sessions::Viewer;
use crate::service::Tokens;
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![subject_page, confirm_end, end]
}

struct SessionRow {
    id: String,
    label: String,
    minted_by: String,
    started: String,
    refreshed: String,
    ends: String,
    active: bool,
    ended: String,
}

#[derive(Template)]
#[template(path = "admin/subject.html")]
struct SubjectPage {
    f: Frame,
    sub: String,
    /// `sub` as a URL path segment.
    sub_path: String,
    rows: Vec<SessionRow>,
    running: usize,
    notice: Option<String>,
}

#[get("/admin/subjects/<sub>?<notice>")]
async fn subject_page(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    tokens: &State<Arc<Tokens>>,
    s: AdminSession,
    sub: &str,
    notice: Option<&str>,
) -> Page {
    let owned = sub.to_owned();
    let sessions = tokens
        .list_sessions(&Viewer::Admin, Some(&owned), false)
        .await
        .map_err(ApiError::from)
        .map_err(|e| e.status)?;
    let now = clock.now();
    let rows: Vec<SessionRow> = sessions
        .into_iter()
        .map(|v| SessionRow {
            label: v.label.unwrap_or_else(|| "—".into()),
            minted_by: v.minted_by,
            started: when(now, v.started_at),
            refreshed: when(now, v.last_refreshed_at),
            ends: when(now, v.ends_at),
            ended: match (v.ended_at, v.end_reason) {
                (Some(at), Some(why)) => format!("{} — {why}", when(now, at)),
                (Some(at), None) => when(now, at),
                _ => String::new(),
            },
            active: v.active,
            id: v.session_id,
        })
        .collect();
    let running = rows.iter().filter(|r| r.active).count();
    // Only the codes the action redirects with, never text from the URL itself.
    let notice = match notice {
        Some("ended") => {
            Some("Session ended: its refresh token stopped and its tokens are refused everywhere.".to_owned())
        }
        Some("ended-all") => Some("Every session ended: the subject is logged out everywhere.".to_owned()),
        _ => None,
    };
    let (sub_path, sub) = (path_segment(sub), sub.to_owned());
    render(&SubjectPage { f: frame(config, &format!("Subject {sub}"), Some(&s)), sub, sub_path, rows, running, notice })
}

#[derive(Template)]
#[template(path = "admin/confirm_end_session.html")]
struct ConfirmEnd {
    f: Frame,
    sub: String,
    sub_path: String,
    /// One session, or every running one when empty.
    session: String,
    running: usize,
}

#[get("/admin/subjects/<sub>/end?<session>")]
async fn confirm_end(
    config: &State<Arc<Config>>,
    tokens: &State<Arc<Tokens>>,
    s: AdminSession,
    sub: &str,
    session: Option<&str>,
) -> Page {
    let owned = sub.to_owned();
    let running = tokens
        .list_sessions(&Viewer::Admin, Some(&owned), true)
        .await
        .map_err(ApiError::from)
        .map_err(|e| e.status)?
        .len();
    render(&ConfirmEnd {
        f: frame(config, "End sessions", Some(&s)),
        sub: sub.to_owned(),
        sub_path: path_segment(sub),
        session: session.unwrap_or_default().to_owned(),
        running,
    })
}

#[derive(FromForm)]
struct EndForm {
    csrf: Option<String>,
    session: Option<String>,
    reason: String,
}

#[post("/admin/subjects/<sub>/end", data = "<form>")]
async fn end(tokens: &State<Arc<Tokens>>, s: AdminSession, sub: &str, form: Form<EndForm>) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let reason = match form.reason.trim() {
        "" => "ended from the dashboard".to_owned(),
        r => r.to_owned(),
    };
    let (actor, owned, session) = (s.actor(), sub.to_owned(), form.session.clone().filter(|x| !x.is_empty()));
    let one = session.is_some();
    let ended = match session {
        Some(id) => tokens.end_session(&id, &Viewer::Admin, &reason, &actor).await.map(drop),
        None => tokens.end_sessions_of(&owned, &Viewer::Admin, &reason, &actor).await.map(drop),
    };
    ended.map_err(|e| ApiError::from(e).status)?;
    let code = if one { "ended" } else { "ended-all" };
    Ok(Redirect::to(format!("/admin/subjects/{}?notice={code}", path_segment(sub))))
}
