//! The key lifecycle as one pure function: given the time, the keys, the tokens they signed,
//! the rotation requests and the policy, which transitions are due. The service applies
//! them, each in one transaction with its audit record. Nothing here reads the clock, the
//! database or the network, so a year of rotations can be planned in microseconds.
//!
//! The rules (DESIGN.md, timing rules):
//! - A rotation of an algorithm falls due at the first cron fire after its active key was
//!   activated, at a graceful rotation request made after that, or when the active key's
//!   certificate could no longer cover a full-length token — whichever comes first.
//! - A due rotation promotes the pending key only once that key has been published for
//!   `publish_lead`; until then it waits. The rotation retires the active key and generates
//!   the next pending key in the same transaction, so keys are always generated ahead.
//! - A retired key stays published until the latest `exp` of the tokens it actually signed
//!   (or its retirement, if it signed none) plus `leeway`; then it expires.
//! - An algorithm that is no longer configured stops signing: its active key retires, its
//!   pending key (which never signed) expires.

use std::collections::HashMap;
use std::time::Duration;

use super::{Algorithm, KeyId, KeyRecord, KeyState};
use crate::clock::Instant;
use crate::duration::format_duration;
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
        let interval = self.schedule.longest_interval(created).max(self.publish_lead);
        self.publish_lead + interval * 2 + self.max_token_ttl + self.leeway + self.clock_skew
    }

    /// How long a key must have been published before every verifier caching the JWKS has
    /// fetched it: the cache's max-age plus the clock skew. An emergency rotation promotes
    /// only a pending key published this long; a younger one would be refused by caches.
    pub fn seen_by_caches(&self) -> Duration {
        self.jwks_max_age + self.clock_skew
    }

    /// The earliest a pending key may start signing: once it has been published for the
    /// lead (invariant 1), whatever asks for the rotation.
    pub fn earliest_activation(&self, pending: &KeyRecord) -> Instant {
        pending.published_at + self.publish_lead + STAMP_GRANULARITY
    }

    /// The latest `exp` a token signed by `key` may carry: its certificate's end less leeway,
    /// so every token expires while its key is still published and certified.
    pub fn exp_limit(&self, key: &KeyRecord) -> Instant {
        key.not_after - self.leeway
    }
}

/// The publish-lead rule (DESIGN.md, timing rules): a verifier holding a cached JWKS must
/// learn a key before it signs, so the lead must cover the cache lifetime plus the clock skew
/// allowed. The sentence that says why, when it does not hold. Configuration and the API both
/// check it here.
pub fn lead_problem(publish_lead: Duration, jwks_max_age: Duration, clock_skew: Duration) -> Option<String> {
    (publish_lead < jwks_max_age + clock_skew).then(|| {
        format!(
            "publish_lead ({}) must be at least jwks_max_age ({}) plus clock_skew ({}) = {}, or verifiers with a cached JWKS could meet a token signed by a key they have not fetched",
            format_duration(publish_lead),
            format_duration(jwks_max_age),
            format_duration(clock_skew),
            format_duration(jwks_max_age + clock_skew)
        )
    })
}

/// A schedule that fires more often than the lead is not an error, but keys can only rotate
/// as fast as each pending key's lead allows: the warning that says so, given the schedule's
/// shortest interval.
pub fn pace_warning(shortest_interval: Duration, publish_lead: Duration) -> Option<String> {
    (!shortest_interval.is_zero() && shortest_interval < publish_lead).then(|| {
        format!(
            "the rotation schedule fires every {} at its most frequent, more often than the publish lead ({}): rotations wait for each pending key's lead, so keys rotate about every {} instead",
            format_duration(shortest_interval),
            format_duration(publish_lead),
            format_duration(publish_lead)
        )
    })
}

/// What the planner knows.
#[derive(Clone, Copy, Debug)]
pub struct World<'a> {
    pub now: Instant,
    /// Every key that is not yet expired or revoked (others are history and ignored).
    pub keys: &'a [KeyRecord],
    /// The latest `exp` of the tokens each key signed, from the issued-token records.
    pub last_token_exp: &'a HashMap<KeyId, Instant>,
    /// Graceful rotation requests per algorithm, by time of request.
    pub requested: &'a HashMap<Algorithm, Instant>,
    pub policy: &'a Policy,
    pub algorithms: &'a [Algorithm],
}

/// Why a rotation happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationCause {
    /// The cron schedule fired at this time.
    Schedule(Instant),
    /// An administrator asked for a graceful rotation at this time.
    Requested(Instant),
    /// The active key's certificate would no longer cover a full-length token.
    KeyLifeEnding,
    /// There was no active key but a published pending key: promoted at once.
    NoActiveKey,
}

/// One change the service should make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// No key at all for a configured algorithm: generate one and activate it at once (first
    /// start, or an algorithm newly configured; no verifier can hold its tokens yet).
    Bootstrap { alg: Algorithm },
    /// Generate a pending key, so the next one is published ahead of use.
    GeneratePending { alg: Algorithm },
    /// Retire `retire` (if any), activate `activate`, and generate the next pending key.
    Rotate { alg: Algorithm, retire: Option<KeyId>, activate: KeyId, cause: RotationCause },
    /// A retired key whose tokens have all expired (plus leeway) leaves the JWKS.
    Expire { kid: KeyId },
    /// An active key of an algorithm no longer configured stops signing.
    Retire { kid: KeyId },
    /// A pending key of an algorithm no longer configured is withdrawn; it never signed.
    Withdraw { kid: KeyId },
}

/// The next thing planned for one key, for the API and the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub kid: KeyId,
    /// `activate`, `retire` or `expire`.
    pub event: &'static str,
    /// When it becomes due; `None` when it waits on something without a time (a key whose
    /// successor must be generated first).
    pub at: Option<Instant>,
}

fn find<'a>(w: &World<'a>, alg: Algorithm, state: KeyState) -> Option<&'a KeyRecord> {
    // The newest key in a state: there is at most one active key per algorithm, and if a
    // crash ever left two pending keys, the newest is the one to promote last.
    w.keys.iter().filter(|k| k.alg == alg && k.state == state).min_by_key(|k| (k.published_at, k.kid.clone()))
}

/// When the rotation of `active`'s algorithm falls due, and why.
pub fn rotation_due(w: &World<'_>, active: &KeyRecord) -> (Instant, RotationCause) {
    let since = active.activated_at.unwrap_or(active.published_at);
    let mut due: Vec<(Instant, RotationCause)> = Vec::with_capacity(3);
    if let Some(fire) = w.policy.schedule.next_after(since) {
        due.push((fire, RotationCause::Schedule(fire)));
    }
    // Every activation deletes the algorithm's request in its own transaction, so a request
    // stamped in the very second of the activation was made after it (instants are whole
    // seconds): it still stands. Only an older one, left by an earlier version, is spent.
    if let Some(&req) = w.requested.get(&active.alg).filter(|r| **r >= since) {
        due.push((req, RotationCause::Requested(req)));
    }
    let life_end = w.policy.exp_limit(active) - w.policy.max_token_ttl;
    due.push((life_end, RotationCause::KeyLifeEnding));
    due.into_iter().min_by_key(|(t, _)| *t).unwrap_or((life_end, RotationCause::KeyLifeEnding))
}

/// Instants are whole seconds, floored: a key stamped as published at second `s` may have
/// appeared up to a second later. One more second keeps the lead from ever being shorter
/// than configured in real time.
pub const STAMP_GRANULARITY: Duration = Duration::from_secs(1);

/// When `pending` may start signing: the due time of the rotation, but never before it has
/// been published for `publish_lead`.
pub fn promotion_time(w: &World<'_>, active: &KeyRecord, pending: &KeyRecord) -> (Instant, RotationCause) {
    let (due, cause) = rotation_due(w, active);
    (due.max(w.policy.earliest_activation(pending)), cause)
}

/// When a retired key expires: the latest `exp` of the tokens it signed (or its retirement,
/// when that is later or it signed none) plus leeway. The one statement of the rule: the
/// planner uses it, and the service checks it again inside the expiring transaction.
pub fn expires_at(retired: &KeyRecord, last_token_exp: Option<Instant>, leeway: Duration) -> Instant {
    let retired_at = retired.retired_at.unwrap_or(retired.published_at);
    last_token_exp.unwrap_or(retired_at).max(retired_at) + leeway
}

/// [`expires_at`] with what the planner knows.
pub fn expiry_time(w: &World<'_>, retired: &KeyRecord) -> Instant {
    expires_at(retired, w.last_token_exp.get(&retired.kid).copied(), w.policy.leeway)
}

/// The transitions due at `w.now`.
pub fn plan(w: &World<'_>) -> Vec<Transition> {
    let mut out = Vec::new();
    for &alg in w.algorithms {
        let active = find(w, alg, KeyState::Active);
        let pending = find(w, alg, KeyState::Pending);
        match (active, pending) {
            (None, None) => {
                out.push(Transition::Bootstrap { alg });
                out.push(Transition::GeneratePending { alg });
            }
            (None, Some(p)) => out.push(Transition::Rotate {
                alg,
                retire: None,
                activate: p.kid.clone(),
                cause: RotationCause::NoActiveKey,
            }),
            (Some(_), None) => out.push(Transition::GeneratePending { alg }),
            (Some(a), Some(p)) => {
                let (at, cause) = promotion_time(w, a, p);
                if w.now >= at {
                    out.push(Transition::Rotate { alg, retire: Some(a.kid.clone()), activate: p.kid.clone(), cause });
                }
            }
        }
    }
    for key in w.keys {
        let configured = w.algorithms.contains(&key.alg);
        match key.state {
            KeyState::Retired if w.now >= expiry_time(w, key) => out.push(Transition::Expire { kid: key.kid.clone() }),
            KeyState::Active if !configured => out.push(Transition::Retire { kid: key.kid.clone() }),
            KeyState::Pending if !configured => out.push(Transition::Withdraw { kid: key.kid.clone() }),
            _ => {}
        }
    }
    out
}

/// The next planned event of every live key.
pub fn upcoming(w: &World<'_>) -> Vec<Planned> {
    let mut out = Vec::new();
    for key in w.keys {
        let configured = w.algorithms.contains(&key.alg);
        let planned = match key.state {
            KeyState::Pending if !configured => Planned { kid: key.kid.clone(), event: "expire", at: Some(w.now) },
            KeyState::Pending => {
                let at = find(w, key.alg, KeyState::Active)
                    .filter(|_| find(w, key.alg, KeyState::Pending).map(|p| &p.kid) == Some(&key.kid))
                    .map(|a| promotion_time(w, a, key).0);
                Planned { kid: key.kid.clone(), event: "activate", at }
            }
            KeyState::Active if !configured => Planned { kid: key.kid.clone(), event: "retire", at: Some(w.now) },
            KeyState::Active => {
                let at = find(w, key.alg, KeyState::Pending).map(|p| promotion_time(w, key, p).0);
                Planned { kid: key.kid.clone(), event: "retire", at }
            }
            KeyState::Retired => Planned { kid: key.kid.clone(), event: "expire", at: Some(expiry_time(w, key)) },
            KeyState::Expired | KeyState::Revoked => continue,
        };
        out.push(planned);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use Algorithm::*;
    use KeyState::*;

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86400);

    fn policy() -> Policy {
        Policy {
            schedule: Schedule::parse(crate::schedule::DEFAULT_SCHEDULE).expect("valid"),
            publish_lead: Duration::from_secs(900),
            clock_skew: Duration::from_secs(60),
            max_token_ttl: HOUR,
            leeway: MIN,
            jwks_max_age: Duration::from_secs(300),
        }
    }

    /// Monday 2026-01-05 00:00 UTC is a fire time of the default schedule.
    const MONDAY: Instant = datetime!(2026-01-05 00:00:00 UTC);

    fn key(name: &str, alg: Algorithm, state: KeyState, published: Instant) -> KeyRecord {
        KeyRecord {
            kid: KeyId::new(name),
            alg,
            state,
            public_jwk: String::new(),
            created_at: published,
            published_at: published,
            activated_at: matches!(state, Active | Retired).then_some(published),
            retired_at: (state == Retired).then_some(published),
            expired_at: None,
            revoked_at: None,
            revoke_reason: None,
            not_after: published + 365 * DAY,
            custody: crate::keys::Custody::Software,
        }
    }

    fn activated(mut k: KeyRecord, at: Instant) -> KeyRecord {
        k.activated_at = Some(at);
        k
    }

    fn retired(mut k: KeyRecord, at: Instant) -> KeyRecord {
        k.retired_at = Some(at);
        k
    }

    struct Case {
        name: &'static str,
        now: Instant,
        keys: Vec<KeyRecord>,
        last_exp: Vec<(&'static str, Instant)>,
        requested: Vec<(Algorithm, Instant)>,
        algorithms: Vec<Algorithm>,
        want: Vec<Transition>,
    }

    fn case(name: &'static str, now: Instant, keys: Vec<KeyRecord>, want: Vec<Transition>) -> Case {
        Case { name, now, keys, last_exp: vec![], requested: vec![], algorithms: vec![ES256], want }
    }

    fn rotate(retire: &str, activate: &str, cause: RotationCause) -> Transition {
        Transition::Rotate { alg: ES256, retire: Some(KeyId::new(retire)), activate: KeyId::new(activate), cause }
    }

    #[test]
    fn plan_table() {
        let week_ago = MONDAY - 7 * DAY;
        let steady =
            || vec![activated(key("a", ES256, Active, week_ago - HOUR), week_ago), key("p", ES256, Pending, week_ago)];
        let cases = vec![
            Case {
                algorithms: vec![ES256, EdDSA],
                ..case(
                    "first start: bootstrap and a pending key per algorithm",
                    MONDAY,
                    vec![],
                    vec![
                        Transition::Bootstrap { alg: ES256 },
                        Transition::GeneratePending { alg: ES256 },
                        Transition::Bootstrap { alg: EdDSA },
                        Transition::GeneratePending { alg: EdDSA },
                    ],
                )
            },
            case("before the fire time nothing happens", MONDAY - MIN, steady(), vec![]),
            case(
                "at the fire time the pending key is promoted",
                MONDAY,
                steady(),
                vec![rotate("a", "p", RotationCause::Schedule(MONDAY))],
            ),
            case(
                "a pending key younger than the lead waits",
                MONDAY,
                vec![
                    activated(key("a", ES256, Active, week_ago), week_ago),
                    key("p", ES256, Pending, MONDAY - 10 * MIN),
                ],
                vec![],
            ),
            case(
                "…still waits at exactly the lead (instants are floored to seconds)",
                MONDAY + 5 * MIN,
                vec![
                    activated(key("a", ES256, Active, week_ago), week_ago),
                    key("p", ES256, Pending, MONDAY - 10 * MIN),
                ],
                vec![],
            ),
            case(
                "…and is promoted once the lead has passed",
                MONDAY + 5 * MIN + Duration::from_secs(1),
                vec![
                    activated(key("a", ES256, Active, week_ago), week_ago),
                    key("p", ES256, Pending, MONDAY - 10 * MIN),
                ],
                vec![rotate("a", "p", RotationCause::Schedule(MONDAY))],
            ),
            case(
                "catch-up: many missed fires rotate once",
                MONDAY + 30 * DAY,
                steady(),
                vec![rotate("a", "p", RotationCause::Schedule(MONDAY))],
            ),
            Case {
                requested: vec![(ES256, MONDAY - 2 * DAY)],
                ..case(
                    "a graceful request after activation rotates before the schedule",
                    MONDAY - 2 * DAY,
                    steady(),
                    vec![rotate("a", "p", RotationCause::Requested(MONDAY - 2 * DAY))],
                )
            },
            Case {
                requested: vec![(ES256, week_ago)],
                ..case(
                    "a request in the second of the activation still stands",
                    MONDAY - 2 * DAY,
                    steady(),
                    vec![rotate("a", "p", RotationCause::Requested(week_ago))],
                )
            },
            Case {
                requested: vec![(ES256, week_ago - DAY)],
                ..case("a request older than the activation is spent", MONDAY - DAY, steady(), vec![])
            },
            case(
                "pending missing: generate ahead",
                MONDAY - DAY,
                vec![activated(key("a", ES256, Active, week_ago), week_ago)],
                vec![Transition::GeneratePending { alg: ES256 }],
            ),
            case(
                "no active key but a pending one: promote it at once",
                MONDAY - DAY,
                vec![key("p", ES256, Pending, MONDAY - DAY - MIN)],
                vec![Transition::Rotate {
                    alg: ES256,
                    retire: None,
                    activate: KeyId::new("p"),
                    cause: RotationCause::NoActiveKey,
                }],
            ),
            case(
                "a retired key that signed nothing expires after leeway",
                MONDAY + MIN,
                vec![
                    retired(key("r", ES256, Retired, week_ago), MONDAY),
                    activated(key("a", ES256, Active, week_ago), MONDAY),
                    key("p", ES256, Pending, MONDAY),
                ],
                vec![Transition::Expire { kid: KeyId::new("r") }],
            ),
            Case {
                last_exp: vec![("r", MONDAY + HOUR)],
                ..case(
                    "a retired key stays while its last token lives, plus leeway",
                    MONDAY + HOUR + MIN - Duration::from_secs(1),
                    vec![
                        retired(key("r", ES256, Retired, week_ago), MONDAY),
                        activated(key("a", ES256, Active, week_ago), MONDAY),
                        key("p", ES256, Pending, MONDAY),
                    ],
                    vec![],
                )
            },
            Case {
                last_exp: vec![("r", MONDAY + HOUR)],
                ..case(
                    "…and expires after it",
                    MONDAY + HOUR + MIN,
                    vec![
                        retired(key("r", ES256, Retired, week_ago), MONDAY),
                        activated(key("a", ES256, Active, week_ago), MONDAY),
                        key("p", ES256, Pending, MONDAY),
                    ],
                    vec![Transition::Expire { kid: KeyId::new("r") }],
                )
            },
            case(
                "a key whose certificate is ending rotates early",
                MONDAY - 3 * DAY,
                vec![
                    KeyRecord {
                        not_after: MONDAY - 3 * DAY + HOUR + MIN,
                        ..activated(key("a", ES256, Active, week_ago), week_ago)
                    },
                    key("p", ES256, Pending, week_ago),
                ],
                vec![rotate("a", "p", RotationCause::KeyLifeEnding)],
            ),
            Case {
                algorithms: vec![EdDSA],
                ..case(
                    "an algorithm removed from the configuration stops signing",
                    MONDAY - DAY,
                    steady(),
                    vec![
                        Transition::Bootstrap { alg: EdDSA },
                        Transition::GeneratePending { alg: EdDSA },
                        Transition::Retire { kid: KeyId::new("a") },
                        Transition::Withdraw { kid: KeyId::new("p") },
                    ],
                )
            },
        ];
        for c in cases {
            let last: HashMap<KeyId, Instant> = c.last_exp.iter().map(|(k, t)| (KeyId::new(*k), *t)).collect();
            let requested: HashMap<Algorithm, Instant> = c.requested.iter().copied().collect();
            let p = policy();
            let w = World {
                now: c.now,
                keys: &c.keys,
                last_token_exp: &last,
                requested: &requested,
                policy: &p,
                algorithms: &c.algorithms,
            };
            assert_eq!(plan(&w), c.want, "{}", c.name);
        }
    }

    #[test]
    fn upcoming_events_in_order() {
        let week_ago = MONDAY - 7 * DAY;
        let keys = vec![
            retired(key("r", ES256, Retired, week_ago - 7 * DAY), week_ago),
            activated(key("a", ES256, Active, week_ago - HOUR), week_ago),
            key("p", ES256, Pending, week_ago),
        ];
        let last = HashMap::from([(KeyId::new("r"), MONDAY - 2 * DAY)]);
        let p = policy();
        let requested = HashMap::new();
        let w = World {
            now: MONDAY - 3 * DAY,
            keys: &keys,
            last_token_exp: &last,
            requested: &requested,
            policy: &p,
            algorithms: &[ES256],
        };
        let up = upcoming(&w);
        assert_eq!(up[0], Planned { kid: KeyId::new("r"), event: "expire", at: Some(MONDAY - 2 * DAY + MIN) });
        assert_eq!(up[1], Planned { kid: KeyId::new("a"), event: "retire", at: Some(MONDAY) });
        assert_eq!(up[2], Planned { kid: KeyId::new("p"), event: "activate", at: Some(MONDAY) });
        assert_eq!(up.iter().filter_map(|p| p.at).filter(|t| *t > w.now).min(), Some(MONDAY - 2 * DAY + MIN));
    }

    #[test]
    fn planned_life_covers_two_intervals_and_token_lifetime() {
        let p = policy();
        let life = p.planned_life(MONDAY);
        assert_eq!(life, Duration::from_secs(900 + 2 * 7 * 86400 + 3600 + 60 + 60));
    }
}
