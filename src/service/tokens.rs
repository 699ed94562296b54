//! Token issuance: every access token is signed by the active key of its algorithm, carries
//! `kid` and a unique `jti`, expires before its key can leave the JWKS, and is recorded
//! (never the token itself) in the same moment it is returned.

use std::time::Duration;

use serde::Serialize;

use super::{random_id, Actor, Keyturn};
use crate::clock::to_unix;
use crate::error::{Error, Result};
use crate::keys::{Algorithm, KeyState};
use crate::store::{self, StoreError};

/// The longest subject, audience, client id or scope accepted.
pub const MAX_VALUE_LEN: usize = 255;

/// The default token lifetime when a request names none (capped by `max_token_ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

/// A request for an access token.
#[derive(Clone, Debug, Default)]
pub struct IssueRequest {
    pub sub: String,
    pub aud: Vec<String>,
    pub ttl: Option<Duration>,
    pub alg: Option<Algorithm>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
}

/// An issued access token.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub kid: String,
    pub jti: String,
}

/// The claims of an access token (RFC 9068).
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: serde_json::Value,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

fn check_value(name: &str, v: &str, problems: &mut Vec<String>) {
    if v.trim().is_empty() {
        problems.push(format!("{name} must not be empty"));
    } else if v.chars().count() > MAX_VALUE_LEN {
        problems.push(format!("{name} is longer than {MAX_VALUE_LEN} characters"));
    } else if v.chars().any(char::is_control) {
        problems.push(format!("{name} must not contain control characters"));
    }
}

impl Keyturn {
    /// Signs and records an access token.
    pub fn issue_token(&self, req: &IssueRequest, actor: &Actor) -> Result<IssuedToken> {
        let policy = self.policy();
        let mut problems = Vec::new();
        check_value("sub", &req.sub, &mut problems);
        if req.aud.is_empty() {
            problems.push("aud must name at least one audience".into());
        }
        for a in &req.aud {
            check_value("aud", a, &mut problems);
        }
        if let Some(s) = &req.scope {
            check_value("scope", s, &mut problems);
        }
        let ttl = req.ttl.unwrap_or(DEFAULT_TTL.min(policy.max_token_ttl));
        if ttl.is_zero() {
            problems.push("ttl must be longer than 0s".into());
        }
        if ttl > policy.max_token_ttl {
            problems.push(format!(
                "ttl ({}) is longer than the maximum token lifetime ({})",
                crate::config::format_duration(ttl),
                crate::config::format_duration(policy.max_token_ttl)
            ));
        }
        let alg = match self.resolve_alg(req.alg) {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        let Some(alg) = alg.filter(|_| problems.is_empty()) else {
            return Err(Error::Invalid(problems));
        };
        let client_id = req.client_id.clone().unwrap_or_else(|| actor.name.clone());

        // A rotation can commit between signing and recording; then sign again with the new
        // active key, so no token is ever recorded under a key that no longer signs.
        for _ in 0..3 {
            let published = self.published();
            let signer = published
                .signer(alg)
                .ok_or(Error::NoActiveKey(alg))?
                .clone();
            let key = published.key(signer.kid()).ok_or(Error::NoActiveKey(alg))?;
            let now = self.clock.now();
            let exp = (now + ttl).min(policy.exp_limit(key));
            if exp <= now {
                return Err(Error::NoActiveKey(alg));
            }
            let jti = random_id(18);
            let aud = if req.aud.len() == 1 {
                serde_json::json!(req.aud[0])
            } else {
                serde_json::json!(req.aud)
            };
            let claims = Claims {
                iss: &self.config.issuer,
                sub: &req.sub,
                aud,
                iat: to_unix(now),
                nbf: to_unix(now),
                exp: to_unix(exp),
                jti: &jti,
                client_id: &client_id,
                scope: req.scope.as_deref(),
            };
            let token = signer
                .sign("at+jwt", &claims)
                .map_err(|e| Error::Sign(e.to_string()))?;
            let record = store::tokens::TokenRecord {
                jti: jti.clone(),
                sub: req.sub.clone(),
                kid: signer.kid().clone(),
                aud: req.aud.clone(),
                client_id: Some(client_id.clone()),
                scope: req.scope.clone(),
                iat: now,
                exp,
                issued_by: actor.name.clone(),
            };
            let recorded = self.store.write_blocking(|tx| {
                if store::keys::state(tx, &record.kid)? != Some(KeyState::Active) {
                    return Err(StoreError::Conflict(format!(
                        "key {} stopped signing",
                        record.kid
                    )));
                }
                store::tokens::insert(tx, &record)
            });
            match recorded {
                Ok(()) => {
                    return Ok(IssuedToken {
                        access_token: token,
                        token_type: "Bearer",
                        expires_in: (exp - now).whole_seconds().max(0) as u64,
                        kid: signer.kid().to_string(),
                        jti,
                    })
                }
                Err(StoreError::Conflict(_)) => self.reload()?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::NoActiveKey(alg))
    }
}
