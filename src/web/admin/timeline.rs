//! The key timeline as a picture: one lane per algorithm, one row per key (labelled with the
//! start of its kid) through its states (pending → active → retired), coloured by state, the
//! planned future dashed, a "now" line, and the next rotation marked. A state that lasted a
//! moment (quick rotations) is still drawn wide enough to see and point at. Geometry is computed here; `templates/admin/_timeline.html`
//! draws it as inline SVG (no JavaScript, colours from the stylesheet, so light and dark).

use crate::clock::Instant;
use crate::keys::KeyState;
use crate::service::rotation::KeyView;

/// Width of the drawing area in SVG units (the SVG scales to the page).
const WIDTH: f64 = 1000.0;
/// Left margin for the row labels (algorithm and kid).
const LABEL: f64 = 120.0;
/// The narrowest piece drawn, so a state that lasted seconds is not a hair.
const MIN_PIECE: f64 = 5.0;
/// One key's row: its bar and the gap below it.
const ROW: f64 = 20.0;
const BAR: f64 = 15.0;
/// Space between algorithm lanes.
const GAP: f64 = 8.0;
const TOP: f64 = 22.0;

/// One coloured piece of a key's bar.
pub struct Segment {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    /// `pending`, `active` or `retired`.
    pub state: &'static str,
    /// Planned, not yet happened: drawn dashed.
    pub planned: bool,
    /// The tooltip: kid, state and times.
    pub title: String,
}

pub struct Lane {
    pub label: String,
    pub y: String,
}

/// A vertical marker (now, next rotation).
pub struct Marker {
    pub x: String,
    pub label: String,
    pub class: &'static str,
}

pub struct Timeline {
    pub height: String,
    pub lanes: Vec<Lane>,
    pub segments: Vec<Segment>,
    pub markers: Vec<Marker>,
    /// How many keys have a bar (every published key has one).
    pub bars: usize,
    pub from: String,
    pub to: String,
}

fn num(v: f64) -> String {
    format!("{v:.1}")
}

/// Draws `keys` (as the Keys page lists them) around `now`, from `days_back` days ago to
/// `days_ahead` days ahead (widened to show the next rotation).
pub fn draw(
    keys: &[KeyView],
    algorithms: &[String],
    now: Instant,
    next_fire: Option<Instant>,
    days_back: i64,
    days_ahead: i64,
) -> Timeline {
    let from = now - time::Duration::days(days_back);
    let mut to = now + time::Duration::days(days_ahead);
    if let Some(f) = next_fire.filter(|f| *f > to && *f < now + time::Duration::days(60)) {
        to = f + time::Duration::days(1);
    }
    let span = (to - from).as_seconds_f64().max(1.0);
    let x = |t: Instant| LABEL + (WIDTH - LABEL) * ((t - from).as_seconds_f64() / span).clamp(0.0, 1.0);
    let mut lanes: Vec<String> = algorithms.to_vec();
    for k in keys {
        if !lanes.contains(&k.alg.to_string()) && k.state.is_published() {
            lanes.push(k.alg.to_string());
        }
    }
    // Each key that shows gets a row of its own in its algorithm's lane (keys of one
    // algorithm overlap in time: pending, active and retired at once).
    let mut drawn: Vec<(&KeyView, Vec<Piece>)> = Vec::new();
    for k in keys {
        if !lanes.contains(&k.alg.to_string()) {
            continue;
        }
        let visible: Vec<Piece> =
            pieces(k, now, to).into_iter().filter(|(_, a, b, _)| *b > from && *a < to && b > a).collect();
        if !visible.is_empty() {
            drawn.push((k, visible));
        }
    }
    drawn.sort_by_key(|(k, _)| (lanes.iter().position(|l| *l == k.alg.to_string()), k.published_at));
    let rows_of = |alg: &str| drawn.iter().filter(|(k, _)| k.alg.to_string() == alg).count().max(1);
    let mut lane_top = Vec::new();
    let mut y = TOP;
    for l in &lanes {
        lane_top.push(y);
        y += ROW * rows_of(l) as f64 + GAP;
    }
    let height = y;
    let mut segments = Vec::new();
    let mut bars = 0;
    let mut row_in_lane: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut row_labels = Vec::new();
    for (k, visible) in &drawn {
        let alg = k.alg.to_string();
        let lane = lanes.iter().position(|l| *l == alg).unwrap_or(0);
        let row = row_in_lane.entry(alg.clone()).or_insert(0);
        let y = lane_top[lane] + ROW * *row as f64;
        let kid: String = k.kid.chars().take(6).collect();
        row_labels.push(Lane {
            label: if *row == 0 { format!("{alg} {kid}…") } else { format!("{kid}…") },
            y: num(y + BAR - 3.0),
        });
        *row += 1;
        if k.state.is_published() {
            bars += 1;
        }
        let mut drawn_to = LABEL;
        for &(state, a, b, planned) in visible {
            // Pieces of a key follow each other: one widened to be seen pushes the next on.
            let x0 = x(a).max(drawn_to).min(WIDTH - MIN_PIECE);
            let x1 = x(b).max(x0 + MIN_PIECE).min(WIDTH);
            drawn_to = x1;
            segments.push(Segment {
                x: num(x0),
                y: num(y),
                w: num(x1 - x0),
                h: num(BAR),
                state,
                planned,
                title: format!(
                    "{alg} key {} — {}{state} from {} to {}",
                    k.kid,
                    if planned { "planned: " } else { "" },
                    super::format::utc(a),
                    super::format::utc(b)
                ),
            });
        }
    }
    let mut markers = vec![Marker { x: num(x(now)), label: "now".into(), class: "now" }];
    if let Some(f) = next_fire.filter(|f| *f > now && *f < to) {
        markers.push(Marker { x: num(x(f)), label: "next rotation".into(), class: "next" });
    }
    // A pending key whose activation is not the next rotation (the publish lead deferred it,
    // or a graceful rotation was asked for) gets its own mark.
    let mut activations: Vec<Instant> = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending)
        .filter_map(|k| k.next.as_ref().filter(|n| n.event == "activate").and_then(|n| n.at))
        .filter(|a| *a > now && *a < to && next_fire.is_none_or(|f| (*a - f).abs() > time::Duration::minutes(1)))
        .collect();
    activations.sort();
    activations.dedup();
    for a in activations {
        markers.push(Marker { x: num(x(a)), label: "activation".into(), class: "next" });
    }
    Timeline {
        height: num(height),
        // Every row is labelled; a lane without a key to show names its algorithm.
        lanes: lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| !drawn.iter().any(|(k, _)| k.alg.to_string() == **l))
            .map(|(i, l)| Lane { label: l.clone(), y: num(lane_top[i] + BAR - 3.0) })
            .chain(row_labels)
            .collect(),
        segments,
        markers,
        bars,
        from: super::format::utc(from),
        to: super::format::utc(to),
    }
}

/// (state, from, to, planned)
type Piece = (&'static str, Instant, Instant, bool);

/// A key's states as spans of time: what happened up to `now`, then what is planned (from
/// its next event) up to `to`.
fn pieces(k: &KeyView, now: Instant, to: Instant) -> Vec<Piece> {
    let planned_end = k.next.as_ref().and_then(|n| n.at);
    let ended = k.expired_at.or(k.revoked_at);
    let mut out: Vec<Piece> = Vec::new();
    match (k.state, k.activated_at.or(ended)) {
        (_, Some(end)) => out.push(("pending", k.published_at, end, false)),
        (KeyState::Pending, None) => {
            out.push(("pending", k.published_at, now, false));
            if let Some(p) = planned_end {
                out.push(("pending", now, p, true));
                out.push(("active", p, p.max(to), true));
            }
        }
        _ => {}
    }
    if let Some(a) = k.activated_at {
        match k.retired_at.or(ended) {
            Some(end) => out.push(("active", a, end, false)),
            None => {
                out.push(("active", a, now, false));
                if let Some(p) = planned_end {
                    out.push(("active", now, p, true));
                    out.push(("retired", p, p.max(to), true));
                }
            }
        }
    }
    if let Some(r) = k.retired_at {
        match ended {
            Some(end) => out.push(("retired", r, end, false)),
            None => {
                out.push(("retired", r, now, false));
                if let Some(p) = planned_end {
                    out.push(("retired", now, p, true));
                }
            }
        }
    }
    out
}
