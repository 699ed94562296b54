//! DPoP (RFC 9449) for the token endpoint and forward auth: a proof passes
//! [`crate::dpop::check`] and then the installation's one replay cache, so a proof is
//! accepted once by whichever node sees it first and by no other.

use std::time::Duration;

use super::Tokens;
use crate::dpop::{self, Expected, Proof};
use crate::error::{Error, Result};

/// How far a proof's `iat` may be from now, either way; its `jti` is remembered this long
/// after its `iat`, past which the proof is refused as too old anyway.
pub const PROOF_WINDOW: Duration = Duration::from_secs(60);

/// How long a server nonce is handed out; one is accepted for this long after, too.
pub const NONCE_PERIOD: Duration = Duration::from_secs(60);

fn nonce_period(now: crate::clock::Instant) -> i64 {
    crate::clock::to_unix(now).div_euclid(NONCE_PERIOD.as_secs() as i64)
}

impl Tokens {
    /// Checks a DPoP proof for the request `expected` describes and records its `jti`;
    /// `invalid_dpop_proof` when a check fails or the proof was used before, on any node.
    pub async fn accept_proof(&self, proof: &str, expected: &Expected<'_>) -> Result<Proof> {
        let checked = self.check_proof(proof, expected)?;
        self.spend_proof(&checked).await?;
        Ok(checked)
    }

    /// Every check of a DPoP proof but the replay cache's (a current nonce too, when nonces
    /// are on): for a request that has more to check before the proof is spent.
    pub fn check_proof(&self, proof: &str, expected: &Expected<'_>) -> Result<Proof> {
        let now = self.clock.now();
        let checked =
            dpop::check(proof, expected, now, PROOF_WINDOW).map_err(|e| Error::InvalidDpopProof(e.to_string()))?;
        // A proof without a current nonce is turned away before its jti is spent: the client
        // makes a new one with the nonce it is handed.
        if let Some(current) = self.dpop_nonce() {
            if !self.nonce_is_current(checked.nonce.as_deref()) {
                return Err(Error::UseDpopNonce { nonce: current });
            }
        }
        Ok(checked)
    }

    /// Records a checked proof's `jti` in the installation's replay cache; refused when any
    /// node recorded it before.
    pub async fn spend_proof(&self, checked: &Proof) -> Result<()> {
        let first = self.store.first_use(&checked.jkt, &checked.jti, checked.iat + PROOF_WINDOW).await?;
        if !first {
            return Err(Error::InvalidDpopProof("invalid DPoP proof: its jti was used before".into()));
        }
        Ok(())
    }

    /// The nonce proofs must carry now, when `use_dpop_nonce` is on: the same on every node
    /// (a MAC of the current minute under a key from the key-encryption key), so no node
    /// needs to store or share it.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.config.use_dpop_nonce.then(|| self.nonce_of(nonce_period(self.clock.now())))
    }

    /// Whether `nonce` is this period's or the last one's (one to two minutes old at most).
    fn nonce_is_current(&self, nonce: Option<&str>) -> bool {
        let Some(nonce) = nonce else { return false };
        let now = nonce_period(self.clock.now());
        [now, now - 1].iter().any(|p| self.nonce_of(*p).as_bytes() == nonce.as_bytes())
    }

    fn nonce_of(&self, period: i64) -> String {
        use base64::Engine as _;
        let mac = self.keys.mac("dpop-nonce", &period.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&mac[..18])
    }

    /// The URL of the token endpoint, as proofs for it name it (`htu`).
    pub fn token_endpoint(&self) -> String {
        super::documents::token_endpoint(&self.config)
    }
}
