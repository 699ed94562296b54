//! private_key_jwt (RFC 7523 §2.2, OIDC Core §9): a client with public keys instead of a
//! secret authenticates with a `client_assertion` it signs. The keys are the client's own
//! JWKS held here, or fetched from its `jwks_uri` (fetched again when an assertion names a
//! key the copy lacks, so the client rotates its keys without keyturn's help). Each
//! assertion's `jti` is accepted once across the installation (the replay cache).

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use super::clients::{enabled, AuthenticatedClient, Clients};
use crate::assertion::{self, AssertionError, Rules, Verified, LEEWAY};
use crate::clock::Instant;
use crate::error::Result;
use crate::remote_keys::{RemoteKeySets, Want};
use crate::store;

/// The furthest in the future an assertion's `exp` may be. authlib signs them for an hour by
/// default; openid-client for a minute.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// The type of a client assertion (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl Clients {
    /// The enabled client that signed `assertion`, or `None` (one answer for every failure;
    /// the reason goes to the log, never the assertion). `client_id`, when the request named
    /// one, must be the assertion's issuer.
    pub async fn authenticate_assertion(
        &self,
        client_id: Option<&str>,
        assertion: &str,
    ) -> Result<Option<AuthenticatedClient>> {
        let Some((issuer, _)) = assertion::claimed_issuer(assertion) else {
            tracing::info!("client assertion refused: not a JWT with an iss claim");
            return Ok(None);
        };
        if issuer.len() > 128 || client_id.is_some_and(|id| id != issuer) {
            tracing::info!("client assertion refused: its iss is not the client_id sent with it");
            return Ok(None);
        }
        let Some(row) = self.client_row(&issuer).await? else {
            tracing::info!(client_id = %issuer, "client assertion refused: no such client");
            return Ok(None);
        };
        let Some(client) = enabled(&row) else {
            tracing::info!(client_id = %issuer, "client assertion refused: the client is disabled");
            return Ok(None);
        };
        let rules = Rules {
            issuer: &issuer,
            subject: Some(&issuer),
            audiences: &self.assertion_audiences,
            max_lifetime: MAX_ASSERTION_LIFETIME,
            require_jti: true,
        };
        let now = self.clock.now();
        let verified = match (&row.jwks, &row.jwks_uri) {
            (Some(inline), _) => {
                let keys: JwkSet = serde_json::from_str(inline).map_err(|e| {
                    crate::error::Error::Store(store::StoreError::Corrupt(format!("client {issuer}'s jwks: {e}")))
                })?;
                assertion::verify(assertion, &keys, &rules, now)
            }
            (None, Some(url)) => match verify_published(&self.remote_keys, url, assertion, &rules, now).await {
                Ok(answer) => answer,
                Err(why) => {
                    tracing::warn!(client_id = %issuer, "client assertion refused: {why}");
                    return Ok(None);
                }
            },
            (None, None) => {
                tracing::info!(client_id = %issuer, "client assertion refused: the client authenticates with a secret");
                return Ok(None);
            }
        };
        let verified = match verified {
            Ok(v) => v,
            Err(why) => {
                tracing::info!(client_id = %issuer, "client assertion refused: {why}");
                return Ok(None);
            }
        };
        // Remembered until it could no longer be accepted anyway.
        let key = format!("client_assertion:{issuer}");
        let jti = verified.jti.unwrap_or_default();
        let first = self.store.first_use(&key, &jti, verified.expires_at + LEEWAY).await?;
        if !first {
            tracing::info!(client_id = %issuer, "client assertion refused: its jti was used before");
            return Ok(None);
        }
        Ok(Some(client))
    }
}

/// Checks `assertion` against the key set published at `url`, fetching the set again once
/// when the copy lacks the key the assertion names (its publisher may have rotated its keys
/// since); `Err` when the set cannot be had.
pub(super) async fn verify_published(
    remote: &RemoteKeySets,
    url: &str,
    assertion: &str,
    rules: &Rules<'_>,
    now: Instant,
) -> std::result::Result<std::result::Result<Verified, AssertionError>, String> {
    let keys = remote.get(url, Want::Fresh).await?;
    match assertion::verify(assertion, &keys, rules, now) {
        Err(AssertionError::UnknownKey) => {
            let keys = remote.get(url, Want::Newer).await?;
            Ok(assertion::verify(assertion, &keys, rules, now))
        }
        answer => Ok(answer),
    }
}
