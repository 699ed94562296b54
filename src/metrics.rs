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
/// Keyed so that counting an already-seen series allocates nothing: this runs on every
/// request, including the JWKS path measured against nginx.
#[derive(Default, Debug)]
pub struct Metrics {
    /// name → formatted labels (`a="x",b="y"`) → value.
    counters: Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>,
    /// route template → its request counts and latency.
    http: Mutex<BTreeMap<String, RouteStats>>,
}

/// Requests to one route: counts by (method, status), and one latency histogram.
#[derive(Default, Debug, Clone)]
struct RouteStats {
    requests: BTreeMap<(String, u16), u64>,
    latency: Histogram,
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Adds one to counter `name` with the already-formatted `labels` (`a="x",b="y"`).
    pub fn inc(&self, name: &'static str, labels: &str) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let series = counters.entry(name).or_default();
        match series.get_mut(labels) {
            Some(v) => *v += 1,
            None => {
                series.insert(labels.to_owned(), 1);
            }
        }
    }

    /// Counts an HTTP request: route template, method, status, and its latency.
    pub fn http(&self, route: &str, method: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = match http.get_mut(route) {
            Some(stats) => stats,
            None => http.entry(route.to_owned()).or_default(),
        };
        match stats.requests.iter_mut().find(|((m, s), _)| m == method && *s == status) {
            Some((_, n)) => *n += 1,
            None => {
                stats.requests.insert((method.to_owned(), status), 1);
            }
        }
        let h = &mut stats.latency;
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
            .get(name)
            .and_then(|series| series.get(labels))
            .copied()
            .unwrap_or(0)
    }

    /// The counters and histograms in text format, with `# TYPE` lines.
    pub fn render(&self, out: &mut String) {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let http = self.http.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (name, series) in &counters {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        if http.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP keyturn_http_requests_total Requests answered, by route, method and status.");
        let _ = writeln!(out, "# TYPE keyturn_http_requests_total counter");
        for (route, stats) in &http {
            let r = label(route);
            for ((method, status), n) in &stats.requests {
                let _ = writeln!(
                    out,
                    "keyturn_http_requests_total{{route=\"{r}\",method=\"{}\",status=\"{status}\"}} {n}",
                    label(method)
                );
            }
        }
        let _ = writeln!(out, "# HELP keyturn_http_request_duration_seconds Time to answer a request, by route.");
        let _ = writeln!(out, "# TYPE keyturn_http_request_duration_seconds histogram");
        for (route, stats) in &http {
            let (r, h) = (label(route), &stats.latency);
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
        m.inc("keyturn_x_total", "a=\"1\"");
        m.inc("keyturn_x_total", "a=\"1\"");
        m.http("/x", "GET", 200, Duration::from_micros(700));
        m.http("/x", "GET", 200, Duration::from_micros(300));
        m.http("/x", "POST", 400, Duration::from_micros(300));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("# TYPE keyturn_x_total counter\nkeyturn_x_total{a=\"1\"} 2\n"), "{out}");
        assert!(out.contains("keyturn_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.0005\"} 2"), "{out}");
        assert!(out.contains("keyturn_http_request_duration_seconds_bucket{route=\"/x\",le=\"0.001\"} 3"), "{out}");
        assert!(out.contains("keyturn_http_request_duration_seconds_count{route=\"/x\"} 3"), "{out}");
        assert!(out.contains("keyturn_http_requests_total{route=\"/x\",method=\"GET\",status=\"200\"} 2\n"), "{out}");
        assert!(out.contains("keyturn_http_requests_total{route=\"/x\",method=\"POST\",status=\"400\"} 1\n"), "{out}");
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
