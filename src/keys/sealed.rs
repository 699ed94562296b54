//! AES-256-GCM sealing of private keys under the key-encryption key (KEK).
//!
//! The KEK lives in a file outside the database (DESIGN.md invariant 4). Each private key is
//! sealed with a fresh random nonce and the key's kid as associated data, so a ciphertext
//! moved into another key's row fails to open instead of signing under the wrong kid.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Sealed blobs start with this version byte so the format can change later.
const FORMAT_V1: u8 = 1;

/// What the keyed-digest key is derived with (see [`Kek::mac`]).
const MAC_KEY_LABEL: &[u8] = b"keyturn keyed digests v1";

/// Length of a key-encryption key in bytes.
pub const KEK_LEN: usize = 32;

/// The key-encryption key. Its bytes are never logged or shown; `Debug` prints nothing of them.
pub struct Kek {
    key: LessSafeKey,
    /// A key for keyed digests, derived from the KEK (never the KEK itself: one key, one use).
    mac_key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

/// Why sealing or opening failed. Deliberately carries no key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the key-encryption key must be exactly {KEK_LEN} bytes, found {0}")]
    BadKekLength(usize),
    #[error("sealed data is malformed (unknown format or truncated)")]
    Malformed,
    #[error("sealed data does not open under this key-encryption key and label (wrong key-encryption key, or data altered or moved)")]
    DoesNotOpen,
    #[error("the system random number generator failed")]
    Random,
}

impl Kek {
    /// Builds a KEK from its raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != KEK_LEN {
            return Err(SealError::BadKekLength(bytes.len()));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKekLength(bytes.len()))?;
        let derived =
            aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes), MAC_KEY_LABEL);
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, derived.as_ref());
        Ok(Kek { key: LessSafeKey::new(unbound), mac_key })
    }

    /// Fresh random KEK bytes, for a first start.
    pub fn generate_bytes() -> Result<Zeroizing<[u8; KEK_LEN]>, SealError> {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        SystemRandom::new().fill(bytes.as_mut()).map_err(|_| SealError::Random)?;
        Ok(bytes)
    }

    /// A keyed digest of `input` for `label`: the same on every process holding this KEK,
    /// unguessable without it.
    pub fn mac(&self, label: &str, input: &[u8]) -> [u8; 32] {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.mac_key);
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(input);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Seals `plaintext`, binding it to `label` (the kid, for private keys).
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        let sealed = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(label.as_bytes()),
            &mut body,
        );
        if sealed.is_err() {
            zeroize::Zeroize::zeroize(&mut body);
            return Err(SealError::DoesNotOpen);
        }
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a blob sealed under `label`. The plaintext is zeroized when dropped.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Malformed)?;
        if version != FORMAT_V1 || rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(label.as_bytes()), buf.as_mut_slice())
            .map_err(|_| SealError::DoesNotOpen)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> Kek {
        Kek::from_bytes(Kek::generate_bytes().expect("rng").as_ref()).expect("kek")
    }

    #[test]
    fn round_trip_and_binding() {
        let k = kek();
        let sealed = k.seal("kid-a", b"private").expect("seal");
        assert_eq!(k.open("kid-a", &sealed).expect("open").as_slice(), b"private");
        assert_eq!(k.open("kid-b", &sealed), Err(SealError::DoesNotOpen), "label binds");
        assert_eq!(kek().open("kid-a", &sealed), Err(SealError::DoesNotOpen), "other KEK");
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert!(k.open("kid-a", &flipped).is_err(), "flip at byte {i} must not open");
        }
        assert_eq!(k.open("kid-a", &sealed[..10]), Err(SealError::Malformed));
    }

    #[test]
    fn nonces_differ() {
        let k = kek();
        assert_ne!(k.seal("x", b"same").expect("seal"), k.seal("x", b"same").expect("seal"));
    }

    #[test]
    fn wrong_length_refused() {
        assert_eq!(Kek::from_bytes(&[0; 16]).err(), Some(SealError::BadKekLength(16)));
    }
}
