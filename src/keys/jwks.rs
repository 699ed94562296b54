//! The one function that serializes the JWKS, and the cached [`Document`] form in which it
//! (and the discovery documents) are served: bytes made once per key-set change, with a
//! strong ETag, so serving them reads no database and serializes nothing.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::generate::PublicJwk;

/// A document served from memory: its bytes and their strong ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub body: Arc<[u8]>,
    /// A strong entity tag, quotes included: `"<base64url of the first 18 bytes of SHA-256>"`.
    pub etag: Arc<str>,
}

impl Document {
    /// Wraps serialized bytes and computes their ETag.
    pub fn new(body: Vec<u8>) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..18]));
        Document { body: body.into(), etag: etag.into() }
    }

    /// Whether an `If-None-Match` header value matches this document. RFC 9110 §13.1.2: a
    /// list of entity tags or `*`, compared weakly (a `W/` prefix is ignored).
    pub fn matches_if_none_match(&self, header: &str) -> bool {
        header.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == &*self.etag)
    }
}

/// Serializes the published key set. Callers pass the keys already in publication order.
pub fn serialize(keys: &[&PublicJwk]) -> Document {
    #[derive(serde::Serialize)]
    struct Jwks<'a> {
        keys: &'a [&'a PublicJwk],
    }
    // Serializing plain strings and vectors cannot fail.
    let body = serde_json::to_vec(&Jwks { keys }).unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
    Document::new(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_strong_and_stable() {
        let a = Document::new(b"{\"keys\":[]}".to_vec());
        let b = Document::new(b"{\"keys\":[]}".to_vec());
        assert_eq!(a.etag, b.etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"') && !a.etag.starts_with("W/"));
        assert_ne!(a.etag, Document::new(b"{\"keys\":[1]}".to_vec()).etag);
    }

    #[test]
    fn if_none_match_forms() {
        let d = Document::new(b"x".to_vec());
        let tag = d.etag.to_string();
        assert!(d.matches_if_none_match(&tag));
        assert!(d.matches_if_none_match(&format!("W/{tag}")));
        assert!(d.matches_if_none_match(&format!("\"other\", {tag}")));
        assert!(d.matches_if_none_match("*"));
        assert!(!d.matches_if_none_match("\"other\""));
        assert!(!d.matches_if_none_match(""));
    }
}
