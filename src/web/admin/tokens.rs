//! Issued tokens: listing and filtering their records, issuing one by hand, revoking by jti
//! or subject.

use std::sync::Arc;

use askama::Template;
use rocket::form::{Form, FromForm};
use rocket::http::Status;
use rocket::response::content::RawHtml;
use rocket::response::Redirect;
use rocket::{get, post, routes, Route, State};

use super::format::when;
use super::page::{answer, bare, csrf_checked, frame, refused, render, Frame, Page, Refusable};
use super::AdminSession;
use crate::clock::Clock;
use crate::config::Config;
use crate::duration::parse_duration;
use crate::records::{Lifetime, TokenQuery};
use crate::service::revocations::RevokeTarget;
use crate::service::tokens::IssueRequest;
use crate::service::{Clients, Revocations, Shared, Tokens};
use crate::web::error::ApiError;

pub fn routes() -> Vec<Route> {
    routes![tokens_page, token_issue, token_revoke, subject_revoke]
}

struct TokenRow {
    jti: String,
    sub: String,
    aud: String,
    client_id: String,
    kid: String,
    issued: String,
    expires: String,
    status: &'static str,
    /// Why a revoked token is revoked, in words.
    why: &'static str,
    sub_path: String,
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
    /// The audiences and scopes the enabled OAuth clients are registered with, and the
    /// longest lifetime: what the form's fields may hold.
    known_audiences: String,
    known_scopes: String,
    max_ttl: String,
}

/// Every state the page needs.
type Ctx<'a> = (&'a Config, &'a Clock, &'a Shared, &'a Tokens, &'a Clients);

async fn tokens_view(
    (config, clock, shared, tokens, clients): Ctx<'_>,
    s: &AdminSession,
    q: TokenParams,
) -> Result<TokensPage, Status> {
    let lifetime = match q.active.as_deref() {
        Some("active") => Some(Lifetime::Unexpired),
        Some("expired") => Some(Lifetime::Expired),
        _ => None,
    };
    let query = TokenQuery {
        sub: q.sub.clone().filter(|v| !v.is_empty()),
        client_id: q.client_id.clone().filter(|v| !v.is_empty()),
        kid: q.kid.clone().filter(|v| !v.is_empty()),
        lifetime,
        before: None,
        limit: 200,
    };
    let now = clock.now();
    let internal = |_| Status::InternalServerError;
    let rows = tokens.list_tokens(&query).await.map_err(internal)?;
    let clients = clients.list_clients().await.map_err(internal)?;
    let enabled = || clients.iter().filter(|c| c.disabled_at.is_none());
    let mut audiences: Vec<String> = enabled().flat_map(|c| c.audiences.clone()).collect();
    let mut scopes: Vec<String> = enabled().flat_map(|c| c.scopes.clone()).collect();
    for list in [&mut audiences, &mut scopes] {
        list.sort();
        list.dedup();
    }
    let rows = rows
        .into_iter()
        .map(|t| TokenRow {
            status: t.status.as_str(),
            why: match t.revoked_because {
                Some("jti") => "this token was revoked",
                Some("sid") => "its session ended (a logout)",
                Some("sub") => "every token of its subject was revoked",
                Some("client_id") => "its client was revoked or disabled",
                Some("kid") => "its signing key was revoked",
                _ => "",
            },
            sub_path: super::format::path_segment(&t.record.sub),
            jti: t.record.jti,
            sub: t.record.sub,
            aud: t.record.aud.join(" "),
            client_id: t.record.client_id.unwrap_or_else(|| "—".into()),
            kid: t.record.kid.to_string(),
            issued: when(now, t.record.iat),
            expires: when(now, t.record.exp),
        })
        .collect();
    Ok(TokensPage {
        f: frame(config, "Tokens", Some(s)),
        algorithms: config.algorithms.iter().map(|a| a.to_string()).collect(),
        rows,
        filter_sub: q.sub.unwrap_or_default(),
        filter_client: q.client_id.unwrap_or_default(),
        filter_kid: q.kid.unwrap_or_default(),
        filter_active: q.active.unwrap_or_default(),
        issued: None,
        issued_refresh: None,
        issued_kid: String::new(),
        error: None,
        // Only the codes the actions redirect with, never text from the URL itself.
        notice: q.notice.filter(|n| n == "revoked").map(|_| {
            "Revoked: refused from now on by introspection and forward auth, and in the revocation feed.".to_owned()
        }),
        known_audiences: audiences.join(" "),
        known_scopes: scopes.join(" "),
        max_ttl: crate::duration::format_duration(shared.policy().max_token_ttl),
    })
}

#[derive(FromForm, Default, Clone)]
struct TokenParams {
    sub: Option<String>,
    client_id: Option<String>,
    kid: Option<String>,
    active: Option<String>,
    notice: Option<String>,
}

#[get("/admin/tokens?<q..>")]
#[allow(clippy::too_many_arguments)]
async fn tokens_page(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    shared: &State<Arc<Shared>>,
    tokens: &State<Arc<Tokens>>,
    clients: &State<Arc<Clients>>,
    s: AdminSession,
    q: TokenParams,
) -> Page {
    render(&tokens_view((config, clock, shared, tokens, clients), &s, q).await?)
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
#[allow(clippy::too_many_arguments)]
async fn token_issue(
    config: &State<Arc<Config>>,
    clock: &State<Clock>,
    shared: &State<Arc<Shared>>,
    tokens: &State<Arc<Tokens>>,
    clients: &State<Arc<Clients>>,
    s: AdminSession,
    form: Form<IssueForm>,
) -> Result<RawHtml<String>, (Status, RawHtml<String>)> {
    csrf_checked(&s, &form.csrf).map_err(bare)?;
    let form = form.into_inner();
    let mut page = tokens_view((config, clock, shared, tokens, clients), &s, <TokenParams as Default>::default())
        .await
        .map_err(bare)?;
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
    let alg = match form.alg.trim() {
        "" => None,
        a => match a.parse() {
            Ok(alg) => Some(alg),
            Err(e) => {
                problems.push(format!("algorithm: {e}"));
                None
            }
        },
    };
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
        ..IssueRequest::default()
    };
    let actor = s.actor();
    let outcome = tokens.issue_token(&req, &actor).await.map_err(ApiError::from);
    // Reloaded after issuing, so the list shows the new token.
    let page = tokens_view((config, clock, shared, tokens, clients), &s, <TokenParams as Default>::default())
        .await
        .map_err(bare)?;
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
    revocations: &State<Arc<Revocations>>,
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
    revocations.revoke(&target, &reason, &actor).await.map_err(ApiError::from).map_err(|e| e.status)?;
    Ok(Redirect::to("/admin/tokens?notice=revoked"))
}

#[post("/admin/tokens/revoke-subject", data = "<form>")]
async fn subject_revoke(
    revocations: &State<Arc<Revocations>>,
    s: AdminSession,
    form: Form<RevokeTokenForm>,
) -> Result<Redirect, Status> {
    token_revoke(revocations, s, form).await
}
