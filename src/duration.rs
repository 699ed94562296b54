//! Durations as people write them in settings, forms and the API (`300s`, `15m`, `1h30m`),
//! and the shortest way to write one back.

use std::time::Duration;

/// Parses `300s`, `15m`, `7d`, `1h30m`: whole numbers with units s, m, h, d, w.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let s = v.trim();
    if s.is_empty() {
        return Err("empty duration: write it like 300s, 15m, 12h or 7d".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(format!("'{s}' is not a duration: write it like 300s, 15m, 12h or 7d")),
        };
        let n: u64 =
            digits.parse().map_err(|_| format!("'{s}' is not a duration: a number must come before each unit"))?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .filter(|t| *t <= 100 * 365 * 86_400)
            .ok_or_else(|| format!("'{s}' is too long (at most 100 years)"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!("'{s}' needs a unit: write {s}s for seconds"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the largest unit that divides it: `900s` → `15m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= size && s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "5", "5x", "m", "-5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(604_800)), "1w");
    }
}
