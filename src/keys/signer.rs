//! Signing claims with a loaded private key.
//!
//! The header carries only `alg`, `kid` and `typ`; the algorithm is the key's own, never a
//! caller's choice.

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use super::generate::PrivateKey;
use super::{Algorithm, KeyId};

/// A private key ready to sign. The jsonwebtoken key inside zeroizes itself on drop.
pub struct SigningKey {
    kid: KeyId,
    alg: Algorithm,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {}, <redacted>)", self.alg, self.kid)
    }
}

impl SigningKey {
    pub fn new(kid: KeyId, alg: Algorithm, private: &PrivateKey) -> Self {
        SigningKey { kid, alg, key: private.encoding_key() }
    }

    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.alg.jwt());
        header.kid = Some(self.kid.as_str().to_owned());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}
