//! Signing claims with a loaded private key.
//!
//! The header carries only `alg`, `kid` and `typ`; the algorithm is the key's own, never a
//! caller's choice.
//!
//! The key pair is parsed once, when the key is loaded, and signs directly with aws-lc:
//! `jsonwebtoken::encode` would parse the PKCS#8 document again for every token, and for EC
//! and Ed25519 keys that parse recomputes the public point, which costs about as much as the
//! signature itself (docs/BENCHMARKS.md). Tokens are checked against jsonwebtoken's own
//! verification in the tests, and against jose and PyJWT in the interop test.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use super::generate::PrivateKey;
use super::{Algorithm, KeyId};

/// The typ of access tokens (RFC 9068), whose header is encoded once per key.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// A parsed key pair of one of keyturn's algorithms, or a key a PKCS#11 token holds.
enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn sig::RsaEncoding),
    Token(std::sync::Arc<super::pkcs11::Token>),
}

/// A private key ready to sign. aws-lc clears its key material when dropped.
pub struct SigningKey {
    kid: KeyId,
    alg: Algorithm,
    pair: Pair,
    /// The encoded header for [`ACCESS_TOKEN_TYP`], followed by a dot.
    access_header: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {}, <redacted>)", self.alg, self.kid)
    }
}

/// Why a private key could not be made ready to sign.
#[derive(Debug, thiserror::Error)]
#[error("the {alg} key cannot sign: {reason}")]
pub struct SignerError {
    alg: Algorithm,
    reason: String,
}

impl SigningKey {
    pub fn new(kid: KeyId, alg: Algorithm, private: &PrivateKey) -> Result<Self, SignerError> {
        let der = private.der();
        let fail = |reason: String| SignerError { alg, reason };
        let pair = match alg {
            Algorithm::ES256 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|e| fail(e.to_string()))?,
            ),
            Algorithm::ES384 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, der)
                    .map_err(|e| fail(e.to_string()))?,
            ),
            Algorithm::EdDSA => Pair::Ed25519(Ed25519KeyPair::from_pkcs8(der).map_err(|e| fail(e.to_string()))?),
            Algorithm::RS256 => {
                Pair::Rsa(RsaKeyPair::from_der(der).map_err(|e| fail(e.to_string()))?, &sig::RSA_PKCS1_SHA256)
            }
            Algorithm::PS256 => {
                Pair::Rsa(RsaKeyPair::from_der(der).map_err(|e| fail(e.to_string()))?, &sig::RSA_PSS_SHA256)
            }
        };
        let access_header = format!("{}.", encode_header(alg, &kid, ACCESS_TOKEN_TYP));
        Ok(SigningKey { kid, alg, pair, access_header })
    }

    /// A key the PKCS#11 `token` holds under `kid`: the token signs.
    pub fn in_token(kid: KeyId, alg: Algorithm, token: std::sync::Arc<super::pkcs11::Token>) -> Self {
        let access_header = format!("{}.", encode_header(alg, &kid, ACCESS_TOKEN_TYP));
        SigningKey { kid, alg, pair: Pair::Token(token), access_header }
    }

    /// Whether a signature takes long enough to leave the async threads: RSA (milliseconds)
    /// and any key in a token (a call into the module, which may wait on hardware).
    pub fn is_slow(&self) -> bool {
        self.alg.is_rsa() || matches!(self.pair, Pair::Token(_))
    }

    /// Whether a PKCS#11 token holds the key (its failures are the token's, not keyturn's).
    pub fn held_by_token(&self) -> bool {
        matches!(self.pair, Pair::Token(_))
    }

    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Signs `claims` as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, SignerError> {
        let claims = serde_json::to_vec(claims).map_err(|e| SignerError { alg: self.alg, reason: e.to_string() })?;
        let mut out = if typ == ACCESS_TOKEN_TYP {
            let mut s = String::with_capacity(self.access_header.len() + claims.len() * 4 / 3 + 140);
            s.push_str(&self.access_header);
            s
        } else {
            format!("{}.", encode_header(self.alg, &self.kid, typ))
        };
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        let signature = self.sign_bytes(out.as_bytes())?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
        Ok(out)
    }

    /// The raw JWS signature of `message` (the crypto alone, as the benchmark's reference).
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        let fail = |reason: &str| SignerError { alg: self.alg, reason: reason.to_owned() };
        match &self.pair {
            Pair::Ecdsa(pair) => {
                Ok(pair.sign(&SystemRandom::new(), message).map_err(|_| fail("signing failed"))?.as_ref().to_vec())
            }
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Pair::Rsa(pair, encoding) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), message, &mut signature)
                    .map_err(|_| fail("signing failed"))?;
                Ok(signature)
            }
            Pair::Token(token) => token
                .sign(&self.kid, self.alg, message)
                .map_err(|e| SignerError { alg: self.alg, reason: format!("the PKCS#11 token: {e}") }),
        }
    }
}

fn encode_header(alg: Algorithm, kid: &KeyId, typ: &str) -> String {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'a str,
        kid: &'a str,
        typ: &'a str,
    }
    let json = serde_json::to_vec(&Header { alg: alg.as_str(), kid: kid.as_str(), typ }).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate::generate;
    use crate::keys::RsaBits;
    use serde_json::{json, Value};

    /// Every algorithm's tokens verify with jsonwebtoken against the published key, and
    /// carry exactly the header keyturn promises.
    #[test]
    fn tokens_verify_with_jsonwebtoken() {
        crate::keys::install_crypto_provider();
        let now = crate::clock::from_unix(1_800_000_000);
        for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256] {
            let key = generate(
                alg,
                RsaBits::B2048,
                "http://t",
                now,
                std::time::Duration::from_secs(60),
                now + time::Duration::days(1),
            )
            .expect("key");
            let signer = SigningKey::new(key.kid.clone(), alg, &key.private).expect("signer");
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(serde_json::to_value(&key.public).expect("jwk")).expect("jwk");
            let dkey = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
            let mut v = jsonwebtoken::Validation::new(alg.jwt());
            v.validate_exp = false;
            v.required_spec_claims.clear();
            for typ in [ACCESS_TOKEN_TYP, "JWT"] {
                let token = signer.sign(typ, &json!({"sub": "a", "n": 1})).expect("sign");
                let data =
                    jsonwebtoken::decode::<Value>(&token, &dkey, &v).unwrap_or_else(|e| panic!("{alg} {typ}: {e}"));
                assert_eq!(data.claims["sub"], "a");
                assert_eq!(data.header.kid.as_deref(), Some(key.kid.as_str()));
                assert_eq!(data.header.typ.as_deref(), Some(typ));
                let header: Value = serde_json::from_slice(
                    &URL_SAFE_NO_PAD.decode(token.split('.').next().expect("header")).expect("b64"),
                )
                .expect("json");
                assert_eq!(header.as_object().expect("object").len(), 3, "{header}");
            }
            // A flipped signature bit is refused.
            let token = signer.sign(ACCESS_TOKEN_TYP, &json!({"sub": "a"})).expect("sign");
            let mut bytes = token.into_bytes();
            let last = bytes.len() - 3;
            bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).expect("utf8");
            assert!(jsonwebtoken::decode::<Value>(&tampered, &dkey, &v).is_err(), "{alg}");
        }
    }
}
