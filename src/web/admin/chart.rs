//! Activity as a picture: tokens issued and revocations made per hour over the last day (or
//! per day over the last month), as paired bars drawn by `templates/admin/_chart.html` in
//! inline SVG. Each bar is titled with its period and count.

use crate::service::overview::Activity;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 120.0;
const BOTTOM: f64 = 16.0;

pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    /// `issued` or `revoked`.
    pub series: &'static str,
    pub title: String,
}

pub struct Chart {
    pub caption: String,
    pub bars: Vec<Bar>,
    pub max: u64,
    pub issued: u64,
    pub revoked: u64,
    /// Labels under the first, middle and last periods.
    pub ticks: Vec<(String, String)>,
}

fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// Draws `periods` (oldest first); `label` names a period for titles and ticks.
pub fn draw(caption: &str, periods: &[Activity], label: impl Fn(&Activity) -> String) -> Chart {
    let max = periods.iter().map(|p| p.issued.max(p.revoked)).max().unwrap_or(0).max(1);
    let slot = WIDTH / periods.len().max(1) as f64;
    let w = (slot * 0.42).max(1.0);
    let scale = |n: u64| (HEIGHT - BOTTOM - 4.0) * n as f64 / max as f64;
    let mut bars = Vec::new();
    for (i, p) in periods.iter().enumerate() {
        for (series, n, offset) in [("issued", p.issued, 0.05), ("revoked", p.revoked, 0.5)] {
            let h = scale(n);
            bars.push(Bar {
                x: num(slot * i as f64 + slot * offset),
                y: num(HEIGHT - BOTTOM - h),
                w: num(w),
                h: num(h),
                series,
                title: format!(
                    "{}: {n} {}",
                    label(p),
                    if series == "issued" { "tokens issued" } else { "revocations" }
                ),
            });
        }
    }
    let n = periods.len();
    let ticks = [0, n / 2, n.saturating_sub(1)]
        .iter()
        .filter_map(|&i| periods.get(i).map(|p| (num(slot * i as f64 + slot / 2.0), label(p))))
        .collect();
    Chart {
        caption: caption.to_owned(),
        bars,
        max,
        issued: periods.iter().map(|p| p.issued).sum(),
        revoked: periods.iter().map(|p| p.revoked).sum(),
        ticks,
    }
}
