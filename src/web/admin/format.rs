//! How times read on the dashboard: absolute UTC and relative ("in 3 days").

use crate::clock::Instant;

/// `2026-11-30 00:00 UTC`.
pub fn utc(t: Instant) -> String {
    format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

/// `in 3 days`, `5 minutes ago`, `now`.
pub fn relative(now: Instant, t: Instant) -> String {
    let secs = (t - now).whole_seconds();
    let (n, future) = (secs.unsigned_abs(), secs > 0);
    if n < 45 {
        return "now".into();
    }
    let (value, unit) = if n < 5400 {
        ((n + 30) / 60, "minute")
    } else if n < 36 * 3600 {
        ((n + 1800) / 3600, "hour")
    } else {
        ((n + 43_200) / 86_400, "day")
    };
    let unit = if value == 1 { unit.to_owned() } else { format!("{unit}s") };
    if future {
        format!("in {value} {unit}")
    } else {
        format!("{value} {unit} ago")
    }
}

/// Both: `2026-11-30 00:00 UTC (in 5 days)`.
pub fn when(now: Instant, t: Instant) -> String {
    format!("{} ({})", utc(t), relative(now, t))
}

/// [`when`] of an RFC 3339 time as the service's views carry it (unchanged if it is not one).
pub fn when_text(now: Instant, rfc3339: &str) -> String {
    match time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339) {
        Ok(t) => when(now, t),
        Err(_) => rfc3339.to_owned(),
    }
}

/// `text` as one path segment of a URL: everything but unreserved characters
/// percent-encoded (a subject may hold `/`, `?` or spaces).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn reads_like_a_person() {
        let now = datetime!(2026-11-24 10:00:00 UTC);
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now, datetime!(2026-11-24 10:05:00 UTC)), "in 5 minutes");
        assert_eq!(relative(now, datetime!(2026-11-24 07:00:00 UTC)), "3 hours ago");
        assert_eq!(relative(now, datetime!(2026-11-27 10:00:00 UTC)), "in 3 days");
        assert_eq!(when(now, datetime!(2026-11-25 10:00:00 UTC)), "2026-11-25 10:00 UTC (in 24 hours)");
    }
}
