//! `/api/v1/issuers`: workload identity federation in the Admin API (admin keys only):
//! trusted issuers, and which of their subjects acts as which client.

use std::sync::Arc;

use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, post, routes, Route, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{Caller, JsonContent};
use super::error::ApiError;
use crate::service::federation::{Federation, NewIssuer};

pub fn routes() -> Vec<Route> {
    routes![list, trust, forget, map, unmap]
}

#[get("/api/v1/issuers")]
async fn list(federation: &State<Arc<Federation>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(json!({ "issuers": federation.list_issuers().await.map_err(ApiError::from)? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustBody {
    issuer: String,
    audience: String,
    /// Discovered from the issuer's metadata when not given.
    jwks_uri: Option<String>,
}

#[post("/api/v1/issuers", data = "<body>")]
async fn trust(
    federation: &State<Arc<Federation>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<TrustBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let body = body.into_inner();
    let new = NewIssuer { issuer: body.issuer, jwks_uri: body.jwks_uri, audience: body.audience };
    Ok(Json(json!(federation.trust_issuer(&new, &caller.actor()).await.map_err(ApiError::from)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerBody {
    issuer: String,
}

#[post("/api/v1/issuers/forget", data = "<body>")]
async fn forget(
    federation: &State<Arc<Federation>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<IssuerBody>,
) -> Result<Status, ApiError> {
    caller.require_admin()?;
    federation.forget_issuer(&body.issuer, &caller.actor()).await.map_err(ApiError::from)?;
    Ok(Status::NoContent)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectBody {
    issuer: String,
    subject: String,
    client_id: Option<String>,
}

#[post("/api/v1/issuers/subjects", data = "<body>")]
async fn map(
    federation: &State<Arc<Federation>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<SubjectBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let client_id = body.client_id.as_deref().ok_or_else(|| ApiError::invalid_request("client_id is required"))?;
    let view = federation.map_subject(&body.issuer, &body.subject, client_id, &caller.actor()).await;
    Ok(Json(json!(view.map_err(ApiError::from)?)))
}

#[post("/api/v1/issuers/subjects/forget", data = "<body>")]
async fn unmap(
    federation: &State<Arc<Federation>>,
    caller: Caller,
    _json: JsonContent,
    body: Json<SubjectBody>,
) -> Result<Status, ApiError> {
    caller.require_admin()?;
    federation.unmap_subject(&body.issuer, &body.subject, &caller.actor()).await.map_err(ApiError::from)?;
    Ok(Status::NoContent)
}
