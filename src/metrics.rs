//! What keyturn exports at `/metrics`: every metric declared once here, with its help text and
//! typed labels, through prometheus-client (OpenMetrics text). Counters and the latency
//! histogram are counted where things happen, through the methods below; the gauges describe
//! state and are set from a [`State`] when `/metrics` is scraped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use crate::keys::{Algorithm, Custody, KeyId, KeyState};

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kid: String,
    alg: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    alg: &'static str,
    state: &'static str,
    custody: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgLabels {
    alg: &'static str,
}

/// A gauge whose one sample is present only while it has a value (a schedule that never
/// fires again has no "seconds until").
#[derive(Clone, Debug, Default)]
struct Optional {
    value: Gauge,
    present: Arc<AtomicBool>,
}

impl Optional {
    fn set(&self, v: Option<i64>) {
        self.value.set(v.unwrap_or_default());
        self.present.store(v.is_some(), Ordering::Relaxed);
    }
}

impl EncodeMetric for Optional {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.value.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.value.metric_type()
    }

    fn is_empty(&self) -> bool {
        !self.present.load(Ordering::Relaxed)
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The state the gauges show, gathered by the service at scrape time.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// How many keys are in each state, per algorithm and custody.
    pub keys: Vec<(Algorithm, KeyState, Custody, u64)>,
    pub until_next_rotation: Option<Duration>,
    /// Per algorithm: how long until its pending key starts signing.
    pub until_next_activation: Vec<(Algorithm, Duration)>,
    pub revocations: u64,
    /// The size of the JWKS served now.
    pub jwks_bytes: u64,
    /// Whether the database answered the reads these figures needed (when it did not, the
    /// figures only the database knows are left out).
    pub database_up: bool,
    /// A cluster node: how long since its state last matched the database's.
    pub revocation_lag: Option<Duration>,
}

/// Every metric keyturn exports, counted from the start of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tokens_issued: Family<TokenLabels, Counter>,
    introspections: Family<ResultLabels, Counter>,
    jwks_responses: Family<StatusLabels, Counter>,
    http_requests: Family<RequestLabels, Counter>,
    password_hashing: Counter,
    connections_open: Gauge,
    connections_refused: Family<LimitLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    keys: Family<KeyLabels, Gauge>,
    until_next_rotation: Optional,
    until_next_activation: Family<AlgLabels, Gauge>,
    revocations: Gauge,
    jwks_not_modified_ratio: Gauge<f64, AtomicU64>,
    jwks_bytes: Gauge,
    database_up: Gauge,
    revocation_lag: Gauge<f64, AtomicU64>,
    auth_throttled: Family<CredentialLabels, Counter>,
    forward_auth: Family<ResultLabels, Counter>,
}

/// Registers `metric` under `name` with its help text, and hands it back to be counted.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let r = &mut Registry::default();
        Metrics {
            tokens_issued: register(
                r,
                "keyturn_tokens_issued",
                "Tokens issued and recorded, by signing key",
                Family::default(),
            ),
            introspections: register(
                r,
                "keyturn_introspections",
                "Introspection answers, active or inactive",
                Family::default(),
            ),
            jwks_responses: register(
                r,
                "keyturn_jwks_responses",
                "JWKS responses, by status (200 or 304)",
                Family::default(),
            ),
            http_requests: register(
                r,
                "keyturn_http_requests",
                "Requests answered, by route, method and status",
                Family::default(),
            ),
            password_hashing: register(
                r,
                "keyturn_password_hashing",
                "Argon2 password hashes computed or verified (setup, sign-in, password changes)",
                Counter::default(),
            ),
            connections_open: register(r, "keyturn_connections_open", "Open client connections", Gauge::default()),
            connections_refused: register(
                r,
                "keyturn_connections_refused",
                "Connections closed on arrival, by the limit they were over",
                Family::default(),
            ),
            http_duration: register(
                r,
                "keyturn_http_request_duration_seconds",
                "Time to answer a request, by route",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            keys: register(r, "keyturn_keys", "Signing keys by algorithm, state and custody (where the private half lives)", Family::default()),
            until_next_rotation: register(
                r,
                "keyturn_seconds_until_next_rotation",
                "Seconds until the rotation schedule next fires",
                Optional::default(),
            ),
            until_next_activation: register(
                r,
                "keyturn_seconds_until_next_activation",
                "Seconds until the pending key of each algorithm starts signing",
                Family::default(),
            ),
            revocations: register(r, "keyturn_revocations", "Revocations in the in-memory index", Gauge::default()),
            jwks_not_modified_ratio: register(
                r,
                "keyturn_jwks_not_modified_ratio",
                "Share of JWKS requests answered 304 Not Modified",
                Gauge::default(),
            ),
            jwks_bytes: register(r, "keyturn_jwks_bytes", "Size of the JWKS served now, in bytes", Gauge::default()),
            database_up: register(
                r,
                "keyturn_database_up",
                "1 when the database answered this scrape's reads within database_timeout, else 0",
                Gauge::default(),
            ),
            revocation_lag: register(
                r,
                "keyturn_revocation_lag_seconds",
                "Seconds since this node last heard from its database (PostgreSQL; 0 on SQLite): past max_revocation_lag it answers introspection and /auth/verify with 503",
                Gauge::default(),
            ),
            auth_throttled: register(
                r,
                "keyturn_auth_throttled",
                "Requests refused with 429 because their address failed authentication too often, by credential (client or api_key)",
                Family::default(),
            ),
            forward_auth: register(
                r,
                "keyturn_forward_auth",
                "Forward-auth answers (/auth/verify): allowed (200), invalid_token (401), insufficient_scope (403)",
                Family::default(),
            ),
            registry: std::mem::take(r),
        }
    }
}

fn whole_seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A token was issued (and recorded) under `kid`.
    pub fn token_issued(&self, kid: &KeyId, alg: Algorithm) {
        self.tokens_issued.get_or_create(&TokenLabels { kid: kid.to_string(), alg: alg.as_str() }).inc();
    }

    /// An introspection was answered.
    pub fn introspected(&self, active: bool) {
        let result = if active { "active" } else { "inactive" };
        self.introspections.get_or_create(&ResultLabels { result }).inc();
    }

    /// Introspection answers since the process started: (active, inactive).
    pub fn introspections(&self) -> (u64, u64) {
        let count = |result| self.introspections.get_or_create(&ResultLabels { result }).get();
        (count("active"), count("inactive"))
    }

    /// The JWKS was served in full, or answered 304.
    pub fn jwks_answered(&self, not_modified: bool) {
        self.jwks_responses.get_or_create(&StatusLabels { status: if not_modified { 304 } else { 200 } }).inc();
    }

    /// A request was refused with 429 after too many failed authentications from its address.
    pub fn auth_throttled(&self, credential: &'static str) {
        self.auth_throttled.get_or_create(&CredentialLabels { credential }).inc();
    }

    /// A forward-auth request was answered.
    pub fn forward_auth(&self, result: &'static str) {
        self.forward_auth.get_or_create(&ResultLabels { result }).inc();
    }

    /// One argon2 computation was done.
    pub fn password_hashed(&self) {
        self.password_hashing.inc();
    }

    /// `open` client connections are open now.
    pub fn connections_open(&self, open: usize) {
        self.connections_open.set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// A connection was closed on arrival, over `limit` (the setting's name).
    pub fn connection_refused(&self, limit: &'static str) {
        self.connections_refused.get_or_create(&LimitLabels { limit }).inc();
    }

    /// A request was answered: its route template, method, status and latency.
    pub fn http(&self, route: &str, method: &'static str, status: u16, took: Duration) {
        let route = route.to_owned();
        self.http_duration.get_or_create(&RouteLabels { route: route.clone() }).observe(took.as_secs_f64());
        self.http_requests.get_or_create(&RequestLabels { route, method, status }).inc();
    }

    /// Every metric in OpenMetrics text, the gauges set from `state` first.
    pub fn render(&self, state: &State) -> String {
        self.keys.clear();
        for (alg, key_state, custody, n) in &state.keys {
            let labels = KeyLabels { alg: alg.as_str(), state: key_state.as_str(), custody: custody.as_str() };
            self.keys.get_or_create(&labels).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.until_next_rotation.set(state.until_next_rotation.map(whole_seconds));
        self.until_next_activation.clear();
        for (alg, d) in &state.until_next_activation {
            self.until_next_activation.get_or_create(&AlgLabels { alg: alg.as_str() }).set(whole_seconds(*d));
        }
        self.revocations.set(i64::try_from(state.revocations).unwrap_or(i64::MAX));
        self.jwks_bytes.set(i64::try_from(state.jwks_bytes).unwrap_or(i64::MAX));
        self.database_up.set(i64::from(state.database_up));
        self.revocation_lag.set(state.revocation_lag.map_or(0.0, |d| d.as_secs_f64()));
        let count = |status| self.jwks_responses.get_or_create(&StatusLabels { status }).get();
        let (ok, not_modified) = (count(200), count(304));
        let answered = ok + not_modified;
        self.jwks_not_modified_ratio.set(if answered == 0 { 0.0 } else { not_modified as f64 / answered as f64 });
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding the metrics failed: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        let kid = KeyId::new("k1");
        m.token_issued(&kid, Algorithm::ES256);
        m.token_issued(&kid, Algorithm::ES256);
        m.http("/x", "GET", 200, Duration::from_micros(700));
        m.http("/x", "GET", 200, Duration::from_micros(300));
        m.http("/x", "POST", 400, Duration::from_micros(300));
        m.jwks_answered(false);
        m.jwks_answered(true);
        m.jwks_answered(true);
        m.jwks_answered(true);
        let state = State {
            keys: vec![(Algorithm::ES256, KeyState::Active, Custody::Software, 1)],
            until_next_rotation: Some(Duration::from_secs(90)),
            until_next_activation: vec![(Algorithm::ES256, Duration::from_secs(30))],
            revocations: 2,
            jwks_bytes: 2048,
            database_up: true,
            revocation_lag: Some(Duration::from_millis(1500)),
        };
        let out = m.render(&state);
        for want in [
            "# HELP keyturn_tokens_issued Tokens issued and recorded, by signing key.\n",
            "keyturn_tokens_issued_total{kid=\"k1\",alg=\"ES256\"} 2\n",
            "keyturn_database_up 1\n",
            "keyturn_revocation_lag_seconds 1.5\n",
            "keyturn_http_request_duration_seconds_bucket{le=\"0.0005\",route=\"/x\"} 2\n",
            "keyturn_http_request_duration_seconds_bucket{le=\"0.001\",route=\"/x\"} 3\n",
            "keyturn_http_request_duration_seconds_count{route=\"/x\"} 3\n",
            "keyturn_http_requests_total{route=\"/x\",method=\"GET\",status=\"200\"} 2\n",
            "keyturn_http_requests_total{route=\"/x\",method=\"POST\",status=\"400\"} 1\n",
            "keyturn_keys{alg=\"ES256\",state=\"active\",custody=\"software\"} 1\n",
            "keyturn_seconds_until_next_rotation 90\n",
            "keyturn_seconds_until_next_activation{alg=\"ES256\"} 30\n",
            "keyturn_revocations 2\n",
            "keyturn_jwks_not_modified_ratio 0.75\n",
            "# EOF\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        // A gauge without a value has no sample.
        let out = m.render(&State::default());
        assert!(!out.contains("keyturn_seconds_until_next_rotation"), "not even its HELP: {out}");
    }
}
