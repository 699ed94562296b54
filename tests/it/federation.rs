//! Workload identity federation against the real binary: a second keyturn stands in for a
//! Kubernetes cluster's service-account issuer (its own issuer URL, discovery document and
//! JWKS; tokens with `sub` `system:serviceaccount:<ns>:<name>` and the audience the cluster
//! is told to put in them). keyturn trusts it, maps a subject to a client that has no
//! credential at all, and the workload exchanges its own token — RFC 7523's `jwt-bearer`
//! grant or RFC 8693 token exchange — for an access token of that client. Every refusal
//! (an untrusted issuer, an unmapped subject, another audience, a forged signature) is
//! `invalid_grant` and issues nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{client, Daemon};
use crate::support::{eventually, keyturn_ok};

const SERVICE_ACCOUNT: &str = "system:serviceaccount:ci:builder";
const AUDIENCE: &str = "keyturn-main";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An API key of `role` on the installation at `data` (`env`: its backend).
fn api_key(data: &std::path::Path, role: &str, env: &[(&str, &str)]) -> String {
    let out = keyturn_ok(data, &["apikey", "create", "--role", role, "--name", role], env);
    out.lines().find(|l| l.starts_with("kt_")).expect("key").trim().to_owned()
}

/// A token of the stand-in cluster for `sub` and `aud`.
fn workload_token(cluster: &Daemon, issuer_key: &str, sub: &str, aud: &str) -> String {
    let minted: Value = client()
        .post(format!("{}/api/v1/tokens", cluster.url))
        .bearer_auth(issuer_key)
        .json(&json!({"sub": sub, "aud": aud}))
        .send()
        .expect("mint")
        .json()
        .expect("json");
    minted["access_token"].as_str().expect("token").to_owned()
}

fn grant(d: &Daemon, form: &[(&str, &str)]) -> (u16, Value) {
    let res = client().post(format!("{}/oauth/token", d.url)).form(form).send().expect("token");
    (res.status().as_u16(), res.json().expect("json"))
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
        .expect("json")
}

#[test]
fn a_workload_exchanges_its_clusters_token_for_a_clients_token_and_nothing_else_does() {
    let root = tempfile::tempdir().expect("tempdir");
    // The stand-in cluster is a single node on SQLite; keyturn runs on the suite's backend.
    let sqlite = [crate::support::SQLITE];
    let env: [(&str, &str); 0] = [];
    // The stand-in cluster: its tokens' iss is its URL, its discovery names its JWKS.
    let cluster_data = root.path().join("cluster");
    let cluster = Daemon::start(&cluster_data, &sqlite, "federation-cluster");
    let (cluster_issuer, cluster_admin) =
        (api_key(&cluster_data, "issuer", &sqlite), api_key(&cluster_data, "admin", &sqlite));
    // keyturn, with a client that has no credential of its own.
    let data = root.path().join("main");
    let d = Daemon::start(&data, &[("KEYTURN_AUTH_FAILURE_LIMIT", "1000")], "federation");
    let created = keyturn_ok(
        &data,
        &["client", "create", "--name", "builder", "--audience", "deploy-api", "--scope", "deploy", "--federated"],
        &env,
    );
    assert!(!created.contains("client_secret"), "no secret is made: {created}");
    let client_id = created.lines().find_map(|l| l.strip_prefix("client_id=")).expect("client_id").to_owned();
    let verifier = api_key(&data, "verifier", &env);
    let meta = || -> Value {
        client()
            .get(format!("{}/.well-known/oauth-authorization-server", d.url))
            .send()
            .expect("meta")
            .json()
            .expect("json")
    };
    let offers =
        |m: &Value, grant: &str| m["grant_types_supported"].as_array().expect("grants").contains(&json!(grant));
    assert!(!offers(&meta(), JWT_BEARER), "no federation grant before an issuer is trusted");

    // Trust the cluster (its keys found through its discovery document) and map its builder.
    let trusted = keyturn_ok(&data, &["issuer", "trust", "--issuer", &cluster.url, "--audience", AUDIENCE], &env);
    assert!(trusted.contains(&format!("jwks_uri={}/.well-known/jwks.json", cluster.url)), "{trusted}");
    keyturn_ok(
        &data,
        &["issuer", "map", "--issuer", &cluster.url, "--subject", SERVICE_ACCOUNT, "--client", &client_id],
        &env,
    );
    eventually("the daemon to offer the federation grants", Duration::from_secs(10), || {
        let m = meta();
        (offers(&m, JWT_BEARER) && offers(&m, TOKEN_EXCHANGE)).then_some(())
    });
    let listed = keyturn_ok(&data, &["issuer", "list"], &env);
    assert!(listed.contains(&format!("subject={SERVICE_ACCOUNT}\tclient={client_id}")), "{listed}");

    // The jwt-bearer grant: the workload's token is its only credential.
    let own = workload_token(&cluster, &cluster_issuer, SERVICE_ACCOUNT, AUDIENCE);
    let (status, body) = grant(&d, &[("grant_type", JWT_BEARER), ("assertion", &own), ("scope", "deploy")]);
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().expect("token");
    let c = claims(access);
    assert_eq!(
        (c["client_id"].as_str(), c["aud"].as_str(), c["scope"].as_str()),
        (Some(client_id.as_str()), Some("deploy-api"), Some("deploy"))
    );
    let seen: Value = client()
        .post(format!("{}/oauth/introspect", d.url))
        .bearer_auth(&verifier)
        .form(&[("token", access)])
        .send()
        .expect("introspect")
        .json()
        .expect("json");
    assert_eq!(seen["active"], true, "{seen}");
    // A workload's token is presented again and again until its cluster rotates it.
    let (status, _) = grant(&d, &[("grant_type", JWT_BEARER), ("assertion", &own)]);
    assert_eq!(status, 200);

    // RFC 8693 token exchange, bound to a DPoP key too.
    let holder = crate::dpop::Holder::new();
    let proof = holder.proof("POST", &format!("{}/oauth/token", d.url), None);
    let res = client()
        .post(format!("{}/oauth/token", d.url))
        .header("DPoP", proof)
        .form(&[("grant_type", TOKEN_EXCHANGE), ("subject_token", &own), ("subject_token_type", JWT_TYPE)])
        .send()
        .expect("exchange");
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().expect("json");
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token", "{body}");
    assert_eq!(body["token_type"], "DPoP", "{body}");

    // The cluster rotates its keys: keyturn fetches them again when a token names a new one.
    let res = client()
        .post(format!("{}/api/v1/keys/rotate", cluster.url))
        .bearer_auth(&cluster_admin)
        .json(&json!({"mode": "emergency"}))
        .send()
        .expect("rotate");
    assert!(res.status().is_success(), "{}", res.status());
    let rotated = workload_token(&cluster, &cluster_issuer, SERVICE_ACCOUNT, AUDIENCE);
    let kid = |t: &str| jsonwebtoken::decode_header(t).expect("header").kid;
    assert_ne!(kid(&rotated), kid(&own), "signed with the cluster's new key");
    let (status, body) = grant(&d, &[("grant_type", JWT_BEARER), ("assertion", &rotated)]);
    assert_eq!(status, 200, "a token of the cluster's new key: {body}");

    // Refusals: each invalid_grant (or invalid_request), and nothing issued.
    let issued =
        || crate::support::scalar(&crate::support::database(&data, &env), "SELECT COUNT(*) FROM issued_tokens", &[]);
    let keyturns_own = workload_token(&d, &api_key(&data, "issuer", &env), SERVICE_ACCOUNT, AUDIENCE);
    let forged = {
        let (key, _) = crate::support::p256_key();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = jsonwebtoken::decode_header(&rotated).expect("header").kid;
        jsonwebtoken::encode(&header, &claims(&rotated), &key).expect("sign")
    };
    let refusals: Vec<(&str, Option<String>, &str)> = vec![
        ("a token from an untrusted issuer", Some(keyturns_own), "not trusted"),
        (
            "a token for an unmapped subject",
            Some(workload_token(&cluster, &cluster_issuer, "system:serviceaccount:ci:intruder", AUDIENCE)),
            "not mapped",
        ),
        (
            "a token for another audience",
            Some(workload_token(&cluster, &cluster_issuer, SERVICE_ACCOUNT, "another-service")),
            "aud",
        ),
        ("a token with a forged signature", Some(forged), "signature"),
        ("no token at all", None, "assertion is required"),
    ];
    let before = issued();
    for (what, assertion, why) in refusals {
        let mut form = vec![("grant_type", JWT_BEARER)];
        form.extend(assertion.as_deref().map(|a| ("assertion", a)));
        let (status, body) = grant(&d, &form);
        assert!(
            status == 400 && body["error_description"].as_str().is_some_and(|d| d.contains(why)),
            "{what}: {status} {body}"
        );
    }
    for (what, form, error) in [
        (
            "another subject token type",
            vec![("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")],
            "invalid_request",
        ),
        (
            "a refresh token asked for",
            vec![
                ("subject_token_type", JWT_TYPE),
                ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
            ],
            "invalid_request",
        ),
        ("delegation", vec![("subject_token_type", JWT_TYPE), ("actor_token", "x")], "invalid_request"),
    ] {
        let mut all = vec![("grant_type", TOKEN_EXCHANGE), ("subject_token", own.as_str())];
        all.extend(form);
        let (status, body) = grant(&d, &all);
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{what}: {body}");
    }
    let res = client()
        .post(format!("{}/oauth/token", d.url))
        .basic_auth(&client_id, Some("guess"))
        .form(&[("grant_type", JWT_BEARER), ("assertion", &own)])
        .send()
        .expect("token");
    assert_eq!(res.status().as_u16(), 400, "client authentication beside a workload's token");
    assert_eq!(issued(), before, "nothing issued");

    // Unmapped: the workload gets nothing more.
    keyturn_ok(&data, &["issuer", "unmap", "--issuer", &cluster.url, "--subject", SERVICE_ACCOUNT], &env);
    eventually("the mapping to be gone", Duration::from_secs(10), || {
        (grant(&d, &[("grant_type", JWT_BEARER), ("assertion", &own)]).0 == 400).then_some(())
    });
}

/// The Admin API manages the same trust, admin keys only, and refuses what it cannot use.
#[test]
fn issuers_are_managed_through_the_admin_api() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = Daemon::start(&data, &[], "federation-api");
    let (admin, verifier) = (api_key(&data, "admin", &[]), api_key(&data, "verifier", &[]));
    let call = |key: &str, path: &str, body: Value| {
        let res = client().post(format!("{}{path}", d.url)).bearer_auth(key).json(&body).send().expect("post");
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, made) =
        call(&admin, "/api/v1/clients", json!({"name": "ci", "audiences": ["api"], "federated": true}));
    assert_eq!(status, 201, "{made}");
    assert!(made.get("client_secret").is_none() && made["token_endpoint_auth_method"] == "none", "{made}");
    let client_id = made["client_id"].as_str().expect("client_id").to_owned();
    let issuer = "https://token.actions.example.com";
    let jwks = "https://token.actions.example.com/.well-known/jwks";
    let trust = json!({"issuer": issuer, "audience": "keyturn", "jwks_uri": jwks});
    assert_eq!(call(&verifier, "/api/v1/issuers", trust.clone()).0, 403, "admin keys only");
    for (body, why) in [
        (json!({"issuer": "http://ci.example.com", "audience": "keyturn", "jwks_uri": jwks}), "https"),
        (json!({"issuer": issuer, "audience": "two words", "jwks_uri": jwks}), "audience"),
        (json!({"issuer": issuer, "audience": "keyturn", "jwks_uri": "ftp://x.example/jwks"}), "jwks_uri"),
        (json!({"issuer": "https://127.0.0.1:1", "audience": "keyturn"}), "cannot discover"),
    ] {
        let (status, answer) = call(&admin, "/api/v1/issuers", body);
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error_description"].as_str().is_some_and(|d| d.contains(why)), "{why}: {answer}");
    }
    let (status, view) = call(&admin, "/api/v1/issuers", trust);
    assert_eq!((status, view["jwks_uri"].as_str()), (200, Some(jwks)), "{view}");
    let subject = "repo:example/app:ref:refs/heads/main";
    let (status, answer) = call(
        &admin,
        "/api/v1/issuers/subjects",
        json!({"issuer": issuer, "subject": subject, "client_id": "kc_nobody"}),
    );
    assert_eq!(status, 404, "an unknown client: {answer}");
    let (status, answer) = call(
        &admin,
        "/api/v1/issuers/subjects",
        json!({"issuer": "https://other.example", "subject": subject, "client_id": client_id}),
    );
    assert_eq!(status, 404, "an untrusted issuer: {answer}");
    let (status, view) =
        call(&admin, "/api/v1/issuers/subjects", json!({"issuer": issuer, "subject": subject, "client_id": client_id}));
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["subjects"], json!([{"subject": subject, "client_id": client_id}]));
    let listed: Value = client()
        .get(format!("{}/api/v1/issuers", d.url))
        .bearer_auth(&admin)
        .send()
        .expect("list")
        .json()
        .expect("json");
    assert_eq!(listed["issuers"][0]["issuer"], issuer);
    assert_eq!(call(&admin, "/api/v1/issuers/forget", json!({"issuer": issuer})).0, 204);
    assert_eq!(call(&admin, "/api/v1/issuers/forget", json!({"issuer": issuer})).0, 404, "already forgotten");
    let audit = d.audit(&admin);
    let actions: Vec<&str> =
        audit.iter().filter_map(|e| e["action"].as_str()).filter(|a| a.starts_with("issuer.")).collect();
    assert_eq!(actions, ["issuer.trust", "issuer.map", "issuer.forget"], "each change audited");
}

/// A self-managed cluster's issuer behind a private CA (here a keyturn serving HTTPS with a
/// certificate made by rcgen): refused while its CA is unknown, trusted with
/// `trusted_ca_file`, and its workloads' tokens exchanged.
#[test]
fn an_issuer_behind_a_private_ca_is_trusted_through_trusted_ca_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let (ca, key) = (root.path().join("cluster-ca.pem"), root.path().join("cluster.key"));
    std::fs::write(&ca, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key");
    let (ca_s, key_s) = (ca.display().to_string(), key.display().to_string());
    let sqlite = [crate::support::SQLITE];
    let cluster_data = root.path().join("cluster");
    let tls =
        [crate::support::SQLITE, ("KEYTURN_TLS_CERT_FILE", ca_s.as_str()), ("KEYTURN_TLS_KEY_FILE", key_s.as_str())];
    let mut cluster = Daemon::spawn(&cluster_data, &tls, "federation-private-ca");
    cluster.url = cluster.url.replace("http://", "https://");
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).expect("ca"))
        .build()
        .expect("client");
    eventually("the cluster's issuer to serve HTTPS", Duration::from_secs(30), || {
        https.get(format!("{}/readyz", cluster.url)).send().ok().filter(|r| r.status().is_success()).map(|_| ())
    });
    let cluster_issuer = api_key(&cluster_data, "issuer", &sqlite);

    let data = root.path().join("main");
    let trust = ["issuer", "trust", "--issuer", &cluster.url, "--audience", AUDIENCE];
    let env = [("KEYTURN_TRUSTED_CA_FILE", ca_s.as_str())];
    let d = Daemon::start(&data, &env, "federation-main-private-ca");
    let refused =
        crate::support::run_keyturn(&trust, &[("KEYTURN_DATA_DIR", &data.display().to_string())], root.path());
    assert!(!refused.status.success(), "its CA is unknown");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("cannot discover"), "{said}");
    let created = keyturn_ok(&data, &["client", "create", "--name", "ci", "--audience", "api", "--federated"], &env);
    let client_id = created.lines().find_map(|l| l.strip_prefix("client_id=")).expect("client_id").to_owned();
    let trusted = keyturn_ok(&data, &trust, &env);
    assert!(trusted.contains(&format!("jwks_uri={}/.well-known/jwks.json", cluster.url)), "{trusted}");
    keyturn_ok(
        &data,
        &["issuer", "map", "--issuer", &cluster.url, "--subject", SERVICE_ACCOUNT, "--client", &client_id],
        &env,
    );
    let minted: Value = https
        .post(format!("{}/api/v1/tokens", cluster.url))
        .bearer_auth(&cluster_issuer)
        .json(&json!({"sub": SERVICE_ACCOUNT, "aud": AUDIENCE}))
        .send()
        .expect("mint")
        .json()
        .expect("json");
    let own = minted["access_token"].as_str().expect("token").to_owned();
    eventually("the workload's token to be exchanged", Duration::from_secs(10), || {
        let (status, body) = grant(&d, &[("grant_type", JWT_BEARER), ("assertion", &own)]);
        (status == 200).then(|| body["access_token"].as_str().map(str::to_owned)).flatten()
    });
}
