//! The key lifecycle as one pure function: given the time, the keys and the policy, which
//! transitions are due. The service applies them, each in one transaction with its audit
//! record. Nothing here reads the clock, the database or the network.

use std::time::Duration;

use super::{Algorithm, KeyRecord, KeyState};
use crate::clock::Instant;
use crate::schedule::Schedule;

/// The timing policy in force (configured pins over stored values over defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub schedule: Schedule,
    pub publish_lead: Duration,
    pub clock_skew: Duration,
    pub max_token_ttl: Duration,
    pub leeway: Duration,
    pub jwks_max_age: Duration,
}

impl Policy {
    /// The longest a key generated at `created` is planned to live: published for the lead,
    /// waiting at most one rotation interval to activate, active for at most one more, then
    /// retired until its last token expires plus leeway. The key's certificate covers this.
    pub fn planned_life(&self, created: Instant) -> Duration {
        let interval = self.schedule.longest_interval(created);
        self.publish_lead + interval * 2 + self.max_token_ttl + self.leeway + self.clock_skew
    }
}

/// One change the service should make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Generate a key for `alg`. With `activate` it signs at once: only for an algorithm
    /// with no active key at all (first start, or an algorithm newly configured), when no
    /// verifier can yet hold tokens of that algorithm from this issuer.
    Generate { alg: Algorithm, activate: bool },
}

/// The transitions due at `now` for the configured `algorithms`.
pub fn plan(
    _now: Instant,
    keys: &[KeyRecord],
    _policy: &Policy,
    algorithms: &[Algorithm],
) -> Vec<Transition> {
    let mut out = Vec::new();
    for &alg in algorithms {
        let count = |state: KeyState| {
            keys.iter()
                .filter(|k| k.alg == alg && k.state == state)
                .count()
        };
        if count(KeyState::Active) == 0 {
            out.push(Transition::Generate {
                alg,
                activate: true,
            });
        }
        if count(KeyState::Pending) == 0 {
            out.push(Transition::Generate {
                alg,
                activate: false,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyId;
    use time::macros::datetime;

    fn policy() -> Policy {
        Policy {
            schedule: Schedule::parse(crate::schedule::DEFAULT_SCHEDULE).expect("valid"),
            publish_lead: Duration::from_secs(900),
            clock_skew: Duration::from_secs(60),
            max_token_ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(60),
            jwks_max_age: Duration::from_secs(300),
        }
    }

    fn key(alg: Algorithm, state: KeyState) -> KeyRecord {
        let t = datetime!(2026-01-01 00:00:00 UTC);
        KeyRecord {
            kid: KeyId::new(format!("{alg}-{state:?}")),
            alg,
            state,
            public_jwk: String::new(),
            created_at: t,
            published_at: t,
            activated_at: None,
            retired_at: None,
            expired_at: None,
            revoked_at: None,
            revoke_reason: None,
            not_after: t,
        }
    }

    #[test]
    fn bootstrap_table() {
        use Algorithm::*;
        use KeyState::*;
        let now = datetime!(2026-01-01 00:00:00 UTC);
        type Case = (
            &'static str,
            Vec<KeyRecord>,
            Vec<Algorithm>,
            Vec<Transition>,
        );
        let cases: Vec<Case> = vec![
            (
                "first start: one active and one pending per algorithm",
                vec![],
                vec![ES256, EdDSA],
                vec![
                    Transition::Generate {
                        alg: ES256,
                        activate: true,
                    },
                    Transition::Generate {
                        alg: ES256,
                        activate: false,
                    },
                    Transition::Generate {
                        alg: EdDSA,
                        activate: true,
                    },
                    Transition::Generate {
                        alg: EdDSA,
                        activate: false,
                    },
                ],
            ),
            (
                "steady state: nothing to do",
                vec![key(ES256, Active), key(ES256, Pending)],
                vec![ES256],
                vec![],
            ),
            (
                "pending missing: generate ahead",
                vec![key(ES256, Active), key(ES256, Retired)],
                vec![ES256],
                vec![Transition::Generate {
                    alg: ES256,
                    activate: false,
                }],
            ),
            (
                "other algorithms' keys do not count",
                vec![key(ES384, Active), key(ES384, Pending)],
                vec![ES256],
                vec![
                    Transition::Generate {
                        alg: ES256,
                        activate: true,
                    },
                    Transition::Generate {
                        alg: ES256,
                        activate: false,
                    },
                ],
            ),
            (
                "expired and revoked keys do not count",
                vec![key(ES256, Expired), key(ES256, Revoked)],
                vec![ES256],
                vec![
                    Transition::Generate {
                        alg: ES256,
                        activate: true,
                    },
                    Transition::Generate {
                        alg: ES256,
                        activate: false,
                    },
                ],
            ),
        ];
        for (name, keys, algs, want) in cases {
            assert_eq!(plan(now, &keys, &policy(), &algs), want, "{name}");
        }
    }

    #[test]
    fn planned_life_covers_two_intervals_and_token_lifetime() {
        let p = policy();
        let life = p.planned_life(datetime!(2026-01-01 00:00:00 UTC));
        assert_eq!(
            life,
            Duration::from_secs(900 + 2 * 7 * 86400 + 3600 + 60 + 60)
        );
    }
}
