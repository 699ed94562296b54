//! Key custody: where private keys are made, kept and used to sign.
//!
//! One custodian today, software: a key pair is generated in this process (on the blocking
//! pool), its private half sealed under the key-encryption key and kept in the key's row,
//! opened into memory to sign (`keys::signer::SigningKey`), and erased with the row's sealed
//! half when the key leaves the JWKS (the expiry or revocation transaction).
//!
//! Other custodians plug in here, as other arms of [`Custodian`]: a PKCS#11 token, a cloud
//! KMS or Vault's transit engine would make the key pair inside themselves and return its
//! public half (`make`), sign with the key they hold under its kid (`signer`: keyturn builds
//! the JWS itself, so only the signature would come from the custodian), check at start-up
//! that every live key they hold is there (`check`), and destroy a key when it expires. The
//! database records each key's custody (`KeyRecord::custody`), so keys of two custodies can
//! serve side by side while an installation moves from one to the other.

use std::sync::Arc;

use super::kek;
use crate::clock::Instant;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::generate;
use crate::keys::lifecycle::Policy;
use crate::keys::sealed::Kek;
use crate::keys::signer::SigningKey;
use crate::keys::{Algorithm, Custody, KeyRecord, KeyState};
use crate::store::keys::KeyRow;

/// Makes, opens and checks keys for the custody the settings choose.
pub(super) struct Custodian {
    config: Arc<Config>,
    /// Seals software keys (and opens them).
    kek: Arc<Kek>,
}

/// A key made by a custodian, ready to insert: its record, and what the row keeps of its
/// private half (sealed bytes for a software key).
pub(super) type Made = (KeyRecord, Vec<u8>);

impl Custodian {
    pub(super) fn new(config: Arc<Config>, kek: Arc<Kek>) -> Custodian {
        Custodian { config, kek }
    }

    /// Makes a key pair for `alg` in `state`, valid from `now` for the planned life.
    pub(super) async fn make(&self, alg: Algorithm, state: KeyState, now: Instant, policy: &Policy) -> Result<Made> {
        let not_after = now + policy.planned_life(now);
        // Key generation takes a core for a while (RSA most): it runs on the blocking pool.
        let (rsa_bits, issuer, skew) = (self.config.rsa_bits, self.config.issuer.clone(), policy.clock_skew);
        let new = tokio::task::spawn_blocking(move || generate::generate(alg, rsa_bits, &issuer, now, skew, not_after))
            .await
            .map_err(|e| Error::Sign(format!("key generation failed: {e}")))??;
        let sealed = self
            .kek
            .seal(new.kid.as_str(), new.private.der())
            .map_err(|e| Error::Kek { path: self.config.kek_file.clone(), reason: e.to_string() })?;
        let public_jwk = serde_json::to_string(&new.public).map_err(|e| Error::Sign(e.to_string()))?;
        let record = KeyRecord {
            kid: new.kid,
            alg,
            state,
            public_jwk,
            created_at: now,
            published_at: now,
            activated_at: (state == KeyState::Active).then_some(now),
            retired_at: None,
            expired_at: None,
            revoked_at: None,
            revoke_reason: None,
            not_after,
            custody: Custody::Software,
        };
        Ok((record, sealed))
    }

    /// The signer of a stored key that holds its private half.
    pub(super) fn signer(&self, row: &KeyRow) -> Result<SigningKey> {
        let record = &row.record;
        let sealed = row.sealed_private.as_deref().ok_or_else(|| Error::KeyDoesNotLoad {
            kid: record.kid.clone(),
            reason: "an active key has no private key".into(),
        })?;
        let private = kek::open_private(&self.kek, record, sealed)?;
        SigningKey::new(record.kid.clone(), record.alg, &private)
            .map_err(|e| Error::KeyDoesNotLoad { kid: record.kid.clone(), reason: e.to_string() })
    }

    /// Checks, before anything is written at start-up, that a published key's private half
    /// is there and is the key its record describes.
    pub(super) fn check(&self, row: &KeyRow) -> Result<()> {
        if let Some(sealed) = &row.sealed_private {
            kek::open_private(&self.kek, &row.record, sealed)?;
        }
        Ok(())
    }
}
