//! `/metrics` in OpenMetrics text (what Prometheus scrapes): parsed line by line and checked
//! against what the test did.

use std::collections::HashMap;

use serde_json::json;

use crate::api::Api;
use crate::support::http;

/// Parses the exposition format into `name{labels}` → value; every sample line must parse.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in: {line}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name: {line}"
        );
        out.insert(series.to_owned(), v);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_happened() {
    let api = Api::start(&[("KEYTURN_ALGORITHMS", "ES256,EdDSA")]).await;
    let jwks = api.url("/.well-known/jwks.json");
    let first = http().get(&jwks).send().await.expect("get");
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    for _ in 0..3 {
        assert_eq!(http().get(&jwks).header("If-None-Match", &etag).send().await.expect("get").status(), 304);
    }
    let t1 = api.mint(json!({"sub": "a", "aud": "api"})).await;
    api.mint(json!({"sub": "b", "aud": "api", "alg": "EdDSA"})).await;
    api.introspect(t1["access_token"].as_str().expect("t")).await;
    api.introspect("garbage").await;

    let res = http().get(api.url("/metrics")).send().await.expect("metrics");
    let content_type = res.headers()["content-type"].to_str().expect("ct").to_owned();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    let text = res.text().await.expect("text");
    let m = parse(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("missing {k} in:\n{text}"));
    assert_eq!(get("keyturn_keys{alg=\"ES256\",state=\"active\",custody=\"software\"}"), 1.0);
    assert_eq!(get("keyturn_keys{alg=\"EdDSA\",state=\"pending\",custody=\"software\"}"), 1.0);
    assert!(get("keyturn_seconds_until_next_rotation") > 0.0);
    assert!(get("keyturn_seconds_until_next_activation{alg=\"ES256\"}") > 0.0);
    assert_eq!(
        get(&format!("keyturn_tokens_issued_total{{kid=\"{}\",alg=\"ES256\"}}", t1["kid"].as_str().expect("kid"))),
        1.0
    );
    assert_eq!(get("keyturn_introspections_total{result=\"active\"}"), 1.0);
    assert_eq!(get("keyturn_introspections_total{result=\"inactive\"}"), 1.0);
    assert_eq!(get("keyturn_jwks_responses_total{status=\"304\"}"), 3.0);
    assert_eq!(get("keyturn_jwks_not_modified_ratio"), 0.75);
    assert_eq!(get("keyturn_revocations"), 0.0);
    assert_eq!(get("keyturn_http_requests_total{route=\"/.well-known/jwks.json\",method=\"GET\",status=\"304\"}"), 3.0);
    assert_eq!(get("keyturn_http_request_duration_seconds_count{route=\"/api/v1/tokens\"}"), 2.0);
    assert_eq!(get("keyturn_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/api/v1/tokens\"}"), 2.0);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    api.stop().await;
}
