//! The one place that reads the wall clock.
//!
//! Every other module receives a [`Clock`] and asks it for the time, so tests can move time
//! forward instead of sleeping (DESIGN.md invariant 6). `clippy.toml` forbids reading the
//! system time anywhere else.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

/// An instant in UTC, truncated to whole seconds: JWT times are whole seconds, and so is
/// everything keyturn stores.
pub type Instant = OffsetDateTime;

/// Source of the current time: the system clock in production, a fake one in tests.
#[derive(Clone, Debug)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    System,
    Fake(Arc<Mutex<OffsetDateTime>>),
}

/// How long since something last happened, by the monotonic clock: for watchdogs (how long
/// a node has gone without hearing from its database), never for domain time, which comes
/// from [`Clock`].
#[derive(Debug)]
pub struct Watchdog {
    last: Mutex<std::time::Instant>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog { last: Mutex::new(std::time::Instant::now()) }
    }
}

/// A moment on the monotonic clock, taken before something that may take a while, for
/// [`Watchdog::reset_to`].
#[derive(Debug, Clone, Copy)]
pub struct Stamp(std::time::Instant);

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp(std::time::Instant::now())
    }
}

impl Watchdog {
    /// It happened now.
    pub fn reset(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
    }

    /// It happened at `at` (kept only when later than what it holds).
    pub fn reset_to(&self, at: Stamp) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = (*last).max(at.0);
    }

    /// How long since it last happened.
    pub fn elapsed(&self) -> Duration {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }
}

impl Clock {
    /// The real wall clock.
    pub fn system() -> Self {
        Clock { source: Source::System }
    }

    /// A clock that stands still at `start` until [`Clock::advance`] or [`Clock::set`] moves it.
    pub fn fake(start: OffsetDateTime) -> Self {
        Clock { source: Source::Fake(Arc::new(Mutex::new(truncate(start)))) }
    }

    /// The current instant, in whole seconds.
    pub fn now(&self) -> Instant {
        match &self.source {
            #[allow(clippy::disallowed_methods)] // This is the clock module.
            Source::System => truncate(OffsetDateTime::now_utc()),
            Source::Fake(t) => *t.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Moves a fake clock forward. A system clock cannot be moved; the call is ignored there.
    pub fn advance(&self, by: Duration) {
        if let Source::Fake(t) = &self.source {
            let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
            *t = truncate(*t + by);
        }
    }

    /// Sets a fake clock to `to`. Ignored for the system clock.
    pub fn set(&self, to: OffsetDateTime) {
        if let Source::Fake(t) = &self.source {
            *t.lock().unwrap_or_else(PoisonError::into_inner) = truncate(to);
        }
    }
}

fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Seconds since the Unix epoch, the form instants take in SQLite and in JWT claims.
pub fn to_unix(t: Instant) -> i64 {
    t.unix_timestamp()
}

/// The inverse of [`to_unix`]; out-of-range values clamp to the representable range.
pub fn from_unix(secs: i64) -> Instant {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        time::macros::datetime!(9999-12-31 23:59:59 UTC)
    })
}

/// RFC 3339 form of an instant, for JSON and logs.
pub fn rfc3339(t: Instant) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Serializes an instant as RFC 3339, for views the API returns as JSON
/// (`#[serde(serialize_with = "clock::serialize_rfc3339")]`).
pub fn serialize_rfc3339<S: serde::Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// [`serialize_rfc3339`] for an optional instant: `null` when absent.
pub fn serialize_rfc3339_opt<S: serde::Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let clock = Clock::fake(datetime!(2026-01-01 00:00:00.75 UTC));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:00:00 UTC));
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:01:30 UTC));
        let copy = clock.clone();
        copy.advance(Duration::from_secs(30));
        assert_eq!(clock.now(), datetime!(2026-01-01 00:02:00 UTC), "clones share the time");
    }

    #[test]
    fn unix_round_trip() {
        let t = datetime!(2030-05-06 07:08:09 UTC);
        assert_eq!(from_unix(to_unix(t)), t);
    }
}
