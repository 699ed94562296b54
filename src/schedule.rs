//! Rotation schedules: cron expressions and their fire times.
//!
//! Expressions are standard five-field cron (`minute hour day-of-month month day-of-week`),
//! or six fields with seconds first (`second minute hour day-of-month month day-of-week`,
//! for tests and demos that rotate every few seconds), plus the nicknames `@yearly`,
//! `@monthly`, `@weekly`, `@daily` and `@hourly`. All times are UTC. An invalid expression
//! is refused with the field that is wrong and what that field takes, in keyturn's words.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::clock::{from_unix, to_unix, Instant};

/// The schedule used when none is configured or stored: Mondays at 00:00 UTC.
pub const DEFAULT_SCHEDULE: &str = "0 0 * * MON";

/// A parsed, valid cron schedule.
#[derive(Clone)]
pub struct Schedule {
    source: String,
    cron: Cron,
    /// Interval statistics are costly for frequent schedules (thousands of fires): computed
    /// once per parsed schedule and shared by its clones.
    longest: Arc<OnceLock<Duration>>,
    shortest: Arc<OnceLock<Duration>>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.source)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Schedule {
    /// Parses an expression; the error names what is wrong with it.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let trimmed = expr.trim();
        check_fields(trimmed)?;
        let cron = parser()
            .parse(trimmed)
            .map_err(|e| format!("invalid cron expression '{trimmed}': its fields do not go together ({e})"))?;
        let schedule = Schedule {
            source: trimmed.to_owned(),
            cron,
            longest: Arc::new(OnceLock::new()),
            shortest: Arc::new(OnceLock::new()),
        };
        // An expression that can never fire (say, February 30th) is as wrong as a typo.
        let epoch = from_unix(0);
        if schedule.next_after(epoch).is_none() {
            return Err(format!("cron expression '{trimmed}' never fires"));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: Instant) -> Option<Instant> {
        let t = chrono_time(t)?;
        self.cron.find_next_occurrence(&t, false).ok().map(|d| from_unix(d.timestamp()))
    }

    /// The last fire time at or before `t`.
    pub fn last_at_or_before(&self, t: Instant) -> Option<Instant> {
        let t = chrono_time(t)?;
        self.cron.find_previous_occurrence(&t, true).ok().map(|d| from_unix(d.timestamp()))
    }

    /// The next `n` fire times after `t`, for previews.
    pub fn preview(&self, t: Instant, n: usize) -> Vec<Instant> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The longest gap between consecutive fire times over the year after `t` (the first `t`
    /// asked about, for this parsed schedule): how long one key can stay active, which bounds
    /// its planned life.
    pub fn longest_interval(&self, t: Instant) -> Duration {
        *self.longest.get_or_init(|| self.compute_longest(t))
    }

    fn compute_longest(&self, t: Instant) -> Duration {
        let horizon = t + time::Duration::days(366);
        let mut longest = time::Duration::ZERO;
        let Some(mut prev) = self.next_after(t) else {
            return Duration::ZERO;
        };
        // Bounded so a per-second schedule costs at most this many steps.
        for _ in 0..20_000 {
            let Some(next) = self.next_after(prev) else {
                break;
            };
            longest = longest.max(next - prev);
            if next > horizon {
                break;
            }
            prev = next;
        }
        longest.try_into().unwrap_or_default()
    }

    /// The shortest gap between consecutive fire times over the next 1,000 fires (after the
    /// first `t` asked about, for this parsed schedule).
    pub fn shortest_interval(&self, t: Instant) -> Duration {
        *self.shortest.get_or_init(|| self.compute_shortest(t))
    }

    fn compute_shortest(&self, t: Instant) -> Duration {
        let fires = self.preview(t, 1_000);
        fires.windows(2).map(|w| w[1] - w[0]).min().and_then(|d| d.try_into().ok()).unwrap_or_default()
    }
}

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).build()
}

/// The fields of a five-field expression, and what each takes.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 (or L for the last day)"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
];

/// Checks the expression's shape and each field on its own, so an error names the field
/// that is wrong (the cron library's own messages speak of its internals).
fn check_fields(expr: &str) -> Result<(), String> {
    if expr.starts_with('@') {
        return match expr.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly" => Ok(()),
            _ => Err(format!(
                "invalid cron expression '{expr}': unknown nickname; use @yearly, @monthly, @weekly, @daily or @hourly"
            )),
        };
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names: Vec<(&str, &str)> = match fields.len() {
        5 => FIELDS.to_vec(),
        6 => std::iter::once(("second", "0-59")).chain(FIELDS).collect(),
        n => {
            return Err(format!(
                "invalid cron expression '{expr}': it has {n} field{}, where cron takes five (minute hour day-of-month month day-of-week, e.g. '0 3 * * MON'), or six with seconds first",
                if n == 1 { "" } else { "s" }
            ))
        }
    };
    for (i, (field, (name, takes))) in fields.iter().zip(&names).enumerate() {
        let probe: Vec<&str> = (0..fields.len()).map(|j| if j == i { *field } else { "*" }).collect();
        if parser().parse(&probe.join(" ")).is_err() {
            return Err(format!(
                "invalid cron expression '{expr}': the {name} field '{field}' is not valid: it takes {takes}, as one value, a range (1-5), a list (1,3,5) or a step (*/15)"
            ));
        }
    }
    Ok(())
}

fn chrono_time(t: Instant) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(to_unix(t), 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn weekly_default() {
        let s = Schedule::parse(DEFAULT_SCHEDULE).expect("valid");
        let t = datetime!(2026-11-24 10:00:00 UTC); // a Tuesday
        assert_eq!(s.next_after(t), Some(datetime!(2026-11-30 00:00:00 UTC)));
        assert_eq!(s.last_at_or_before(t), Some(datetime!(2026-11-23 00:00:00 UTC)));
        assert_eq!(s.preview(t, 2)[1], datetime!(2026-12-07 00:00:00 UTC));
        assert_eq!(s.longest_interval(t), Duration::from_secs(7 * 86400));
    }

    #[test]
    fn seconds_field_and_nicknames() {
        let s = Schedule::parse("*/10 * * * * *").expect("valid");
        let t = datetime!(2026-01-01 00:00:05 UTC);
        assert_eq!(s.next_after(t), Some(datetime!(2026-01-01 00:00:10 UTC)));
        assert_eq!(s.shortest_interval(t), Duration::from_secs(10));
        assert!(Schedule::parse("@daily").is_ok());
    }

    #[test]
    fn errors_name_the_problem() {
        for bad in ["", "not cron", "61 * * * *", "* * * *"] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(e.contains("cron expression"), "{e}");
        }
    }

    /// The reported case: `0 3 * * MONDAY` failed with the library's "CronPattern contains
    /// illegal character 'D' in part '1DAY'".
    #[test]
    fn errors_name_the_field_in_keyturns_words() {
        let table = [
            ("0 3 * * MONDAY", "the day-of-week field 'MONDAY'"),
            ("61 * * * *", "the minute field '61'"),
            ("0 24 * * *", "the hour field '24'"),
            ("0 0 32 * *", "the day-of-month field '32'"),
            ("0 0 1 13 *", "the month field '13'"),
            ("99 0 0 * * *", "the second field '99'"),
            ("* * * *", "it has 4 fields"),
            ("0 0 0 * * * *", "it has 7 fields"),
            ("@fortnightly", "unknown nickname"),
        ];
        for (expr, says) in table {
            let e = Schedule::parse(expr).expect_err(expr);
            assert!(e.contains(says), "{expr}: {e}");
            assert!(!e.contains("CronPattern"), "{expr}: the library's words leak: {e}");
        }
        for good in ["0 3 * * MON", "0 3 * * 1-5", "*/15 * * * *", "0 0 1 JAN *", "@weekly", "*/10 * * * * *"] {
            assert!(Schedule::parse(good).is_ok(), "{good}");
        }
    }
}
