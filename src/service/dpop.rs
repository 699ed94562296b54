//! DPoP (RFC 9449) for the token endpoint and forward auth: a proof passes
//! [`crate::dpop::check`] and then the installation's one replay cache, so a proof is
//! accepted once by whichever node sees it first and by no other.

use std::time::Duration;

use super::Tokens;
use crate::dpop::{self, Expected, Proof};
use crate::error::{Error, Result};
use crate::store;

/// How far a proof's `iat` may be from now, either way; its `jti` is remembered this long
/// after its `iat`, past which the proof is refused as too old anyway.
pub const PROOF_WINDOW: Duration = Duration::from_secs(60);

impl Tokens {
    /// Checks a DPoP proof for the request `expected` describes and records its `jti`;
    /// `invalid_dpop_proof` when a check fails or the proof was used before, on any node.
    pub async fn accept_proof(&self, proof: &str, expected: &Expected<'_>) -> Result<Proof> {
        let now = self.clock.now();
        let checked =
            dpop::check(proof, expected, now, PROOF_WINDOW).map_err(|e| Error::InvalidDpopProof(e.to_string()))?;
        let (key, jti, until) = (checked.jkt.clone(), checked.jti.clone(), checked.iat + PROOF_WINDOW);
        let first = self
            .store
            .write(move |tx| Box::pin(async move { store::replay::first_use(tx, &key, &jti, until).await }))
            .await?;
        if !first {
            return Err(Error::InvalidDpopProof("invalid DPoP proof: its jti was used before".into()));
        }
        Ok(checked)
    }

    /// The URL of the token endpoint, as proofs for it name it (`htu`).
    pub fn token_endpoint(&self) -> String {
        super::documents::token_endpoint(&self.config)
    }
}
