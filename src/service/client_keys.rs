//! private_key_jwt (RFC 7523 §2.2, OIDC Core §9): a client with public keys instead of a
//! secret authenticates with a `client_assertion` it signs. The keys are the client's own
//! JWKS held here, or fetched from its `jwks_uri` (fetched again when an assertion names a
//! key the copy lacks, so the client rotates its keys without keyturn's help). Each
//! assertion's `jti` is accepted once across the installation (the replay cache).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use super::clients::{enabled, AuthenticatedClient, Clients};
use crate::assertion::{self, AssertionError, Rules, LEEWAY};
use crate::error::Result;
use crate::remote_keys::Want;
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
            (None, Some(url)) => {
                let first = self.published_keys(&issuer, url, Want::Fresh).await;
                match first.map(|keys| assertion::verify(assertion, &keys, &rules, now)) {
                    // The client may have rotated its keys since the copy was fetched.
                    Some(Err(AssertionError::UnknownKey)) => match self.published_keys(&issuer, url, Want::Newer).await
                    {
                        Some(keys) => assertion::verify(assertion, &keys, &rules, now),
                        None => return Ok(None),
                    },
                    Some(answer) => answer,
                    None => return Ok(None),
                }
            }
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

    /// The key set `client_id` publishes at `url`, or `None` (logged) when it cannot be had.
    async fn published_keys(&self, client_id: &str, url: &str, want: Want) -> Option<Arc<JwkSet>> {
        match self.remote_keys.get(url, want).await {
            Ok(keys) => Some(keys),
            Err(why) => {
                tracing::warn!(client_id, "client assertion refused: {why}");
                None
            }
        }
    }
}
