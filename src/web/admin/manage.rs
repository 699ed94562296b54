//! The dashboard's management pages: schedule, tokens, revocations, clients and API keys,
//! audit log, administrators. Each acts through the same service calls as the API; each
//! form is CSRF-checked; a refused form shows the page again with the reason, and nothing
//! changed.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::when;
use super::pages::{csrf_checked, frame, render, Frame, Page};
use super::AdminSession;
use crate::clock::{self, Instant};
use crate::config::parse_duration;
use crate::service::apikeys::Role;
use crate::service::clients::NewClient;
use crate::service::policy::PolicyChange;
use crate::service::revocations::RevokeTarget;
use crate::service::tokens::IssueRequest;
use crate::service::Keyturn;
use crate::store::audit::AuditFilter;
use crate::store::tokens::TokenFilter;
use crate::web::api::blocking;

pub fn routes() -> Vec<Route> {
    routes![
        schedule_page,
        schedule_save,
        schedule_preview,
        tokens_page,
        token_issue,
        token_revoke,
        subject_revoke,
        revocations_page,
        revocation_add,
        clients_page,
        client_create,
        client_disable,
        apikey_create,
        apikey_revoke,
        audit_page,
        admins_page,
        admin_add,
        password_change
    ]
}

/// A page shown again after a refused form, with status 400 (or the error's own status).
fn refused<T: Template>(status: Status, page: T) -> (Status, RawHtml<String>) {
    (status, render(&page).unwrap_or_else(|_| RawHtml(String::new())))
}

/// A page that can be shown again with the reason a form was refused.
trait Refusable: Template {
    fn refuse(&mut self, why: String);
}

/// Answers a form: on success, `then` fills in what to show once (a new token, a secret)
/// and the page renders; on failure the page renders again with the reason and the error's
/// status, and nothing changed.
fn answer<P: Refusable, T>(
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
fn bare(status: Status) -> (Status, RawHtml<String>) {
    (status, RawHtml(String::new()))
}

fn parse_time(v: &str) -> Option<Instant> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    let with_zone = if v.len() == 16 { format!("{v}:00Z") } else { format!("{v}Z") };
    time::OffsetDateTime::parse(&with_zone, &time::format_description::well_known::Rfc3339).ok()
}

// ---- schedule

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
    match blocking(service, move |svc| svc.update_policy(&change, &actor)).await {
        Ok(_) => Ok(Redirect::to("/admin/schedule?saved=true")),
        Err(e) => Err(refused(e.status, schedule_view(service, &s, Some(&form), Some(e.description), false))),
    }
}

// ---- tokens

struct TokenRow {
    jti: String,
    sub: String,
    aud: String,
    client_id: String,
    kid: String,
    issued: String,
    expires: String,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "admin/tokens.html")]
struct TokensPage {
    f: Frame,
    algorithms: Vec<String>,
    rows: Vec<TokenRow>,
    filter_sub: String,
    filter_client: String,
    filter_kid: String,
    filter_active: String,
    issued: Option<String>,
    issued_refresh: Option<String>,
    issued_kid: String,
    error: Option<String>,
    notice: Option<String>,
}

async fn tokens_view(service: &Arc<Keyturn>, s: &AdminSession, q: TokenQuery) -> Result<TokensPage, Status> {
    let filter = TokenFilter {
        sub: q.sub.clone().filter(|v| !v.is_empty()),
        client_id: q.client_id.clone().filter(|v| !v.is_empty()),
        kid: q.kid.clone().filter(|v| !v.is_empty()),
        unexpired_at: None,
        expired_at: None,
        before: None,
        limit: 200,
    };
    let active = q.active.clone().unwrap_or_default();
    let now = service.now();
    let rows = blocking(service, move |svc| {
        let mut f = filter;
        match active.as_str() {
            "active" => f.unexpired_at = Some(svc.now()),
            "expired" => f.expired_at = Some(svc.now()),
            _ => {}
        }
        svc.list_tokens(&f)
    })
    .await
    .map_err(|_| Status::InternalServerError)?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("—").to_owned();
    let t = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|x| time::OffsetDateTime::parse(x, &time::format_description::well_known::Rfc3339).ok())
            .map(|x| when(now, x))
            .unwrap_or_default()
    };
    let rows = rows
        .into_iter()
        .map(|(_, v)| TokenRow {
            jti: text(&v["jti"]),
            sub: text(&v["sub"]),
            aud: v["aud"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            client_id: text(&v["client_id"]),
            kid: text(&v["kid"]),
            issued: t(&v["iat"]),
            expires: t(&v["exp"]),
            status: if v["revoked"] == true {
                "revoked"
            } else if v["expired"] == true {
                "expired"
            } else {
                "active"
            },
        })
        .collect();
    Ok(TokensPage {
        f: frame(service, "Tokens", Some(s)),
        algorithms: service.config().algorithms.iter().map(|a| a.to_string()).collect(),
        rows,
        filter_sub: q.sub.unwrap_or_default(),
        filter_client: q.client_id.unwrap_or_default(),
        filter_kid: q.kid.unwrap_or_default(),
        filter_active: q.active.unwrap_or_default(),
        issued: None,
        issued_refresh: None,
        issued_kid: String::new(),
        error: None,
        notice: q.notice,
    })
}

#[derive(FromForm, Default, Clone)]
struct TokenQuery {
    sub: Option<String>,
    client_id: Option<String>,
    kid: Option<String>,
    active: Option<String>,
    notice: Option<String>,
}

#[get("/admin/tokens?<q..>")]
async fn tokens_page(service: &State<Arc<Keyturn>>, s: AdminSession, q: TokenQuery) -> Page {
    render(&tokens_view(service, &s, q).await?)
}

#[derive(FromForm)]
struct IssueForm {
    csrf: Option<String>,
    sub: String,
    aud: String,
    scope: String,
    ttl: String,
    alg: String,
    claims: String,
    refresh: Option<bool>,
}

#[post("/admin/tokens", data = "<form>")]
async fn token_issue(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<IssueForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let form = form.into_inner();
    let mut page = tokens_view(service, &s, <TokenQuery as Default>::default()).await.map_err(bare)?;
    let mut problems = Vec::new();
    let claims = if form.claims.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_str::<serde_json::Value>(&form.claims) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                problems.push("claims must be a JSON object, like {\"tenant\": \"acme\"}".to_owned());
                serde_json::Map::new()
            }
        }
    };
    let ttl = match form.ttl.trim() {
        "" => None,
        t => match parse_duration(t) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("lifetime: {e}"));
                None
            }
        },
    };
    let alg = form.alg.parse().ok();
    if !problems.is_empty() {
        page.error = Some(problems.join("; "));
        return Err(refused(Status::BadRequest, page));
    }
    let req = IssueRequest {
        sub: form.sub.trim().to_owned(),
        aud: form.aud.split_whitespace().map(str::to_owned).collect(),
        ttl,
        alg,
        scope: Some(form.scope.trim().to_owned()).filter(|x| !x.is_empty()),
        client_id: None,
        claims,
        refresh: form.refresh.unwrap_or(false),
    };
    let actor = s.actor();
    let outcome = blocking(service, move |svc| svc.issue_token(&req, &actor)).await;
    // Reloaded after issuing, so the list shows the new token.
    let page = tokens_view(service, &s, <TokenQuery as Default>::default()).await.map_err(bare)?;
    answer(page, outcome, |page, t| {
        page.issued = Some(t.access_token);
        page.issued_refresh = t.refresh_token;
        page.issued_kid = t.kid;
    })
}

impl Refusable for TokensPage {
    fn refuse(&mut self, why: String) {
        self.error = Some(why);
    }
}

#[derive(FromForm)]
struct RevokeTokenForm {
    csrf: Option<String>,
    jti: Option<String>,
    sub: Option<String>,
    reason: String,
}

#[post("/admin/tokens/revoke", data = "<form>")]
async fn token_revoke(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<RevokeTokenForm>,
) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let target = match (&form.jti, &form.sub) {
        (Some(j), _) if !j.is_empty() => RevokeTarget::Jti(j.clone()),
        (_, Some(sub)) if !sub.is_empty() => RevokeTarget::Sub(sub.clone()),
        _ => return Err(Status::BadRequest),
    };
    let (reason, actor) = (
        if form.reason.trim().is_empty() { "revoked from the dashboard".to_owned() } else { form.reason.clone() },
        s.actor(),
    );
    blocking(service, move |svc| svc.revoke(&target, &reason, &actor)).await.map_err(|e| e.status)?;
    Ok(Redirect::to("/admin/tokens?notice=revoked"))
}

#[post("/admin/tokens/revoke-subject", data = "<form>")]
async fn subject_revoke(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<RevokeTokenForm>,
) -> Result<Redirect, Status> {
    token_revoke(service, s, form).await
}

// ---- revocations

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
}

async fn revocations_view(
    service: &Arc<Keyturn>,
    s: &AdminSession,
    search: String,
    error: Option<String>,
) -> Result<RevocationsPage, Status> {
    let (entries, _) =
        blocking(service, |svc| svc.revocation_feed(0, 100_000)).await.map_err(|_| Status::InternalServerError)?;
    let now = service.now();
    let t = |x: &str| {
        time::OffsetDateTime::parse(x, &time::format_description::well_known::Rfc3339)
            .map(|v| when(now, v))
            .unwrap_or_default()
    };
    let needle = search.trim().to_owned();
    let rows = entries
        .iter()
        .rev()
        .filter(|e| needle.is_empty() || e.value.contains(&needle) || e.reason.contains(&needle))
        .take(500)
        .map(|e| RevocationRow {
            kind: e.kind.clone(),
            value: e.value.clone(),
            revoked: t(&e.revoked_at),
            until: t(&e.until),
            reason: e.reason.clone(),
        })
        .collect();
    Ok(RevocationsPage { f: frame(service, "Revocations", Some(s)), rows, search, error })
}

#[get("/admin/revocations?<search>")]
async fn revocations_page(service: &State<Arc<Keyturn>>, s: AdminSession, search: Option<String>) -> Page {
    render(&revocations_view(service, &s, search.unwrap_or_default(), None).await?)
}

#[derive(FromForm)]
struct AddRevocationForm {
    csrf: Option<String>,
    jti: String,
    reason: String,
}

#[post("/admin/revocations", data = "<form>")]
async fn revocation_add(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<AddRevocationForm>,
) -> Result<Redirect, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let (target, reason, actor) = (RevokeTarget::Jti(form.jti.trim().to_owned()), form.reason.clone(), s.actor());
    match blocking(service, move |svc| svc.revoke(&target, &reason, &actor)).await {
        Ok(_) => Ok(Redirect::to("/admin/revocations")),
        Err(e) => {
            let page = revocations_view(service, &s, String::new(), Some(e.description)).await.map_err(bare)?;
            Err(refused(e.status, page))
        }
    }
}

// ---- clients and API keys

#[derive(Template)]
#[template(path = "admin/clients.html")]
struct ClientsPage {
    f: Frame,
    clients: Vec<crate::service::clients::ClientView>,
    api_keys: Vec<crate::service::apikeys::ApiKeyView>,
    new_secret: Option<(String, String)>,
    error: Option<String>,
}

async fn clients_view(service: &Arc<Keyturn>, s: &AdminSession) -> Result<ClientsPage, Status> {
    let (clients, api_keys) = blocking(service, |svc| Ok((svc.list_clients()?, svc.list_api_keys()?)))
        .await
        .map_err(|_| Status::InternalServerError)?;
    Ok(ClientsPage {
        f: frame(service, "Clients and API keys", Some(s)),
        clients,
        api_keys,
        new_secret: None,
        error: None,
    })
}

#[get("/admin/clients")]
async fn clients_page(service: &State<Arc<Keyturn>>, s: AdminSession) -> Page {
    render(&clients_view(service, &s).await?)
}

#[derive(FromForm)]
struct ClientForm {
    csrf: Option<String>,
    name: String,
    audiences: String,
    scopes: String,
    max_ttl: String,
}

#[post("/admin/clients", data = "<form>")]
async fn client_create(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<ClientForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let max_ttl = match form.max_ttl.trim() {
        "" => None,
        t => parse_duration(t).ok(),
    };
    let new = NewClient {
        name: form.name.clone(),
        audiences: form.audiences.split_whitespace().map(str::to_owned).collect(),
        scopes: form.scopes.split_whitespace().map(str::to_owned).collect(),
        max_ttl,
    };
    let actor = s.actor();
    let outcome = blocking(service, move |svc| svc.create_client(&new, &actor)).await;
    let page = clients_view(service, &s).await.map_err(bare)?;
    answer(page, outcome, |page, (view, secret)| {
        page.new_secret = Some((format!("client {} — client_id {}", view.name, view.client_id), secret.to_string()));
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
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<IdForm>,
) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (id, actor) = (form.id.clone(), s.actor());
    blocking(service, move |svc| svc.disable_client(&id, &actor)).await.map_err(|e| e.status)?;
    Ok(Redirect::to("/admin/clients"))
}

#[derive(FromForm)]
struct ApiKeyForm {
    csrf: Option<String>,
    name: String,
    role: String,
}

#[post("/admin/apikeys", data = "<form>")]
async fn apikey_create(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<ApiKeyForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let role: Role = form.role.parse().map_err(|_| bare(Status::BadRequest))?;
    let (name, actor) = (form.name.clone(), s.actor());
    let outcome = blocking(service, move |svc| svc.create_api_key(role, &name, &actor)).await;
    let page = clients_view(service, &s).await.map_err(bare)?;
    answer(page, outcome, |page, (identity, secret)| {
        page.new_secret = Some((format!("{} API key {}", identity.role, identity.name), secret.to_string()));
    })
}

#[post("/admin/apikeys/revoke", data = "<form>")]
async fn apikey_revoke(service: &State<Arc<Keyturn>>, s: AdminSession, form: Form<IdForm>) -> Result<Redirect, Status> {
    csrf_checked(&s, &form.csrf)?;
    let (id, actor) = (form.id.clone(), s.actor());
    blocking(service, move |svc| svc.revoke_api_key(&id, &actor)).await.map_err(|e| e.status)?;
    Ok(Redirect::to("/admin/clients"))
}

// ---- audit

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
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[get("/admin/audit?<q..>")]
async fn audit_page(service: &State<Arc<Keyturn>>, s: AdminSession, q: AuditQuery) -> Page {
    let filter = AuditFilter {
        actor: q.actor.clone().filter(|v| !v.trim().is_empty()),
        action: q.action.clone().filter(|v| !v.trim().is_empty()),
        from: q.from.as_deref().and_then(parse_time),
        to: q.to.as_deref().and_then(parse_time),
        before: None,
        limit: 500,
    };
    let entries =
        blocking(service, move |svc| svc.audit_search(&filter)).await.map_err(|_| Status::InternalServerError)?;
    let now = service.now();
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
        f: frame(service, "Audit log", Some(&s)),
        rows,
        actor: q.actor.unwrap_or_default(),
        action: q.action.unwrap_or_default(),
        from: q.from.unwrap_or_default(),
        to: q.to.unwrap_or_default(),
    })
}

// ---- administrators

#[derive(Template)]
#[template(path = "admin/admins.html")]
struct AdminsPage {
    f: Frame,
    admins: Vec<(String, String, String)>,
    error: Option<String>,
    notice: Option<String>,
}

async fn admins_view(
    service: &Arc<Keyturn>,
    s: &AdminSession,
    error: Option<String>,
    notice: Option<String>,
) -> Result<AdminsPage, Status> {
    let now = service.now();
    let admins = blocking(service, |svc| svc.admins())
        .await
        .map_err(|_| Status::InternalServerError)?
        .into_iter()
        .map(|(n, created, changed)| (n, when(now, created), clock::rfc3339(changed)))
        .collect();
    Ok(AdminsPage { f: frame(service, "Administrators", Some(s)), admins, error, notice })
}

#[get("/admin/admins")]
async fn admins_page(service: &State<Arc<Keyturn>>, s: AdminSession) -> Page {
    render(&admins_view(service, &s, None, None).await?)
}

#[derive(FromForm)]
struct AddAdminForm {
    csrf: Option<String>,
    name: String,
    password: String,
}

#[post("/admin/admins", data = "<form>")]
async fn admin_add(
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<AddAdminForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let (name, password, actor) = (form.name.trim().to_owned(), form.password.clone(), s.actor());
    let result = blocking(service, move |svc| svc.add_admin(&name, &password, &actor)).await;
    let (error, notice) = match result {
        Ok(()) => (None, Some(format!("Administrator {} added.", form.name.trim()))),
        Err(e) => (Some(e.description), None),
    };
    let page = admins_view(service, &s, error.clone(), notice).await.map_err(bare)?;
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
    service: &State<Arc<Keyturn>>,
    s: AdminSession,
    form: Form<PasswordForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let result = if form.new != form.confirm {
        Err("The two new passwords differ.".to_owned())
    } else {
        let (admin, current, new, actor) = (s.session.admin.clone(), form.current.clone(), form.new.clone(), s.actor());
        blocking(service, move |svc| svc.change_password(&admin, &current, &new, &actor))
            .await
            .map_err(|e| e.description)
    };
    let (error, notice) = match result {
        Ok(()) => (None, Some("Password changed.".to_owned())),
        Err(e) => (Some(e), None),
    };
    let page = admins_view(service, &s, error.clone(), notice).await.map_err(bare)?;
    if error.is_some() {
        Err(refused(Status::BadRequest, page))
    } else {
        render(&page).map_err(bare)
    }
}
