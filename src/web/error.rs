//! JSON errors for the API and the well-known documents, in OAuth style:
//! `{"error": "...", "error_description": "..."}`.

use rocket::http::{ContentType, Status};
use rocket::response::{self, Responder};
use rocket::serde::json::serde_json::json;
use rocket::{Catcher, Request, Response};

/// An API error response.
#[derive(Debug)]
pub struct ApiError {
    pub status: Status,
    pub error: &'static str,
    pub description: String,
}

impl ApiError {
    pub fn new(status: Status, error: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            description: description.into(),
        }
    }
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let body = json!({"error": self.error, "error_description": self.description}).to_string();
        Response::build()
            .status(self.status)
            .header(ContentType::JSON)
            .header(rocket::http::Header::new("Cache-Control", "no-store"))
            .sized_body(body.len(), std::io::Cursor::new(body))
            .ok()
    }
}

#[rocket::catch(default)]
fn default_catcher(status: Status, _: &Request<'_>) -> ApiError {
    let error = match status.code {
        400 | 422 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "request_too_large",
        415 => "unsupported_media_type",
        c if c >= 500 => "server_error",
        _ => "invalid_request",
    };
    let reason = status.reason().unwrap_or("error").to_lowercase();
    ApiError::new(status, error, reason)
}

pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![default_catcher]
}
