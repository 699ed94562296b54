//! JSON errors for the API, the OAuth endpoints and the well-known documents, in OAuth
//! style: `{"error": "...", "error_description": "..."}`.

use rocket::http::{ContentType, Header, Status};
use rocket::response::{self, Responder};
use rocket::serde::json::serde_json::json;
use rocket::{Catcher, Request, Response};

/// An API error response.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: Status,
    pub error: &'static str,
    pub description: String,
    /// The `WWW-Authenticate` challenge sent with a 401.
    pub challenge: &'static str,
    /// Seconds after which a retry may succeed (`Retry-After`, with a 503 or 429).
    pub retry_after: Option<u64>,
    /// A DPoP nonce for the client's next proof (`DPoP-Nonce`, RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

impl ApiError {
    pub fn new(status: Status, error: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            description: description.into(),
            challenge: "Bearer realm=\"keyturn\"",
            retry_after: None,
            dpop_nonce: None,
        }
    }

    /// RFC 6749 §5.2 `invalid_client`: 401 with a Basic challenge.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        ApiError {
            challenge: "Basic realm=\"keyturn\"",
            ..ApiError::new(Status::Unauthorized, "invalid_client", description)
        }
    }

    /// 429: this address failed authentication too often; it may try again in `secs`.
    pub fn throttled(secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                Status::TooManyRequests,
                "too_many_requests",
                format!("too many failed authentications from this address; retry in {secs} s"),
            )
        }
    }

    /// RFC 6749 §5.2 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        ApiError::new(Status::BadRequest, "invalid_request", description)
    }
}

impl From<crate::error::Error> for ApiError {
    /// Maps a domain error to a status. Server-side failures are logged here, once, with
    /// their cause; the client gets a generic description.
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        let text = e.to_string();
        match e {
            E::Invalid(_) | E::AlgorithmNotConfigured(_) => ApiError::invalid_request(text),
            E::NotFound(_) => ApiError::new(Status::NotFound, "not_found", text),
            E::Conflict(_) => ApiError::new(Status::Conflict, "conflict", text),
            E::Unauthorized(_) => ApiError::new(Status::Unauthorized, "unauthorized", text),
            E::InvalidGrant(_) => ApiError::new(Status::BadRequest, "invalid_grant", text),
            E::InvalidScope(_) => ApiError::new(Status::BadRequest, "invalid_scope", text),
            E::InvalidTarget(_) => ApiError::new(Status::BadRequest, "invalid_target", text),
            E::InvalidDpopProof(_) => ApiError::new(Status::BadRequest, "invalid_dpop_proof", text),
            E::UseDpopNonce { nonce } => {
                ApiError { dpop_nonce: Some(nonce), ..ApiError::new(Status::BadRequest, "use_dpop_nonce", text) }
            }
            E::NoActiveKey(_) => ApiError::new(Status::ServiceUnavailable, "temporarily_unavailable", text),
            E::Store(crate::error::StoreError::Unavailable(why)) => {
                // Nothing was answered: a token not answered was either never recorded or
                // recorded and never seen (harmless); a change the caller asked for may
                // have committed after the deadline, and asking again is safe.
                tracing::warn!("request refused, the database is unavailable: {why}");
                ApiError {
                    retry_after: Some(2),
                    ..ApiError::new(
                        Status::ServiceUnavailable,
                        "temporarily_unavailable",
                        "the database did not answer in time; retry shortly",
                    )
                }
            }
            E::Custody(why) => {
                // The token did not sign: nothing was recorded or answered; it may come back.
                tracing::warn!("request refused, the key custodian failed: {why}");
                ApiError {
                    retry_after: Some(2),
                    ..ApiError::new(
                        Status::ServiceUnavailable,
                        "temporarily_unavailable",
                        "the signing key's custodian is unavailable; nothing was changed, retry shortly",
                    )
                }
            }
            other => {
                tracing::error!("request failed: {other}");
                ApiError::new(Status::InternalServerError, "server_error", "internal error; see the server log")
            }
        }
    }
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let body = json!({"error": self.error, "error_description": self.description}).to_string();
        let mut res = Response::build();
        if self.status == Status::Unauthorized {
            res.header(Header::new("WWW-Authenticate", self.challenge));
        }
        if let Some(secs) = self.retry_after {
            res.header(Header::new("Retry-After", secs.to_string()));
        }
        if let Some(nonce) = self.dpop_nonce {
            res.header(Header::new("DPoP-Nonce", nonce));
        }
        res.status(self.status)
            .header(ContentType::JSON)
            .header(Header::new("Cache-Control", "no-store"))
            .header(Header::new("Pragma", "no-cache"))
            .sized_body(body.len(), std::io::Cursor::new(body))
            .ok()
    }
}

/// Set by a guard that refused a request: its whole answer, for the catcher.
pub struct GuardRefusal(pub Option<ApiError>);

#[rocket::catch(default)]
fn default_catcher(status: Status, req: &Request<'_>) -> ApiError {
    if let Some(refusal) = &req.local_cache(|| GuardRefusal(None)).0 {
        if refusal.status == status {
            return refusal.clone();
        }
    }
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
    let reason = match status.code {
        401 => "authentication required".to_owned(),
        400 => "the request is malformed (bad JSON, wrong content type or invalid encoding)".to_owned(),
        422 => "the request body does not have the expected fields and types".to_owned(),
        413 => format!("the request body is larger than {}", crate::web::BODY_LIMIT),
        415 => "the body must be application/json".to_owned(),
        _ => status.reason().unwrap_or("error").to_lowercase(),
    };
    ApiError::new(status, error, reason)
}

pub fn catchers() -> Vec<Catcher> {
    rocket::catchers![default_catcher]
}
