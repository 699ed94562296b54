//! The `Authorization` header, read in one place. RFC 9110 §11.6.2 and §11.1: the scheme is
//! a case-insensitive token, then one or more spaces, then the credentials. Every endpoint
//! that takes a credential (the Admin API, the OAuth endpoints, forward auth) reads the
//! header through [`Authorization::parse`], so `bearer …` works wherever `Bearer …` does.

/// The credentials of an `Authorization` header, by scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorization<'a> {
    /// `Bearer <token>`: an API key or an access token.
    Bearer(&'a str),
    /// `Basic <base64>`: a client's id and secret, still encoded.
    Basic(&'a str),
    /// Another scheme, or a scheme without credentials.
    Other,
}

impl<'a> Authorization<'a> {
    /// Parses a header value. Surrounding white space is ignored; a known scheme with
    /// nothing after it is [`Authorization::Other`].
    pub fn parse(header: &'a str) -> Authorization<'a> {
        let Some((scheme, rest)) = header.trim().split_once([' ', '\t']) else {
            return Authorization::Other;
        };
        let credentials = rest.trim();
        if credentials.is_empty() {
            Authorization::Other
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Authorization::Bearer(credentials)
        } else if scheme.eq_ignore_ascii_case("basic") {
            Authorization::Basic(credentials)
        } else {
            Authorization::Other
        }
    }

    /// The bearer token of a header, if it has one.
    pub fn bearer(header: Option<&'a str>) -> Option<&'a str> {
        match Authorization::parse(header?) {
            Authorization::Bearer(token) => Some(token),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Authorization::{self, Basic, Bearer, Other};

    #[test]
    fn the_scheme_is_case_insensitive_and_the_credentials_are_trimmed() {
        let table = [
            ("Bearer abc", Bearer("abc")),
            ("bearer abc", Bearer("abc")),
            ("BEARER   abc  ", Bearer("abc")),
            ("  Bearer\tabc", Bearer("abc")),
            ("Basic dXNlcjpwYXNz", Basic("dXNlcjpwYXNz")),
            ("bAsIc dXNlcjpwYXNz", Basic("dXNlcjpwYXNz")),
            ("Bearer", Other),
            ("Bearer    ", Other),
            ("Bearerabc", Other),
            ("Digest abc", Other),
            ("", Other),
        ];
        for (header, expected) in table {
            assert_eq!(Authorization::parse(header), expected, "{header:?}");
        }
        assert_eq!(Authorization::bearer(Some("bearer t")), Some("t"));
        assert_eq!(Authorization::bearer(Some("Basic t")), None);
        assert_eq!(Authorization::bearer(None), None);
    }
}
