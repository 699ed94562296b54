//! Real OAuth and JWT libraries against a real daemon, each used as its own README says:
//! express-oauth2-jwt-bearer (across an emergency rotation and an algorithm change), node's
//! openid-client and Python's authlib (discovery and metadata validation, client credentials,
//! introspection, revocation, refresh). `./scripts/test` installs them (tests/interop).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{client, free_port, keyturn_once, Daemon};
use crate::gateways::{mint, register_client, Killed};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn node_module(name: &str) {
    assert!(
        interop_dir().join("node_modules").join(name).is_dir(),
        "node's {name} is not installed: run ./scripts/test, which installs it (npm ci in tests/interop)"
    );
}

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    assert!(
        python.is_file(),
        "authlib is not installed: run ./scripts/test, which installs it into target/interop-venv"
    );
    python
}

/// An express app protected by express-oauth2-jwt-bearer, listening on 127.0.0.1.
struct ExpressApi {
    _child: Killed,
    url: String,
}

impl ExpressApi {
    fn start(issuer: &str, audience: &str) -> ExpressApi {
        node_module("express-oauth2-jwt-bearer");
        let mut child = Command::new("node")
            .current_dir(interop_dir())
            .args(["express-rs.mjs", issuer, audience])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node express-rs.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("express-rs.mjs said: {line}"));
        ExpressApi { url: format!("http://127.0.0.1:{port}/orders"), _child: Killed(child) }
    }

    /// GET /orders with the token: (status, body).
    fn get(&self, token: &str) -> (u16, Value) {
        let res = client().get(&self.url).bearer_auth(token).send().expect("express");
        (res.status().as_u16(), res.json().unwrap_or(Value::Null))
    }
}

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("access_token").to_owned()
}

#[test]
fn express_oauth2_jwt_bearer_across_an_emergency_rotation_and_an_algorithm_change() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    // One issuer URL across the restart below.
    let port = free_port().to_string();
    let issuer = format!("http://127.0.0.1:{port}");
    // A JWKS max-age and clock skew of a second each: the pending key is seasoned (every
    // caching verifier has it) two seconds after it was published, so the emergency below
    // promotes it instead of signing with a fresh key.
    let es256 = [
        ("KEYTURN_PORT", port.as_str()),
        ("KEYTURN_ISSUER", issuer.as_str()),
        ("KEYTURN_ALGORITHMS", "ES256"),
        ("KEYTURN_JWKS_MAX_AGE", "1s"),
        ("KEYTURN_CLOCK_SKEW", "1s"),
    ];
    keyturn_once(&data, &["init"], &es256);
    let key =
        keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "express"], &es256).trim().to_owned();
    let d = Daemon::start(&data, &es256, "express-1");
    let api = ExpressApi::start(&issuer, "orders-api");
    let first = mint(&d, &key, json!({"sub": "alice", "aud": "orders-api", "ttl": "30m"}));
    assert_eq!(api.get(&token(&first)), (200, json!({"sub": "alice", "alg": "ES256"})), "the JWKS is now cached");

    // Emergency rotation: the next token verifies at once, inside jose's 30 s cooldown.
    crate::support::eventually(
        "the pending key to be published for jwks_max_age + clock_skew",
        Duration::from_secs(10),
        || {
            let res = client()
                .post(format!("{}/api/v1/keys/rotate", d.url))
                .bearer_auth(&key)
                .json(&json!({"mode": "emergency", "dry_run": true}))
                .send()
                .ok()?;
            (res.json::<Value>().ok()?["fresh_key"] == false).then_some(())
        },
    );
    let res = client()
        .post(format!("{}/api/v1/keys/rotate", d.url))
        .bearer_auth(&key)
        .json(&json!({"mode": "emergency"}))
        .send()
        .expect("rotate");
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().expect("json");
    assert_eq!(rotated["fresh_key"], false, "{rotated}");
    let next = mint(&d, &key, json!({"sub": "bob", "aud": "orders-api", "ttl": "30m"}));
    assert_eq!(next["kid"], rotated["activate"]);
    assert_eq!(
        api.get(&token(&next)).0,
        200,
        "a token minted right after the emergency rotation: {:?}",
        api.get(&token(&next))
    );
    assert_eq!(api.get(&token(&first)).0, 200, "the retired key's token still verifies");

    // Algorithm change ES256 → EdDSA: the ES256 keys stay published until their tokens
    // expire, and the discovery document says so, so a verifier that discovers now still
    // accepts those tokens ("Unexpected 'alg' value" before).
    d.signal_and_wait("TERM", Duration::from_secs(15));
    let eddsa = [
        ("KEYTURN_PORT", port.as_str()),
        ("KEYTURN_ISSUER", issuer.as_str()),
        ("KEYTURN_ALGORITHMS", "EdDSA"),
        ("KEYTURN_JWKS_MAX_AGE", "1s"),
        ("KEYTURN_CLOCK_SKEW", "1s"),
    ];
    let d = Daemon::start(&data, &eddsa, "express-2");
    let discovery: Value =
        client().get(format!("{issuer}/.well-known/openid-configuration")).send().expect("get").json().expect("json");
    assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["EdDSA", "ES256"]));
    let fresh = ExpressApi::start(&issuer, "orders-api");
    let new = mint(&d, &key, json!({"sub": "carol", "aud": "orders-api"}));
    assert_eq!(fresh.get(&token(&new)), (200, json!({"sub": "carol", "alg": "EdDSA"})));
    for (what, t) in [("before the rotation", &first), ("after the rotation", &next)] {
        assert_eq!(fresh.get(&token(t)).0, 200, "an ES256 token from {what}: {:?}", fresh.get(&token(t)));
        assert_eq!(api.get(&token(t)).0, 200, "the long-running verifier, ES256 token from {what}");
    }
    // And it still refuses what it should.
    let other = mint(&d, &key, json!({"sub": "mallory", "aud": "billing"}));
    assert_eq!(fresh.get(&token(&other)).0, 401, "another audience");
}

/// What the OAuth library tests start with: openid-client and authlib at hand, a daemon with
/// `env` on a new installation, and an admin API key of it.
fn oauth_libraries(env: &[(&str, &str)], name: &str) -> (tempfile::TempDir, PathBuf, String, Daemon) {
    node_module("openid-client");
    let python = python();
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &[]);
    let key = keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "libs"], &[]).trim().to_owned();
    let d = Daemon::start(&data, env, name);
    (root, python, key, d)
}

#[test]
fn openid_client_and_authlib_discover_and_use_every_endpoint() {
    let (_root, python, key, d) = oauth_libraries(&[], "libraries");
    let (id, secret) = register_client(&d, &key, &["orders:read", "orders:write"], &["orders-api"]);
    let minted = mint(&d, &key, json!({"sub": "alice", "aud": "orders-api", "refresh": true}));
    let refresh = minted["refresh_token"].as_str().expect("refresh token");

    let out = Command::new("node")
        .current_dir(interop_dir())
        .args(["oauth-client.mjs", &d.url, &id, &secret, "orders:read", refresh])
        .output()
        .expect("node oauth-client.mjs");
    assert!(out.status.success(), "openid-client: {}", String::from_utf8_lossy(&out.stderr));
    let node: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(node["oidc_discovery"], format!("{}/oauth/token", d.url));
    assert_eq!(node["oauth2_discovery"], format!("{}/oauth/introspect", d.url));
    assert_eq!(node["scope"], "orders:read");
    assert_eq!(node["introspected"]["active"], true, "{node}");
    assert_eq!(node["introspected"]["client_id"], id.as_str());
    assert_eq!(node["after_revocation"]["active"], false, "{node}");
    assert!(node["refreshed"]["access_token"].as_str().is_some_and(|t| t.contains('.')), "{node}");
    assert!(node["refreshed"]["refresh_token"].as_str().is_some_and(|t| t.starts_with("ktr_") && t != refresh));

    let out = Command::new(python)
        .current_dir(interop_dir())
        .args(["oauth.py", &d.url, &id, &secret, "orders:read orders:write"])
        .output()
        .expect("python oauth.py");
    assert!(out.status.success(), "authlib: {}", String::from_utf8_lossy(&out.stderr));
    let py: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(py["rfc8414_valid"], true);
    // keyturn issues no ID tokens and has no authorization endpoint: the document at the
    // OpenID path does not claim to be an OpenID Provider's, and the validator says so.
    assert_eq!(py["openid_provider_valid"], false, "{py}");
    let op_only = ["authorization_endpoint", "subject_types_supported"];
    assert!(py["openid_provider_error"].as_str().is_some_and(|e| op_only.iter().any(|f| e.contains(f))), "{py}");
    assert_eq!(py["token"]["token_type"], "Bearer");
    assert_eq!(py["token"]["scope"], "orders:read orders:write");
    assert_eq!(py["introspected"]["active"], true, "{py}");
    assert_eq!(py["revoke_status"], 200);
    assert_eq!(py["after_revocation"]["active"], false, "{py}");
}

/// Clients without a secret, each library as its own documentation shows: openid-client with
/// private_key_jwt (ES256) and DPoP (server nonces on, which it takes up by itself) through
/// keyturn's `/auth/verify`; authlib with private_key_jwt (RS256, the service registering its
/// own public key through the Admin API).
#[test]
fn openid_client_and_authlib_authenticate_with_private_key_jwt_and_openid_client_binds_with_dpop() {
    use base64::Engine as _;
    let (root, python, key, d) = oauth_libraries(&[("KEYTURN_USE_DPOP_NONCE", "true")], "libraries-secretless");
    let (pkcs8, mut jwk) = crate::support::p256_key_pkcs8();
    jwk["kid"] = Value::from("svc-2026");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&pkcs8)
    );
    let pem_file = root.path().join("client-key.pem");
    std::fs::write(&pem_file, pem).expect("write");
    let pem_file = pem_file.to_str().expect("path");
    let body = json!({"name": "svc", "audiences": ["orders-api"], "scopes": ["orders:read"], "jwks": {"keys": [jwk]}});
    let created: Value = client()
        .post(format!("{}/api/v1/clients", d.url))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .expect("register")
        .json()
        .expect("json");
    let id = created["client_id"].as_str().expect("client_id").to_owned();

    let out = Command::new("node")
        .current_dir(interop_dir())
        .args(["secretless.mjs", &d.url, &id, pem_file, "svc-2026"])
        .output()
        .expect("node secretless.mjs");
    assert!(out.status.success(), "openid-client: {}", String::from_utf8_lossy(&out.stderr));
    let node: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(node["token_type"], "dpop", "openid-client lower-cases it: {node}");
    assert_eq!(node["introspected"]["active"], true, "{node}");
    assert_eq!(node["introspected"]["token_type"], "DPoP", "{node}");
    assert!(node["introspected"]["cnf"]["jkt"].is_string(), "{node}");
    assert_eq!(node["verify_status"], 200, "{node}");
    assert_eq!(node["verify_subject"], id.as_str(), "{node}");
    assert_eq!(node["copied_status"], 401, "{node}");
    assert_eq!(node["after_revocation"], false, "{node}");

    let out = Command::new(python)
        .current_dir(interop_dir())
        .args(["secretless.py", &d.url, &key])
        .output()
        .expect("python secretless.py");
    assert!(out.status.success(), "authlib: {}", String::from_utf8_lossy(&out.stderr));
    let py: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(py["advertised"], true);
    assert_eq!(py["token"]["token_type"], "Bearer", "{py}");
    assert_eq!(py["introspected"]["active"], true, "{py}");
    assert_eq!(py["introspected"]["client_id"], py["client_id"], "{py}");
    assert_eq!(py["revoke_status"], 200);
    assert_eq!(py["after_revocation"]["active"], false, "{py}");
}
