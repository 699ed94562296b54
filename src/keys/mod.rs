//! Signing keys: what they are, how they are made, sealed, published and used.
//!
//! Nothing here knows HTTP, HTML or SQL. The store persists [`KeyRecord`]s; the service
//! decides when a key is made or changes state; this module owns the material itself.

pub mod generate;
pub mod jwks;
pub mod lifecycle;
pub mod pkcs11;
pub mod sealed;
pub mod signer;

use std::fmt;
use std::str::FromStr;
use std::sync::Once;

use serde::{Deserialize, Serialize};

use crate::clock::Instant;

/// Installs aws-lc-rs as jsonwebtoken's crypto provider, once per process.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed, which is just as good.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// A JWS algorithm keyturn can sign with. Each configured algorithm has its own chain of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algorithm {
    ES256,
    ES384,
    EdDSA,
    RS256,
    PS256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] =
        [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256];

    /// The name used in JWS headers, JWKs and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, Algorithm::RS256 | Algorithm::PS256)
    }

    /// The matching jsonwebtoken algorithm.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an algorithm name was refused; the message lists what is supported.
#[derive(Debug, thiserror::Error)]
#[error("unknown algorithm '{0}': supported are ES256, ES384, EdDSA, RS256, PS256")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Names match case-insensitively (`eddsa` is EdDSA); symmetric and `none` algorithms
    /// are not signing algorithms keyturn offers, so they are unknown here.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownAlgorithm(name.to_owned()))
    }
}

/// Size of RSA keys for RS256 and PS256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RsaBits {
    B2048,
    B3072,
    B4096,
}

impl RsaBits {
    pub fn bits(self) -> u32 {
        match self {
            RsaBits::B2048 => 2048,
            RsaBits::B3072 => 3072,
            RsaBits::B4096 => 4096,
        }
    }
}

impl TryFrom<u32> for RsaBits {
    type Error = String;
    fn try_from(bits: u32) -> Result<Self, String> {
        match bits {
            2048 => Ok(RsaBits::B2048),
            3072 => Ok(RsaBits::B3072),
            4096 => Ok(RsaBits::B4096),
            other => Err(format!("RSA key size {other} bits is not supported: use 2048, 3072 or 4096 (2048–4096)")),
        }
    }
}

/// A key id: the RFC 7638 JWK thumbprint of the public key (base64url SHA-256), so it is
/// stable across restarts and anyone holding the JWK can recompute it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Wraps a kid read from storage or a request. No validation beyond shape: a kid that
    /// names no key simply finds nothing.
    pub fn new(s: impl Into<String>) -> Self {
        KeyId(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a key is in its life. A key only ever moves forward (DESIGN.md, key lifecycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing: verifiers learn it before any token uses it.
    Pending,
    /// The one key of its algorithm that signs new tokens.
    Active,
    /// Signs nothing; published until the tokens it signed have expired.
    Retired,
    /// No longer published; private key destroyed.
    Expired,
    /// Compromised: never published or used again; private key destroyed.
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }

    /// Whether keys in this state appear in the JWKS.
    pub fn is_published(self) -> bool {
        matches!(self, KeyState::Pending | KeyState::Active | KeyState::Retired)
    }

    /// Whether keys in this state still hold their (sealed) private key. Retired keys keep
    /// it only until they expire; they never sign again, but keeping the ciphertext until
    /// expiry costs nothing and erasing it is part of the expiry transaction.
    pub fn holds_private_key(self) -> bool {
        self.is_published()
    }
}

impl FromStr for KeyState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(KeyState::Pending),
            "active" => Ok(KeyState::Active),
            "retired" => Ok(KeyState::Retired),
            "expired" => Ok(KeyState::Expired),
            "revoked" => Ok(KeyState::Revoked),
            other => Err(format!("unknown key state '{other}'")),
        }
    }
}

/// Where a key's private half lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Custody {
    /// Made in this process and kept in the database, sealed under the key-encryption key;
    /// opened into memory to sign.
    Software,
    /// Made inside a PKCS#11 token and never leaving it; the token signs.
    Pkcs11,
}

impl Custody {
    pub fn as_str(self) -> &'static str {
        match self {
            Custody::Software => "software",
            Custody::Pkcs11 => "pkcs11",
        }
    }
}

impl FromStr for Custody {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "software" => Ok(Custody::Software),
            "pkcs11" => Ok(Custody::Pkcs11),
            other => Err(format!("'{other}' is not a key custody: use software or pkcs11")),
        }
    }
}

/// Everything keyturn records about a key except its private half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: KeyId,
    pub alg: Algorithm,
    pub state: KeyState,
    /// The public JWK as published (with `x5c` and `x5t#S256`), serialized once at creation.
    pub public_jwk: String,
    pub created_at: Instant,
    /// When the key first appeared in the JWKS (the same transaction that created it).
    pub published_at: Instant,
    pub activated_at: Option<Instant>,
    pub retired_at: Option<Instant>,
    pub expired_at: Option<Instant>,
    pub revoked_at: Option<Instant>,
    pub revoke_reason: Option<String>,
    /// End of the self-signed certificate's validity: the longest life planned for the key.
    pub not_after: Instant,
    /// Where its private half lives.
    pub custody: Custody,
}
