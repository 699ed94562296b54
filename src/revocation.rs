//! The revocation index: every revocation in force, in memory, so checking a token costs a
//! few hash lookups whatever the number of revocations. It is loaded from SQLite at
//! start-up, extended as revocations commit (here or in another process), and rebuilt after
//! pruning. Nothing here reads the clock or the database.

use std::collections::{HashMap, HashSet};

use crate::clock::{to_unix, Instant};

/// One revocation, as the store and the feed know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// One token, by its `jti`.
    Jti(String),
    /// Every token of a subject issued at or before the cutoff.
    Subject { sub: String, cutoff: Instant },
    /// Every token of a client issued at or before the cutoff.
    Client { client_id: String, cutoff: Instant },
    /// Every token a (compromised) key signed.
    Key(String),
    /// Every token of an ended session, by its `sid`.
    Session(String),
}

impl Revocation {
    /// The kind as stored and shown in the feed.
    pub fn kind(&self) -> &'static str {
        match self {
            Revocation::Jti(_) => "jti",
            Revocation::Subject { .. } => "sub",
            Revocation::Client { .. } => "client_id",
            Revocation::Key(_) => "kid",
            Revocation::Session(_) => "sid",
        }
    }

    /// Rebuilds an entry from its stored kind, value and cutoff.
    pub fn from_parts(kind: &str, value: String, cutoff: Instant) -> Option<Self> {
        match kind {
            "jti" => Some(Revocation::Jti(value)),
            "sub" => Some(Revocation::Subject { sub: value, cutoff }),
            "client_id" => Some(Revocation::Client { client_id: value, cutoff }),
            "kid" => Some(Revocation::Key(value)),
            "sid" => Some(Revocation::Session(value)),
            _ => None,
        }
    }
}

/// What a check needs to know about a token.
#[derive(Clone, Copy, Debug)]
pub struct TokenFacts<'a> {
    pub jti: &'a str,
    pub sub: &'a str,
    pub client_id: Option<&'a str>,
    pub kid: &'a str,
    /// The session the token belongs to, if any.
    pub sid: Option<&'a str>,
    pub iat: Instant,
}

/// The index.
#[derive(Debug, Default, Clone)]
pub struct RevocationIndex {
    jti: HashSet<Box<str>>,
    sub: HashMap<Box<str>, i64>,
    client: HashMap<Box<str>, i64>,
    kid: HashSet<Box<str>>,
    sid: HashSet<Box<str>>,
    /// The highest feed id applied, so later entries can be loaded incrementally.
    pub last_id: i64,
    entries: usize,
}

impl RevocationIndex {
    /// Adds an entry (with its feed id). A later cutoff for the same subject or client wins.
    pub fn insert(&mut self, id: i64, r: &Revocation) {
        match r {
            Revocation::Jti(j) => {
                self.jti.insert(j.as_str().into());
            }
            Revocation::Subject { sub, cutoff } => {
                let c = self.sub.entry(sub.as_str().into()).or_insert(i64::MIN);
                *c = (*c).max(to_unix(*cutoff));
            }
            Revocation::Client { client_id, cutoff } => {
                let c = self.client.entry(client_id.as_str().into()).or_insert(i64::MIN);
                *c = (*c).max(to_unix(*cutoff));
            }
            Revocation::Key(k) => {
                self.kid.insert(k.as_str().into());
            }
            Revocation::Session(s) => {
                self.sid.insert(s.as_str().into());
            }
        }
        self.last_id = self.last_id.max(id);
        self.entries += 1;
    }

    /// Why a token is revoked (`kid`, `sid`, `sub`, `client_id` or `jti`), or `None` if it
    /// is not. The widest cause is named first: a session's end also revokes its tokens one
    /// by one, and the session is what an administrator needs to read.
    pub fn check(&self, t: &TokenFacts<'_>) -> Option<&'static str> {
        let iat = to_unix(t.iat);
        if self.kid.contains(t.kid) {
            return Some("kid");
        }
        if t.sid.is_some_and(|s| self.sid.contains(s)) {
            return Some("sid");
        }
        if self.sub.get(t.sub).is_some_and(|c| iat <= *c) {
            return Some("sub");
        }
        if t.client_id.and_then(|c| self.client.get(c)).is_some_and(|c| iat <= *c) {
            return Some("client_id");
        }
        if self.jti.contains(t.jti) {
            return Some("jti");
        }
        None
    }

    /// Whether everything issued to `sub` or `client_id` at `issued_at` is revoked (for
    /// refresh tokens, which carry no kid or jti of an access token).
    pub fn grant_revoked(&self, sub: &str, client_id: Option<&str>, issued_at: Instant) -> bool {
        let at = to_unix(issued_at);
        self.sub.get(sub).is_some_and(|c| at <= *c)
            || client_id.and_then(|c| self.client.get(c)).is_some_and(|c| at <= *c)
    }

    /// How many entries have been applied.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T: Instant = datetime!(2026-01-01 00:00:00 UTC);

    fn facts(iat: Instant) -> TokenFacts<'static> {
        TokenFacts { jti: "j1", sub: "alice", client_id: Some("app"), kid: "k1", sid: Some("s1"), iat }
    }

    #[test]
    fn each_handle_revokes() {
        let table: Vec<(Revocation, Instant, Option<&str>)> = vec![
            (Revocation::Jti("j1".into()), T, Some("jti")),
            (Revocation::Jti("other".into()), T, None),
            (Revocation::Key("k1".into()), T, Some("kid")),
            (Revocation::Session("s1".into()), T, Some("sid")),
            (Revocation::Session("s2".into()), T, None),
            (Revocation::Subject { sub: "alice".into(), cutoff: T }, T, Some("sub")),
            (Revocation::Subject { sub: "alice".into(), cutoff: T }, T + time::Duration::seconds(1), None),
            (Revocation::Subject { sub: "bob".into(), cutoff: T }, T, None),
            (
                Revocation::Client { client_id: "app".into(), cutoff: T },
                T - time::Duration::hours(1),
                Some("client_id"),
            ),
            (Revocation::Client { client_id: "app".into(), cutoff: T }, T + time::Duration::seconds(1), None),
        ];
        for (r, iat, want) in table {
            let mut idx = RevocationIndex::default();
            idx.insert(1, &r);
            assert_eq!(idx.check(&facts(iat)), want, "{r:?} at {iat}");
        }
    }

    #[test]
    fn later_cutoff_wins_and_grants_follow() {
        let mut idx = RevocationIndex::default();
        idx.insert(1, &Revocation::Subject { sub: "alice".into(), cutoff: T + time::Duration::hours(1) });
        idx.insert(2, &Revocation::Subject { sub: "alice".into(), cutoff: T });
        assert!(idx.grant_revoked("alice", None, T + time::Duration::minutes(30)));
        assert!(!idx.grant_revoked("alice", None, T + time::Duration::hours(2)));
        assert_eq!(idx.last_id, 2);
        assert_eq!(idx.len(), 2);
    }
}
