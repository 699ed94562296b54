//! Making key pairs with rcgen, deriving their public JWK, kid and certificate, and
//! re-checking all of that when a sealed key is loaded again.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::EncodingKey;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, RsaKeySize};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Algorithm, KeyId, RsaBits};
use crate::clock::Instant;

/// Why a key could not be made or loaded. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating a {0} key failed: {1}")]
    Generate(Algorithm, String),
    #[error("making the certificate for key {0} failed: {1}")]
    Certificate(KeyId, String),
    #[error("key {kid}: the private key is not a valid {alg} key")]
    InvalidPrivate { kid: KeyId, alg: Algorithm },
    #[error("key {kid}: the private key does not match the published public key (kid {derived} derived from it)")]
    Mismatch { kid: KeyId, derived: KeyId },
    #[error("key {0}: the stored public JWK is malformed: {1}")]
    BadPublic(KeyId, String),
}

/// A decrypted private key, in the DER form jsonwebtoken's `from_*_der` constructors take
/// (PKCS#8 v1 for EC and Ed25519, PKCS#1 for RSA). Zeroized when dropped; `Debug` hides it.
pub struct PrivateKey {
    alg: Algorithm,
    der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.alg)
    }
}

impl PrivateKey {
    /// Wraps decrypted bytes read back from the store.
    pub fn from_der(alg: Algorithm, der: Zeroizing<Vec<u8>>) -> Self {
        PrivateKey { alg, der }
    }

    /// The bytes to seal.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The jsonwebtoken signing key. `EncodingKey` zeroizes its copy on drop too.
    pub fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(&self.der),
            Algorithm::EdDSA => EncodingKey::from_ed_der(&self.der),
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_der(&self.der),
        }
    }

    /// The public half as published members, derived from the private key itself.
    fn public_parts(&self) -> Option<PublicParts> {
        let jwk = Jwk::from_encoding_key(&self.encoding_key(), self.alg.jwt()).ok()?;
        PublicParts::from_jwk(&jwk)
    }

    /// Checks that this private key is the one `public` describes: same public members,
    /// and `kid` is their thumbprint. Run on every load, so a row whose ciphertext was
    /// swapped or whose JWK was edited never signs.
    pub fn check_matches(&self, kid: &KeyId, public: &PublicJwk) -> Result<(), KeyError> {
        let derived = self.public_parts().ok_or(KeyError::InvalidPrivate { kid: kid.clone(), alg: self.alg })?;
        let derived_kid = derived.thumbprint();
        let stored = public.parts().map_err(|e| KeyError::BadPublic(kid.clone(), e))?;
        if derived != stored || &derived_kid != kid || public.kid != *kid.as_str() {
            return Err(KeyError::Mismatch { kid: kid.clone(), derived: derived_kid });
        }
        Ok(())
    }
}

/// The public members of a key, as they appear in its JWK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicParts {
    Ec { crv: &'static str, x: String, y: String },
    Rsa { n: String, e: String },
    Okp { crv: &'static str, x: String },
}

impl PublicParts {
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(p) => {
                let crv = match p.curve {
                    EllipticCurve::P256 => "P-256",
                    EllipticCurve::P384 => "P-384",
                    _ => return None,
                };
                Some(PublicParts::Ec { crv, x: p.x.clone(), y: p.y.clone() })
            }
            AlgorithmParameters::RSA(p) => Some(PublicParts::Rsa { n: p.n.clone(), e: p.e.clone() }),
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => Some(PublicParts::Okp { crv: "Ed25519", x: p.x.clone() }),
                _ => None,
            },
            _ => None,
        }
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order,
    /// without whitespace, base64url-encoded.
    pub fn thumbprint(&self) -> KeyId {
        let canonical = match self {
            PublicParts::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            PublicParts::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            PublicParts::Okp { crv, x } => format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#),
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        KeyId::new(URL_SAFE_NO_PAD.encode(digest.as_ref()))
    }
}

/// A published JWK: only public members, in a fixed order, so serialization is stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub e: Option<String>,
    /// The key's self-signed certificate; empty when the JWKS is served without (`jwks_x5c`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub x5c: Vec<String>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "String::is_empty", default)]
    pub x5t_s256: String,
}

impl PublicJwk {
    fn new(alg: Algorithm, kid: &KeyId, parts: &PublicParts, cert_der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        let mut jwk = PublicJwk {
            kty: String::new(),
            use_: "sig".into(),
            alg: alg.as_str().into(),
            kid: kid.as_str().into(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            x5c: vec![STANDARD.encode(cert_der)],
            x5t_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()),
        };
        match parts.clone() {
            PublicParts::Ec { crv, x, y } => {
                jwk.kty = "EC".into();
                (jwk.crv, jwk.x, jwk.y) = (Some(crv.into()), Some(x), Some(y));
            }
            PublicParts::Rsa { n, e } => {
                jwk.kty = "RSA".into();
                (jwk.n, jwk.e) = (Some(n), Some(e));
            }
            PublicParts::Okp { crv, x } => {
                jwk.kty = "OKP".into();
                (jwk.crv, jwk.x) = (Some(crv.into()), Some(x));
            }
        }
        jwk
    }

    /// Parses a stored JWK.
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// The public members, as a typed value.
    pub fn parts(&self) -> Result<PublicParts, String> {
        let need =
            |v: &Option<String>, name: &str| v.clone().ok_or_else(|| format!("{} JWK without '{name}'", self.kty));
        let curve = |v: &Option<String>| match v.as_deref() {
            Some("P-256") => Ok("P-256"),
            Some("P-384") => Ok("P-384"),
            Some("Ed25519") => Ok("Ed25519"),
            other => Err(format!("unsupported curve {other:?}")),
        };
        match self.kty.as_str() {
            "EC" => Ok(PublicParts::Ec { crv: curve(&self.crv)?, x: need(&self.x, "x")?, y: need(&self.y, "y")? }),
            "RSA" => Ok(PublicParts::Rsa { n: need(&self.n, "n")?, e: need(&self.e, "e")? }),
            "OKP" => Ok(PublicParts::Okp { crv: curve(&self.crv)?, x: need(&self.x, "x")? }),
            other => Err(format!("unsupported key type '{other}'")),
        }
    }
}

/// The JWK members that hold private or symmetric key material (RFC 7518 §6.2.2, §6.3.2,
/// §6.4.1): a published key, a DPoP proof's `jwk` and a client's registered keys have none.
pub const PRIVATE_JWK_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// A freshly made key: its kid, published JWK and private half.
#[derive(Debug)]
pub struct NewKey {
    pub kid: KeyId,
    pub public: PublicJwk,
    pub private: PrivateKey,
}

/// The 16-byte header of an Ed25519 PKCS#8 v1 (RFC 8410) private key; the 32-byte seed
/// follows. jsonwebtoken wants this form; rcgen writes v2, which adds the public key.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Generates a key for `alg`, with a self-signed certificate naming `issuer` as subject and
/// valid from `created` (less `skew`) until `not_after`.
pub fn generate(
    alg: Algorithm,
    rsa_bits: RsaBits,
    issuer: &str,
    created: Instant,
    skew: Duration,
    not_after: Instant,
) -> Result<NewKey, KeyError> {
    let gen_err = |e: rcgen::Error| KeyError::Generate(alg, e.to_string());
    let pair = match alg {
        Algorithm::ES256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?,
        Algorithm::ES384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(gen_err)?,
        Algorithm::EdDSA => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(gen_err)?,
        Algorithm::RS256 | Algorithm::PS256 => {
            let size = match rsa_bits {
                RsaBits::B2048 => RsaKeySize::_2048,
                RsaBits::B3072 => RsaKeySize::_3072,
                RsaBits::B4096 => RsaKeySize::_4096,
            };
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).map_err(gen_err)?
        }
    };
    let der = private_der(alg, &pair)?;
    let private = PrivateKey { alg, der };
    let parts =
        private.public_parts().ok_or_else(|| KeyError::Generate(alg, "could not derive the public key".into()))?;
    let kid = parts.thumbprint();
    let public = published(alg, &kid, &parts, &pair, issuer, created - skew, not_after)?;
    Ok(NewKey { kid, public, private })
}

/// The public JWK of a key, with its self-signed certificate (subject `issuer`, valid from
/// `not_before` until `not_after`) signed by `signer`: the key pair itself, wherever it lives.
pub fn published(
    alg: Algorithm,
    kid: &KeyId,
    parts: &PublicParts,
    signer: &impl rcgen::SigningKey,
    issuer: &str,
    not_before: Instant,
    not_after: Instant,
) -> Result<PublicJwk, KeyError> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| KeyError::Certificate(kid.clone(), e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, issuer);
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.self_signed(signer).map_err(|e| KeyError::Certificate(kid.clone(), e.to_string()))?;
    Ok(PublicJwk::new(alg, kid, parts, cert.der()))
}

/// The private key in the form `PrivateKey::encoding_key` takes.
fn private_der(alg: Algorithm, pair: &KeyPair) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => Ok(Zeroizing::new(pair.serialize_der())),
        Algorithm::EdDSA => {
            // rcgen's v2 document: 30 51 02 01 01 30 05 06 03 2b 65 70 04 22 04 20 <seed> ...
            let v2 = Zeroizing::new(pair.serialize_der());
            let seed = v2
                .get(16..48)
                .filter(|_| {
                    v2.get(2..16)
                        == Some(
                            &[0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20][..],
                        )
                })
                .ok_or_else(|| KeyError::Generate(alg, "unexpected Ed25519 PKCS#8 layout".into()))?;
            let mut v1 = Zeroizing::new(Vec::with_capacity(48));
            v1.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
            v1.extend_from_slice(seed);
            Ok(v1)
        }
        Algorithm::RS256 | Algorithm::PS256 => {
            // PKCS#8 → PKCS#1 through jsonwebtoken's PEM reader, which unwraps the inner key.
            let pem = Zeroizing::new(pair.serialize_pem());
            let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| KeyError::Generate(alg, e.to_string()))?;
            Ok(Zeroizing::new(key.as_bytes().to_vec()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn make(alg: Algorithm) -> NewKey {
        crate::keys::install_crypto_provider();
        let t = datetime!(2026-01-01 00:00:00 UTC);
        generate(
            alg,
            RsaBits::B2048,
            "https://issuer.example",
            t,
            Duration::from_secs(60),
            t + Duration::from_secs(86400),
        )
        .expect("generate")
    }

    #[test]
    fn every_algorithm_makes_a_consistent_key() {
        for alg in Algorithm::ALL {
            let k = make(alg);
            assert_eq!(k.public.alg, alg.as_str());
            assert_eq!(k.public.kid, k.kid.as_str());
            assert_eq!(k.public.parts().expect("parts").thumbprint(), k.kid);
            k.private.check_matches(&k.kid, &k.public).expect("matches");
            let json = serde_json::to_value(&k.public).expect("json");
            for private_member in PRIVATE_JWK_MEMBERS {
                assert!(json.get(private_member).is_none(), "{alg}: {private_member} leaked");
            }
        }
    }

    #[test]
    fn another_keys_private_half_is_a_mismatch() {
        let a = make(Algorithm::ES256);
        let b = make(Algorithm::ES256);
        assert!(matches!(b.private.check_matches(&a.kid, &a.public), Err(KeyError::Mismatch { .. })));
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // The RSA example of RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let parts = PublicParts::Rsa { n: n.into(), e: "AQAB".into() };
        assert_eq!(parts.thumbprint().as_str(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
