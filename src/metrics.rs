//! Counters and histograms for `/metrics`, rendered in Prometheus' text format. Hand-made
//! and small: labelled counters in a map, latency histograms with fixed buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default, Debug, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    total: u64,
    sum: f64,
}

/// Everything keyturn counts while it runs (counters start at zero with the process).
#[derive(Default, Debug)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Adds one to counter `name` with the already-formatted `labels` (`a="x",b="y"`).
    pub fn inc(&self, name: &'static str, labels: String) {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner).entry((name, labels)).or_insert(0) += 1;
    }

    /// Counts an HTTP request: route template, method, status, and its latency.
    pub fn http(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.inc(
            "keyturn_http_requests_total",
            format!("route=\"{}\",method=\"{method}\",status=\"{status}\"", label(route)),
        );
        let secs = took.as_secs_f64();
        let mut hist = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let h = hist.entry(route.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.total += 1;
        h.sum += secs;
    }

    /// A counter's current value.
    pub fn get(&self, name: &'static str, labels: &str) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(name, labels.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The counters and histograms in text format, with `# TYPE` lines.
    pub fn render(&self, out: &mut String) {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut last = "";
        for ((name, labels), value) in &counters {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
        let hist = self.latency.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if !hist.is_empty() {
            let _ = writeln!(out, "# HELP keyturn_http_request_duration_seconds Time to answer a request, by route.");
            let _ = writeln!(out, "# TYPE keyturn_http_request_duration_seconds histogram");
        }
        for (route, h) in &hist {
            let r = label(route);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "keyturn_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ =
                writeln!(out, "keyturn_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}", h.total);
            let _ = writeln!(out, "keyturn_http_request_duration_seconds_sum{{route=\"{r}\"}} {}", h.sum);
            let _ = writeln!(out, "keyturn_http_request_duration_seconds_count{{route=\"{r}\"}} {}", h.total);
        }
    }
}

/// Writes one gauge with its `# TYPE` line.
pub fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.inc("keyturn_x_total", "a=\"1\"".into());
        m.inc("keyturn_x_total", "a=\"1\"".into());
        m.http("/x", "GET", 200, Duration::from_micros(700));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("# TYPE keyturn_x_total counter\nkeyturn_x_total{a=\"1\"} 2\n"), "{out}");
        assert!(out.contains("keyturn_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.0005\"} 0"), "{out}");
        assert!(out.contains("keyturn_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.001\"} 1"), "{out}");
        assert!(out.contains("keyturn_http_request_duration_seconds_count{route=\"/x\"} 1"), "{out}");
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
