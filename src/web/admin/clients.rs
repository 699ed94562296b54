//! OAuth clients and API keys: registering (the secret shown once), disabling, revoking.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::when_text;
use super::page::{answer, bare, csrf_checked, frame, refused, render, Frame, Page, Refusable};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::duration::parse_duration;
use crate::service::apikeys::Role;
use crate::service::clients::{NewClient, NewCredential};
use crate::service::Clients;
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![clients_page, client_create, client_disable, apikey_create, apikey_revoke]
}

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ClientsPage {
    f: Frame,
    clients: Vec<crate::service::clients::ClientView>,
    api_keys: Vec<crate::service::apikeys::ApiKeyView>,
    new_secret: Option<(String, String)>,
    error: Option<String>,
    /// What the action just taken did.
    notice: Option<String>,
}

/// Every state the page needs.
type Ctx<'a> = (&'a Config, &'a Clock, &'a Clients);

async fn clients_view((config, clock, clients): Ctx<'_>, s: &AdminSession) -> Result<ClientsPage, Status> {
    let internal = |_| Status::InternalServerError;
    let mut api_keys = clients.list_api_keys().await.map_err(internal)?;
    let mut clients = clients.list_clients().await.map_err(internal)?;
    // One time format on every page: absolute UTC and relative.
    let now = clock.now();
    for c in &mut clients {
        c.created_at = when_text(now, &c.created_at);
        c.disabled_at = c.disabled_at.as_deref().map(|t| when_text(now, t));
    }
    for k in &mut api_keys {
        k.created_at = when_text(now, &k.created_at);
        k.revoked_at = k.revoked_at.as_deref().map(|t| when_text(now, t));
        k.last_used_at = k.last_used_at.as_deref().map(|t| when_text(now, t));
    }
    Ok(ClientsPage {
        f: frame(config, "Clients and API keys", Some(s)),
        clients,
        api_keys,
        new_secret: None,
        error: None,
        notice: None,
    })
}

/// An id as the actions redirect with it: shown only if it looks like one.
fn plain_id(id: Option<&str>) -> Option<&str> {
    id.filter(|i| i.len() <= 64 && i.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

#[get("/admin/clients?<done>&<id>")]
async fn clients_page(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    clients: &State<Arc<Clients>>,
    s: AdminSession,
    done: Option<&str>,
    id: Option<&str>,
) -> Page {
    let mut page = clients_view((config, clock, clients), &s).await?;
    page.notice = match (done, plain_id(id)) {
        (Some("client-disabled"), Some(id)) => {
            Some(format!("Client {id} disabled: it can no longer authenticate and its tokens are revoked."))
        }
        (Some("apikey-revoked"), Some(id)) => Some(format!("API key {id} revoked, with what it minted.")),
        _ => None,
    };
    render(&page)
}

#[derive(FromForm)]
struct ClientForm {
    csrf: Option<String>,
    name: String,
    audiences: String,
    scopes: String,
    max_ttl: String,
    require_dpop: bool,
    jwks_uri: Option<String>,
    jwks: Option<String>,
}

#[post("/admin/clients", data = "<form>")]
async fn client_create(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    clients: &State<Arc<Clients>>,
    s: AdminSession,
    form: Form<ClientForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let max_ttl = match form.max_ttl.trim() {
        "" => None,
        t => match parse_duration(t) {
            Ok(d) => Some(d),
            Err(e) => {
                let mut page = clients_view((config, clock, clients), &s).await.map_err(bare)?;
                page.refuse(format!("maximum lifetime: {e}"));
                return Err(refused(Status::BadRequest, page));
            }
        },
    };
    let new = NewClient {
        name: form.name.clone(),
        audiences: form.audiences.split_whitespace().map(str::to_owned).collect(),
        scopes: form.scopes.split_whitespace().map(str::to_owned).collect(),
        max_ttl,
        dpop_required: form.require_dpop,
        credential: match (
            form.jwks_uri.as_deref().unwrap_or_default().trim(),
            form.jwks.as_deref().unwrap_or_default().trim(),
        ) {
            ("", "") => NewCredential::Secret,
            (url, "") => NewCredential::JwksUri(url.to_owned()),
            ("", set) => match serde_json::from_str(set) {
                Ok(set) => NewCredential::Jwks(set),
                Err(e) => {
                    let mut page = clients_view((config, clock, clients), &s).await.map_err(bare)?;
                    page.refuse(format!("public keys: not JSON ({e})"));
                    return Err(refused(Status::BadRequest, page));
                }
            },
            _ => {
                let mut page = clients_view((config, clock, clients), &s).await.map_err(bare)?;
                page.refuse("give the public keys' URL or the keys, not both".into());
                return Err(refused(Status::BadRequest, page));
            }
        },
    };
    let actor = s.actor();
    let outcome = clients.create_client(&new, &actor).await.map_err(ApiError::from);
    let page = clients_view((config, clock, clients), &s).await.map_err(bare)?;
    answer(page, outcome, |page, (view, secret)| match secret {
        Some(secret) => {
            page.new_secret =
                Some((format!("client {} — client_id {}", view.name, view.client_id), secret.to_string()));
        }
        None => {
            page.notice = Some(format!(
                "Created client {} — client_id {}; it authenticates with private_key_jwt.",
                view.name, view.client_id
            ));
        }
    })
}

impl Refusable for ClientsPage {
    fn refuse(&mut self, why: String) {
        self.error = Some(why);
    }
}

#[derive(FromForm)]
struct IdForm {
    csrf: Option<String>,
    id: String,
}

#[post("/admin/clients/disable", data = "<form>")]
async fn client_disable(
    clients: &State<Arc<Clients>>,
    s: AdminSession,
    form: Form<IdForm>,
) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (id, actor) = (form.id.clone(), s.actor());
    clients.disable_client(&id, &actor).await.map_err(ApiError::from).map_err(|e| e.status)?;
    Ok(Redirect::to(format!("/admin/clients?done=client-disabled&id={}", form.id)))
}

#[derive(FromForm)]
struct ApiKeyForm {
    csrf: Option<String>,
    name: String,
    role: String,
}

#[post("/admin/apikeys", data = "<form>")]
async fn apikey_create(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    clients: &State<Arc<Clients>>,
    s: AdminSession,
    form: Form<ApiKeyForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let role: Role = form.role.parse().map_err(|_| bare(Status::BadRequest))?;
    let (name, actor) = (form.name.clone(), s.actor());
    let outcome = clients.create_api_key(role, &name, &actor).await.map_err(ApiError::from);
    let page = clients_view((config, clock, clients), &s).await.map_err(bare)?;
    answer(page, outcome, |page, (identity, secret)| {
        page.new_secret = Some((format!("{} API key {}", identity.role, identity.name), secret.to_string()));
    })
}

#[post("/admin/apikeys/revoke", data = "<form>")]
async fn apikey_revoke(clients: &State<Arc<Clients>>, s: AdminSession, form: Form<IdForm>) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (id, actor) = (form.id.clone(), s.actor());
    clients.revoke_api_key(&id, &actor).await.map_err(ApiError::from).map_err(|e| e.status)?;
    Ok(Redirect::to(format!("/admin/clients?done=apikey-revoked&id={}", form.id)))
}
