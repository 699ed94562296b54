//! Administrators: adding one, removing one (behind a confirmation page), changing one's
//! own password.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::{get, post, routes, Route, State};

use super::format::when;
use super::page::{bare, csrf_checked, frame, refused, render, Frame, Page};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::service::Admins;
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![admins_page, admin_add, password_change, remove_confirm, admin_remove]
}

#[derive(Template)]
#[template(path = "admin/admins.html")]
struct AdminsPage {
    f: Frame,
    admins: Vec<(String, String, String)>,
    error: Option<String>,
    notice: Option<String>,
}

/// Every state a dashboard page of administrators needs.
type Ctx<'a> = (&'a Config, &'a Clock, &'a Admins);

async fn admins_view(
    (config, clock, admins): Ctx<'_>,
    s: &AdminSession,
    error: Option<String>,
    notice: Option<String>,
) -> Result<AdminsPage, Status> {
    let now = clock.now();
    let admins = admins
        .list()
        .await
        .map_err(ApiError::from)
        .map_err(|_| Status::InternalServerError)?
        .into_iter()
        .map(|(n, created, changed)| (n, when(now, created), when(now, changed)))
        .collect();
    Ok(AdminsPage { f: frame(config, "Administrators", Some(s)), admins, error, notice })
}

#[get("/admin/admins")]
async fn admins_page(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    admins: &State<Arc<Admins>>,
    s: AdminSession,
) -> Page {
    render(&admins_view((config, clock, admins), &s, None, None).await?)
}

#[derive(FromForm)]
struct AddAdminForm {
    csrf: Option<String>,
    name: String,
    password: String,
}

#[post("/admin/admins", data = "<form>")]
async fn admin_add(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    admins: &State<Arc<Admins>>,
    s: AdminSession,
    form: Form<AddAdminForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let (name, password, actor) = (form.name.trim().to_owned(), form.password.clone(), s.actor());
    let result = admins.add_admin(&name, &password, &actor).await.map_err(ApiError::from);
    let (error, notice) = match result {
        Ok(()) => (None, Some(format!("Administrator {} added.", form.name.trim()))),
        Err(e) => (Some(e.description), None),
    };
    let page = admins_view((config, clock, admins), &s, error.clone(), notice).await.map_err(bare)?;
    if error.is_some() {
        Err(refused(Status::BadRequest, page))
    } else {
        render(&page).map_err(bare)
    }
}

#[derive(FromForm)]
struct PasswordForm {
    csrf: Option<String>,
    current: String,
    new: String,
    confirm: String,
}

#[post("/admin/admins/password", data = "<form>")]
async fn password_change(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    admins: &State<Arc<Admins>>,
    s: AdminSession,
    form: Form<PasswordForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let result = if form.new != form.confirm {
        Err("The two new passwords differ.".to_owned())
    } else {
        let (admin, current, new, actor) = (s.session.admin.clone(), form.current.clone(), form.new.clone(), s.actor());
        let session_id = s.id.clone();
        admins
            .change_password(&admin, &current, &new, Some(&session_id), &actor)
            .await
            .map_err(ApiError::from)
            .map_err(|e| e.description)
    };
    let (error, notice) = match result {
        Ok(()) => (None, Some("Password changed.".to_owned())),
        Err(e) => (Some(e), None),
    };
    let page = admins_view((config, clock, admins), &s, error.clone(), notice).await.map_err(bare)?;
    if error.is_some() {
        Err(refused(Status::BadRequest, page))
    } else {
        render(&page).map_err(bare)
    }
}

#[derive(Template)]
#[template(path = "admin/confirm_remove_admin.html")]
struct RemoveConfirm {
    f: Frame,
    name: String,
    yourself: bool,
}

#[get("/admin/admins/<name>/remove")]
async fn remove_confirm(config: &State<Arc<Config>>, admins: &State<Arc<Admins>>, s: AdminSession, name: &str) -> Page {
    let exists = admins
        .list()
        .await
        .map_err(ApiError::from)
        .map_err(|_| Status::InternalServerError)?
        .iter()
        .any(|(n, _, _)| n == name);
    if !exists {
        return Err(Status::NotFound);
    }
    let yourself = s.session.admin == name;
    render(&RemoveConfirm { f: frame(config, "Remove administrator", Some(&s)), name: name.to_owned(), yourself })
}

#[derive(FromForm)]
struct RemoveForm {
    csrf: Option<String>,
}

#[post("/admin/admins/<name>/remove", data = "<form>")]
async fn admin_remove(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    admins: &State<Arc<Admins>>,
    s: AdminSession,
    name: &str,
    form: Form<RemoveForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let (target, actor) = (name.to_owned(), s.actor());
    let result = admins.remove_admin(&target, &actor).await.map_err(ApiError::from);
    let (error, notice) = match result {
        Ok(()) if s.session.admin == name => {
            // Their own sessions ended with the removal, this one included.
            let page = super::page::MessagePage {
                f: frame(config, "Signed out", None),
                heading: "Signed out".into(),
                message: format!(
                    "Administrator {name} removed; every session of theirs, this one included, has ended."
                ),
            };
            return render(&page).map_err(bare);
        }
        Ok(()) => (None, Some(format!("Administrator {name} removed; their sessions ended."))),
        Err(e) => (Some(e.description), None),
    };
    let page = admins_view((config, clock, admins), &s, error.clone(), notice).await.map_err(bare)?;
    if error.is_some() {
        Err(refused(Status::Conflict, page))
    } else {
        render(&page).map_err(bare)
    }
}
