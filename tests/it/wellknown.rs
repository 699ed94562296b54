//! Discovery documents and health probes.

use crate::support::{self, fake_clock, get_json, http};

#[tokio::test(flavor = "multi_thread")]
async fn discovery_documents_name_issuer_jwks_and_algorithms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("KEYTURN_ISSUER", "https://auth.example.test/"), ("KEYTURN_ALGORITHMS", "EdDSA,ES256")];
    let server = support::start(dir.path(), &env, fake_clock()).await;
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let url = format!("{}{path}", server.url());
        let res = http().get(&url).send().await.expect("get");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert!(res.headers().contains_key("etag"));
        let doc: serde_json::Value = res.json().await.expect("json");
        assert_eq!(doc["issuer"], "https://auth.example.test", "{path}");
        assert_eq!(doc["jwks_uri"], "https://auth.example.test/.well-known/jwks.json", "{path}");
        assert_eq!(doc["token_endpoint"], "https://auth.example.test/oauth/token", "{path}");
        assert_eq!(doc["introspection_endpoint"], "https://auth.example.test/oauth/introspect", "{path}");
        assert_eq!(doc["revocation_endpoint"], "https://auth.example.test/oauth/revoke", "{path}");
    }
    let oidc = get_json(&format!("{}/.well-known/openid-configuration", server.url())).await;
    assert_eq!(oidc["id_token_signing_alg_values_supported"], serde_json::json!(["EdDSA", "ES256"]));
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = support::start(dir.path(), &[], fake_clock()).await;
    assert_eq!(get_json(&format!("{}/healthz", server.url())).await["status"], "ok");
    assert_eq!(get_json(&format!("{}/readyz", server.url())).await["status"], "ready");
    let missing = http().get(format!("{}/nope", server.url())).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.expect("JSON error");
    assert_eq!(body["error"], "not_found");
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn landing_page_lists_published_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = support::start(dir.path(), &[("KEYTURN_ALGORITHMS", "ES256,EdDSA")], fake_clock()).await;
    let res = http().get(format!("{}/", server.url())).send().await.expect("get");
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = res.text().await.expect("html");
    for key in &server.service.published().keys {
        assert!(html.contains(key.kid.as_str()), "page lists {}", key.kid);
    }
    assert!(!html.contains("<script"), "no script on the page");
    let css = http().get(format!("{}/static/keyturn.css", server.url())).send().await.expect("get");
    assert!(css.headers()["content-type"].to_str().expect("type").starts_with("text/css"));
    server.stop().await.expect("stop");
}
