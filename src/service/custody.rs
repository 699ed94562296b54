//! Key custody: where private keys are made, kept and used to sign.
//!
//! Software custody: a key pair is generated in this process (on the blocking pool), its
//! private half sealed under the key-encryption key and kept in the key's row, opened into
//! memory to sign (`keys::signer::SigningKey`), and erased with the row's sealed half when
//! the key leaves the JWKS (the expiry or revocation transaction).
//!
//! PKCS#11 custody (`key_custody = "pkcs11"`): the key pair is generated inside the token
//! (`keys::pkcs11`), which certifies its public half and signs; the row keeps no private
//! half. The database records each key's custody (`KeyRecord::custody`), so software keys
//! serve out their lives beside the token's after an installation moves to one.
//!
//! Other custodians would plug in here the same way: a cloud KMS or Vault's transit engine
//! makes the key pair inside itself and returns its public half (`make`), signs with the key
//! it holds under its kid (`signer`: keyturn builds the JWS itself, only the signature comes
//! from the custodian), says at start-up whether every live key it holds is there (`check`),
//! and destroys a key when it expires.

use std::sync::Arc;

use super::kek;
use crate::clock::Instant;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::generate;
use crate::keys::lifecycle::Policy;
use crate::keys::pkcs11::{CertSigner, Token};
use crate::keys::sealed::Kek;
use crate::keys::signer::SigningKey;
use crate::keys::{Algorithm, Custody, KeyRecord, KeyState};
use crate::store::keys::KeyRow;

/// Makes, opens and checks keys for the custody the settings choose.
pub(super) struct Custodian {
    config: Arc<Config>,
    /// Seals software keys (and opens them).
    kek: Arc<Kek>,
    /// The token, when the settings name one: new keys are made in it.
    token: Option<Arc<Token>>,
}

/// A key made by a custodian, ready to insert: its record, and what the row keeps of its
/// private half (sealed bytes for a software key).
pub(super) type Made = (KeyRecord, Vec<u8>);

impl Custodian {
    pub(super) fn new(config: Arc<Config>, kek: Arc<Kek>, token: Option<Arc<Token>>) -> Custodian {
        Custodian { config, kek, token }
    }

    /// Opens the token the settings name, if any, and checks it can do every configured
    /// algorithm: each refusal names its problem, before anything is written.
    pub(super) async fn open_token(config: &Config) -> Result<Option<Arc<Token>>> {
        let (Custody::Pkcs11, Some(module), Some(label), Some(pin)) = (
            config.key_custody,
            config.pkcs11_module.clone(),
            config.pkcs11_token_label.clone(),
            config.pkcs11_pin_file.clone(),
        ) else {
            return Ok(None);
        };
        let algorithms = config.algorithms.clone();
        let token = tokio::task::spawn_blocking(move || {
            let token = Token::open(&module, &label, &pin)?;
            for alg in algorithms {
                token.supports(alg)?;
            }
            Ok::<_, crate::keys::pkcs11::TokenError>(token)
        })
        .await
        .map_err(|e| Error::Custody(e.to_string()))?
        .map_err(|e| Error::Custody(e.to_string()))?;
        Ok(Some(Arc::new(token)))
    }

    /// The token, when keys are made in one.
    fn token(&self, kid: &crate::keys::KeyId) -> Result<&Arc<Token>> {
        self.token.as_ref().ok_or_else(|| Error::KeyDoesNotLoad {
            kid: kid.clone(),
            reason: "it is held by a PKCS#11 token, and no token is configured (key_custody, pkcs11_module, pkcs11_token_label, pkcs11_pin_file)".into(),
        })
    }

    /// Makes a key pair for `alg` in `state`, valid from `now` for the planned life.
    pub(super) async fn make(&self, alg: Algorithm, state: KeyState, now: Instant, policy: &Policy) -> Result<Made> {
        let not_after = now + policy.planned_life(now);
        if let Some(token) = &self.token {
            return self.make_in_token(token.clone(), alg, state, now, not_after, policy.clock_skew).await;
        }
        // Key generation takes a core for a while (RSA most): it runs on the blocking pool.
        let (rsa_bits, issuer, skew) = (self.config.rsa_bits, self.config.issuer.clone(), policy.clock_skew);
        let new = tokio::task::spawn_blocking(move || generate::generate(alg, rsa_bits, &issuer, now, skew, not_after))
            .await
            .map_err(|e| Error::Sign(format!("key generation failed: {e}")))??;
        let sealed = self
            .kek
            .seal(new.kid.as_str(), new.private.der())
            .map_err(|e| Error::Kek { path: self.config.kek_file.clone(), reason: e.to_string() })?;
        let record = new_record(new.kid, alg, state, &new.public, now, not_after, Custody::Software)?;
        Ok((record, sealed))
    }

    /// A key pair made inside the token, its certificate signed there too.
    async fn make_in_token(
        &self,
        token: Arc<Token>,
        alg: Algorithm,
        state: KeyState,
        now: Instant,
        not_after: Instant,
        skew: std::time::Duration,
    ) -> Result<Made> {
        let (rsa_bits, issuer) = (self.config.rsa_bits, self.config.issuer.clone());
        let (kid, public) = tokio::task::spawn_blocking(move || {
            let (kid, parts) = token.generate(alg, rsa_bits).map_err(|e| Error::Custody(e.to_string()))?;
            let signer = CertSigner::new(&token, &kid, alg, &parts).map_err(|e| Error::Custody(e.to_string()))?;
            let public = generate::published(alg, &kid, &parts, &signer, &issuer, now - skew, not_after)
                .map_err(|e| Error::Custody(e.to_string()))?;
            Ok::<_, Error>((kid, public))
        })
        .await
        .map_err(|e| Error::Custody(format!("key generation failed: {e}")))??;
        Ok((new_record(kid, alg, state, &public, now, not_after, Custody::Pkcs11)?, Vec::new()))
    }

    /// The signer of a stored key that holds its private half.
    pub(super) fn signer(&self, row: &KeyRow) -> Result<SigningKey> {
        let record = &row.record;
        if record.custody == Custody::Pkcs11 {
            let token = self.token(&record.kid)?;
            token.check(&record.kid).map_err(|e| Error::Custody(e.to_string()))?;
            return Ok(SigningKey::in_token(record.kid.clone(), record.alg, token.clone()));
        }
        let sealed = row.sealed_private.as_deref().ok_or_else(|| Error::KeyDoesNotLoad {
            kid: record.kid.clone(),
            reason: "an active key has no private key".into(),
        })?;
        let private = kek::open_private(&self.kek, record, sealed)?;
        SigningKey::new(record.kid.clone(), record.alg, &private)
            .map_err(|e| Error::KeyDoesNotLoad { kid: record.kid.clone(), reason: e.to_string() })
    }

    /// Destroys what the token holds of `kid`, a key that has ended (expired or revoked) and
    /// whose row no longer holds anything; returns whether the token held it. Nothing for a
    /// software key: its sealed half went with the transaction that ended it.
    pub(super) async fn destroy(&self, kid: &crate::keys::KeyId) -> Result<bool> {
        let Some(token) = self.token.clone() else { return Ok(false) };
        let kid = kid.clone();
        let gone = tokio::task::spawn_blocking(move || token.destroy(&kid))
            .await
            .map_err(|e| Error::Custody(e.to_string()))?
            .map_err(|e| Error::Custody(e.to_string()))?;
        Ok(gone > 0)
    }

    /// The kids of the private keys the token holds (none without a token).
    pub(super) async fn held(&self) -> Result<Vec<crate::keys::KeyId>> {
        let Some(token) = self.token.clone() else { return Ok(Vec::new()) };
        let labels = tokio::task::spawn_blocking(move || token.held())
            .await
            .map_err(|e| Error::Custody(e.to_string()))?
            .map_err(|e| Error::Custody(e.to_string()))?;
        Ok(labels.into_iter().map(crate::keys::KeyId::new).collect())
    }

    /// Whether the token still holds `kid`, usable for signing (readiness).
    pub(super) async fn usable(&self, kid: &crate::keys::KeyId) -> Result<()> {
        let token = self.token(kid)?.clone();
        let kid = kid.clone();
        tokio::task::spawn_blocking(move || token.check(&kid))
            .await
            .map_err(|e| Error::Custody(e.to_string()))?
            .map_err(|e| Error::Custody(e.to_string()))
    }

    /// Checks, before anything is written at start-up, that a published key's private half
    /// is there and is the key its record describes.
    pub(super) fn check(&self, row: &KeyRow) -> Result<()> {
        if row.record.custody == Custody::Pkcs11 {
            let kid = &row.record.kid;
            return self
                .token(kid)?
                .check(kid)
                .map_err(|e| Error::KeyDoesNotLoad { kid: kid.clone(), reason: e.to_string() });
        }
        if let Some(sealed) = &row.sealed_private {
            kek::open_private(&self.kek, &row.record, sealed)?;
        }
        Ok(())
    }
}

/// The record of a key made at `now` in `state`, whoever holds its private half.
fn new_record(
    kid: crate::keys::KeyId,
    alg: Algorithm,
    state: KeyState,
    public: &generate::PublicJwk,
    now: Instant,
    not_after: Instant,
    custody: Custody,
) -> Result<KeyRecord> {
    Ok(KeyRecord {
        kid,
        alg,
        state,
        public_jwk: serde_json::to_string(public).map_err(|e| Error::Sign(e.to_string()))?,
        created_at: now,
        published_at: now,
        activated_at: (state == KeyState::Active).then_some(now),
        retired_at: None,
        expired_at: None,
        revoked_at: None,
        revoke_reason: None,
        not_after,
        custody,
    })
}
