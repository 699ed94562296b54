//! Attacks as a table, beside `badinput`'s: what an attacker sends at every layer (HTTP
//! framing, authentication, roles, the OAuth endpoints, the dashboard, the admin API), raw
//! bytes on a real connection. Each row says the answer it must get; after every row no
//! table has gained or lost a row, a live token is still active and a revoked one still
//! revoked.
//!
//! Attacks that are not one request have tests of their own, each reproducing the report:
//!
//! | attack | test |
//! |---|---|
//! | HTTP/2 streams of bodies that never end, on 600 connections | `http2::unfinished_http2_bodies_on_600_connections_stay_within_the_body_budgets` |
//! | an HTTP/2 connection kept open by answering PINGs | `http2::an_http2_connection_that_only_answers_pings_is_closed_after_the_header_time_out` |
//! | 200 wrong passwords at once from one address | `dashboard::concurrent_wrong_passwords_from_one_address_run_at_most_the_allowed_checks` |
//! | two emergency rotations in a row | `api::a_second_emergency_rotation_says_what_the_first_did_and_an_unseen_pending_key_never_signs` |
//! | a client's own `X-Auth-*` and `X_Auth_*` through the shipped gateway files | `gateways::nginx_auth_request_lets_only_active_tokens_through`, `gateways::caddy_forward_auth_passes_keyturns_identity_and_never_the_clients`, `gateways::apache_mod_oauth2_verifies_by_jwks_and_by_introspection`, `gateways::the_other_gateways_snippets_name_keyturns_endpoint_and_headers` |
//! | login CSRF on the sign-in and setup forms | rows below, and `dashboard::sign_in_and_setup_refuse_forms_sent_from_another_site` |
//! | a shown secret kept by a cache | `dashboard::pages_that_show_a_secret_once_are_never_cached` |
//! | the CLI run where no installation is, or on a database copied away | `cli::commands_other_than_serve_and_init_never_create_an_installation`, `cluster::db_copy_moves_one_sqlite_node_into_a_cluster_without_reissuing_anything` |
//! | a misspelt setting, a short or missing key file, a bad cron field | `cli::config_check_fails_on_what_start_up_would_refuse_and_names_each_problem` |
//! | `Authorization: bearer …` in lower case | rows below, and `credentials::tests` |
//! | DPoP proofs for another request, old, future, replayed, unsigned, HMAC; a bound token without its proof | rows below (`holder_rows`), `dpop::tests`, and `dpop::a_proof_accepted_by_one_node_is_refused_by_another` for a replay on another node |
//! | client assertions for another audience, reused, unsigned, HMAC, of another client | rows below (`holder_rows`), `assertion::tests`, `clientkeys::an_assertion_accepted_by_one_node_is_refused_by_another` |
//! | a workload token from an untrusted issuer, for an unmapped subject or another audience, forged | rows below (keyturn trusting itself as a workload issuer), and `federation::a_workload_exchanges_its_clusters_token_for_a_clients_token_and_nothing_else_does` |
//! | a flood of unknown key ids against a client's `jwks_uri` | `clientkeys::a_client_with_a_jwks_uri_authenticates_everywhere_and_rotates_its_own_keys` |

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use keyturn::service::apikeys::Role;
use keyturn::service::Actor;

use crate::api::Api;
use crate::support::http;

/// One attack: the raw request and the status it must be answered with.
struct Row {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// Text the answer must contain (an error code), if any.
    contains: Option<&'static str>,
}

/// An HTTP/1.1 request with `headers`, a `Content-Length` when there is a body, and
/// `Connection: close`.
fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: keyturn.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn row(name: &'static str, request: Vec<u8>, status: u16, contains: Option<&'static str>) -> Row {
    Row { name, request, status, contains }
}

/// Sends `request` and returns the status and the whole answer.
fn send(addr: &str, request: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    // The server may answer and close before reading everything (an oversized request).
    let _ = conn.write_all(request);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_are_refused_and_change_nothing() {
    // Every row comes from 127.0.0.1, many with wrong credentials: the failure limit (tested
    // on its own in forward.rs) is raised so each row gets the answer it is about.
    let api = Api::start(&[("KEYTURN_CLIENT_BODY_TIMEOUT", "2s"), ("KEYTURN_AUTH_FAILURE_LIMIT", "1000")]).await;
    let (client_id, secret) = api.client(&["read"], &["api"]).await;
    let (other_id, _) = api.client(&["write"], &["other"]).await;
    let basic = |id: &str, s: &str| format!("Basic {}", STANDARD.encode(format!("{id}:{s}")));
    let bearer = |k: &str| format!("Bearer {k}");
    let (admin, issuer, verifier) = (bearer(&api.admin), bearer(&api.issuer), bearer(&api.verifier));
    // A revoked API key and a disabled client, made before the snapshot.
    let revoked_key = {
        let s = api.server.service.clone();
        let key = tokio::spawn(async move {
            let (identity, key) =
                s.clients().create_api_key(Role::Issuer, "gone", &Actor::cli()).await.expect("api key");
            s.clients().revoke_api_key(&identity.id, &Actor::cli()).await.expect("revoke");
            key.to_string()
        })
        .await
        .expect("join");
        bearer(&key)
    };
    let wrong_secret = {
        let id = api.issuer.split('.').next().expect("id");
        bearer(&format!("{id}.{}", "A".repeat(43)))
    };
    // Sentinels: a live token and a revoked one.
    let (status, live) =
        api.call("POST", "/api/v1/tokens", Some(&api.issuer), Some(json!({"sub": "alice", "aud": "api"}))).await;
    assert_eq!(status, 200, "{live}");
    let live = live["access_token"].as_str().expect("token").to_owned();
    let (_, dead) =
        api.call("POST", "/api/v1/tokens", Some(&api.issuer), Some(json!({"sub": "bob", "aud": "api"}))).await;
    let dead_jti = dead["jti"].as_str().map(str::to_owned).unwrap_or_default();
    let dead = dead["access_token"].as_str().expect("token").to_owned();
    let (status, _) = api
        .call("POST", "/api/v1/revocations", Some(&api.admin), Some(json!({"jti": dead_jti, "reason": "test"})))
        .await;
    assert!(status < 300, "revoke sentinel: {status}");
    assert!(api.active(&live).await && !api.active(&dead).await);

    // A sign-in form's cookie and token, as a browser on this site would hold them: the
    // rows below send them with another site's Origin (login CSRF).
    let login_page = http().get(api.url("/admin/login")).send().await.expect("the sign-in page");
    let form_cookie = crate::support::form_cookie(login_page.headers());
    let form_token = crate::support::form_token(&login_page.text().await.expect("html"));
    let signed_login = format!("csrf={form_token}&name=alice&password=a+long+enough+password");
    let lower_bearer = format!("bearer {}", api.admin);
    // A session the issuer key minted, and another app's key (issue 26's bad input).
    let (_, session) = api
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&api.issuer),
            Some(json!({"sub": "alice", "aud": "api", "refresh": true, "session_label": "laptop"})),
        )
        .await;
    let sid = session["session_id"].as_str().expect("session_id").to_owned();
    let session_access = session["access_token"].as_str().expect("token").to_owned();
    let other_app = {
        let s = api.server.service.clone();
        let key = tokio::spawn(async move {
            s.clients().create_api_key(Role::Issuer, "other-app", &Actor::cli()).await.expect("key").1
        })
        .await
        .expect("join");
        bearer(&key)
    };
    let end_other = format!("/api/v1/sessions/{sid}/end");
    let revoke_session_token = format!("token={session_access}");
    let long_label =
        format!(r#"{{"sub": "a", "aud": "api", "refresh": true, "session_label": "{}"}}"#, "x".repeat(201));

    let json_type = ("Content-Type", "application/json");
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    let cc = b"grant_type=client_credentials".as_slice();
    let token_body = br#"{"sub": "mallory", "aud": "api"}"#.as_slice();
    let many_headers: Vec<(String, String)> = (0..200).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many_headers: Vec<(&str, &str)> = many_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let long_header = "x".repeat(100 * 1024);
    let long_path = format!("/healthz?{}", "a".repeat(70 * 1024));

    let mut rows = vec![
        // HTTP framing.
        row("unknown method", raw("BREW", "/healthz", &[], b""), 405, None),
        row("TRACE", raw("TRACE", "/", &[], b""), 404, None),
        row("200 headers", raw("GET", "/healthz", &many_headers, b""), 431, None),
        row("a 100 KiB header", raw("GET", "/healthz", &[("X-Big", &long_header)], b""), 431, None),
        row("a 70 KiB URI (the request head is over 64 KiB)", raw("GET", &long_path, &[], b""), 431, None),
        // RFC 9112 6.3: Transfer-Encoding wins over Content-Length, and the connection closes
        // after the answer, so the bytes after the chunked body are never a second request.
        row(
            "Content-Length and Transfer-Encoding together (smuggling)",
            b"POST /api/v1/tokens HTTP/1.1\r\nHost: k\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: k\r\n\r\n".to_vec(),
            401,
            None,
        ),
        row(
            "two different Content-Lengths",
            b"POST /api/v1/tokens HTTP/1.1\r\nHost: k\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            400,
            None,
        ),
        row(
            "malformed chunked body",
            b"POST /api/v1/tokens HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n".to_vec(),
            400,
            None,
        ),
        row(
            "a chunked body that never ends",
            format!(
                "POST /api/v1/tokens HTTP/1.1\r\nHost: k\r\nAuthorization: {issuer}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"sub\r\n"
            )
            .into_bytes(),
            408,
            Some("request_timeout"),
        ),
        row("a NUL in the path", raw("GET", "/admin%00/keys", &[], b""), 404, None),
        row("path traversal to the source", raw("GET", "/static/../Cargo.toml", &[], b""), 404, None),
        row("encoded path traversal", raw("GET", "/static/..%2f..%2fCargo.toml", &[], b""), 404, None),
        // API keys and roles.
        row("API key with the wrong secret", raw("GET", "/api/v1/keys", &[("Authorization", &wrong_secret)], b""), 401, Some("unauthorized")),
        row("API key prefix only", raw("GET", "/api/v1/keys", &[("Authorization", "Bearer kt_")], b""), 401, None),
        row("an access token as an API key", raw("GET", "/api/v1/keys", &[("Authorization", &bearer(&live))], b""), 401, None),
        row("a revoked API key", raw("POST", "/api/v1/tokens", &[("Authorization", &revoked_key), json_type], token_body), 401, None),
        row("API key as Basic credentials", raw("GET", "/api/v1/keys", &[("Authorization", &basic(&api.admin, ""))], b""), 401, None),
        row("API key in the query", raw("GET", &format!("/api/v1/keys?api_key={}", api.admin), &[], b""), 401, None),
        row("verifier issuing a token", raw("POST", "/api/v1/tokens", &[("Authorization", &verifier), json_type], token_body), 403, None),
        row(
            "issuer rotating keys",
            raw("POST", "/api/v1/keys/rotate", &[("Authorization", &issuer), json_type], br#"{"mode": "emergency"}"#),
            403,
            None,
        ),
        row("verifier reading the audit log", raw("GET", "/api/v1/audit", &[("Authorization", &verifier)], b""), 403, None),
        row(
            "issuer revoking a subject",
            raw("POST", "/api/v1/revocations", &[("Authorization", &issuer), json_type], br#"{"sub": "alice", "reason": "x"}"#),
            403,
            None,
        ),
        // API keys are made on the host only (`keyturn apikey create`): no route makes one.
        row(
            "an admin API key asked for over HTTP",
            raw("POST", "/api/v1/apikeys", &[("Authorization", &admin), json_type], br#"{"name": "x", "role": "admin"}"#),
            404,
            None,
        ),
        row(
            "issuer disabling a client",
            raw("POST", &format!("/api/v1/clients/{client_id}/disable"), &[("Authorization", &issuer)], b""),
            403,
            None,
        ),
        row("token listing with a negative limit", raw("GET", "/api/v1/tokens?limit=-1", &[("Authorization", &admin)], b""), 400, Some("limit")),
        row("token listing with active=maybe", raw("GET", "/api/v1/tokens?active=maybe", &[("Authorization", &admin)], b""), 400, Some("active")),
        row("audit listing from a cursor that is not a number", raw("GET", "/api/v1/audit?before=yesterday", &[("Authorization", &admin)], b""), 400, Some("before")),
        row("feed with a cursor that is not a number", raw("GET", "/api/v1/revocations?since=abc", &[("Authorization", &verifier)], b""), 400, Some("since")),
        row(
            "revoking an unknown key",
            raw("POST", "/api/v1/keys/nosuchkid/revoke", &[("Authorization", &admin), json_type], br#"{"reason": "x"}"#),
            404,
            None,
        ),
        // The OAuth endpoints.
        row("token request by GET", raw("GET", "/oauth/token?grant_type=client_credentials", &[], b""), 404, None),
        row("token request without credentials", raw("POST", "/oauth/token", &[form_type], cc), 401, Some("invalid_client")),
        row(
            "a client id with another client's secret",
            raw("POST", "/oauth/token", &[form_type, ("Authorization", &basic(&other_id, &secret))], cc),
            401,
            Some("invalid_client"),
        ),
        row("Basic credentials that are not base64", raw("POST", "/oauth/token", &[form_type, ("Authorization", "Basic !!!")], cc), 401, None),
        row(
            "a scope the client may not have",
            raw("POST", "/oauth/token", &[form_type, ("Authorization", &basic(&client_id, &secret))], b"grant_type=client_credentials&scope=admin"),
            400,
            Some("invalid_scope"),
        ),
        row(
            "a garbage refresh token",
            raw("POST", "/oauth/token", &[form_type, ("Authorization", &basic(&client_id, &secret))], b"grant_type=refresh_token&refresh_token=ktr_nope"),
            400,
            Some("invalid_grant"),
        ),
        row(
            "an access token as a refresh token",
            raw(
                "POST",
                "/oauth/token",
                &[form_type, ("Authorization", &basic(&client_id, &secret))],
                format!("grant_type=refresh_token&refresh_token={live}").as_bytes(),
            ),
            400,
            Some("invalid_grant"),
        ),
        row(
            "a token request in JSON",
            raw("POST", "/oauth/token", &[json_type, ("Authorization", &basic(&client_id, &secret))], br#"{"grant_type": "client_credentials"}"#),
            415,
            Some("invalid_request"),
        ),
        row("introspection without credentials", raw("POST", "/oauth/introspect", &[form_type], format!("token={live}").as_bytes()), 401, None),
        row(
            "introspection by an issuer key",
            raw("POST", "/oauth/introspect", &[form_type, ("Authorization", &issuer)], format!("token={live}").as_bytes()),
            403,
            None,
        ),
        row("introspection without a token", raw("POST", "/oauth/introspect", &[form_type, ("Authorization", &verifier)], b"x=1"), 400, None),
        row("revocation without credentials", raw("POST", "/oauth/revoke", &[form_type], format!("token={live}").as_bytes()), 401, None),
        // The dashboard.
        row("dashboard action without a session", raw("POST", "/admin/keys/rotate", &[form_type], b"alg=ES256&mode=emergency"), 303, None),
        row(
            "a forged session cookie",
            raw("GET", "/admin/keys", &[("Cookie", "keyturn_session=Zm9yZ2Vk")], b""),
            303,
            None,
        ),
        row("a sign-in form without its fields", raw("POST", "/admin/login", &[form_type], b"user=a&pass=b"), 422, None),
        // Login CSRF (hardening round two, item 6): no form token, or another site's origin.
        row(
            "a sign-in form without its CSRF token",
            raw("POST", "/admin/login", &[form_type], b"name=alice&password=a+long+enough+password"),
            403,
            Some("another site"),
        ),
        row(
            "a sign-in form posted by another site (Origin: https://evil.example)",
            raw(
                "POST",
                "/admin/login",
                &[form_type, ("Cookie", &form_cookie), ("Origin", "https://evil.example")],
                signed_login.as_bytes(),
            ),
            403,
            Some("another site"),
        ),
        row(
            "a setup form posted by another site (Sec-Fetch-Site: cross-site)",
            raw(
                "POST",
                "/admin/setup",
                &[form_type, ("Cookie", &form_cookie), ("Sec-Fetch-Site", "cross-site")],
                format!("csrf={form_token}&token=bogus&name=eve&password=correct-horse-battery&confirm=correct-horse-battery").as_bytes(),
            ),
            403,
            Some("another site"),
        ),
        // Sessions: another app's key ends nothing and learns nothing; malformed and
        // unknown tokens and sessions are answered as RFC 7009 answers, changing nothing.
        row("another app's key ending a session", raw("POST", &end_other, &[("Authorization", &other_app), json_type], b"{}"), 200, None),
        row(
            "another app's key revoking a session's token (RFC 7009)",
            raw("POST", "/oauth/revoke", &[("Authorization", &other_app), form_type], revoke_session_token.as_bytes()),
            200,
            None,
        ),
        row("a malformed token at RFC 7009 with an issuer key", raw("POST", "/oauth/revoke", &[("Authorization", &issuer), form_type], b"token=not.a.jwt"), 200, None),
        row("an unknown session ended", raw("POST", "/api/v1/sessions/nosuchsid/end", &[("Authorization", &issuer), json_type], b"{}"), 200, None),
        row("a session label over 200 characters", raw("POST", "/api/v1/tokens", &[("Authorization", &issuer), json_type], long_label.as_bytes()), 400, Some("session_label")),
        row("a verifier listing sessions", raw("GET", "/api/v1/sessions", &[("Authorization", &verifier)], b""), 403, None),
        // One Authorization parser (item 10): the scheme is case-insensitive (RFC 9110), so a
        // lower-case `bearer` is the same key everywhere; a lower-case wrong key is still 401.
        row("an API key under 'bearer' in lower case", raw("GET", "/api/v1/keys", &[("Authorization", &lower_bearer)], b""), 200, None),
        row(
            "a wrong API key under 'BEARER'",
            raw("GET", "/api/v1/keys", &[("Authorization", &wrong_secret.replacen("Bearer", "BEARER", 1))], b""),
            401,
            None,
        ),
        row(
            "setup with a bogus link",
            raw(
                "POST",
                "/admin/setup",
                &[form_type, ("Cookie", &form_cookie)],
                format!("csrf={form_token}&token=bogus&name=eve&password=correct-horse-battery&confirm=correct-horse-battery").as_bytes(),
            ),
            401,
            None,
        ),
    ];
    rows.extend(holder_rows(&api, &client_id, &secret).await);
    assert!(rows.len() >= 40, "{} rows", rows.len());

    let before = crate::badinput::counts(&api);
    let addr = api.server.address.to_string();
    let mut wrong = Vec::new();
    for r in &rows {
        let (status, answer) = send(&addr, &r.request);
        if status != r.status || r.contains.is_some_and(|c| !answer.contains(c)) {
            wrong.push(format!(
                "{}: expected {} {:?}, got:\n{}",
                r.name,
                r.status,
                r.contains,
                &answer[..answer.len().min(600)]
            ));
        }
        let after = crate::badinput::counts(&api);
        if after != before {
            wrong.push(format!("{}: changed the database: {before:?} -> {after:?}", r.name));
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows wrong:\n{}", wrong.len(), rows.len(), wrong.join("\n\n"));
    assert!(api.active(&live).await, "the live token is still active");
    assert!(!api.active(&dead).await, "the revoked token is still revoked");
}

/// A JWS of `header` and `claims` as written, signed ES256 with `key`, HS256 with `secret`, or
/// not at all.
fn jws(header: &Value, claims: &Value, key: Option<&EncodingKey>) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let input = format!("{}.{}", part(header), part(claims));
    let alg = match header["alg"].as_str() {
        Some("HS256") => Algorithm::HS256,
        _ => Algorithm::ES256,
    };
    let signature =
        key.map_or_else(String::new, |k| jsonwebtoken::crypto::sign(input.as_bytes(), k, alg).expect("sign"));
    format!("{input}.{signature}")
}

/// Rows for tokens bound to their holder (DPoP) and clients without a secret
/// (private_key_jwt): each made with real keys, refused, and nothing recorded.
async fn holder_rows(api: &Api, client_id: &str, secret: &str) -> Vec<Row> {
    let issuer = api.server.service.config().issuer.clone();
    let token_url = format!("{issuer}/oauth/token");
    let now = keyturn::clock::to_unix(api.server.service.now());
    let (key, jwk) = crate::support::p256_key();
    let hmac = EncodingKey::from_secret(b"a shared secret");
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    let basic = format!("Basic {}", STANDARD.encode(format!("{client_id}:{secret}")));
    let mut n = 0;
    let mut proof = |edit: &dyn Fn(&mut Value, &mut Value), signer: Option<&EncodingKey>| {
        n += 1;
        let mut header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
        let mut claims = json!({"jti": format!("attack-{n}"), "htm": "POST", "htu": token_url, "iat": now});
        edit(&mut header, &mut claims);
        jws(&header, &claims, signer)
    };
    let token_with = |proof: &str| {
        raw(
            "POST",
            "/oauth/token",
            &[form_type, ("Authorization", &basic), ("DPoP", proof)],
            b"grant_type=client_credentials",
        )
    };
    let spent = proof(&|_, _| {}, Some(&key));
    let addr = api.server.address.to_string();
    let (status, answer) = send(&addr, &token_with(&spent));
    assert_eq!(status, 200, "{answer}");
    let first: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(first["token_type"], "DPoP", "{first}");
    let bound = first["access_token"].as_str().expect("bound token").to_owned();
    let other_key = crate::support::p256_key();
    let resource = "https://api.keyturn.test/orders";
    let ath = keyturn::dpop::access_token_hash(&bound);
    let resource_proof = |signer: &EncodingKey, public: &Value, jti: &str| {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public});
        jws(&header, &json!({"jti": jti, "htm": "GET", "htu": resource, "iat": now, "ath": ath}), Some(signer))
    };
    let verify = |scheme: &str, proof: Option<String>| {
        let auth = format!("{scheme} {bound}");
        let mut headers =
            vec![("Authorization", auth.as_str()), ("X-Forwarded-Method", "GET"), ("X-Original-URL", resource)];
        let proof = proof.unwrap_or_default();
        if !proof.is_empty() {
            headers.push(("DPoP", &proof));
        }
        raw("GET", "/auth/verify", &headers, b"")
    };

    // A client with public keys, and its assertions.
    let (signer, mut client_jwk) = crate::support::p256_key();
    client_jwk["kid"] = Value::from("k1");
    let svc = api.server.service.clone();
    let keyed = tokio::spawn(async move {
        let new = keyturn::service::clients::NewClient {
            name: "keyed".into(),
            audiences: vec!["api".into()],
            credential: keyturn::service::clients::NewCredential::Jwks(json!({"keys": [client_jwk]})),
            ..Default::default()
        };
        svc.clients().create_client(&new, &Actor::cli()).await.expect("client").0.client_id
    })
    .await
    .expect("join");
    let assertion = |edit: &dyn Fn(&mut Value, &mut Value), signer: Option<&EncodingKey>| {
        let mut header = json!({"alg": "ES256", "kid": "k1"});
        let mut claims = json!({"iss": keyed, "sub": keyed, "aud": token_url, "exp": now + 60, "jti": "a-1"});
        edit(&mut header, &mut claims);
        let body = format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
            jws(&header, &claims, signer)
        );
        raw("POST", "/oauth/token", &[form_type], body.as_bytes())
    };
    let used = assertion(&|_, _| {}, Some(&signer));
    assert_eq!(send(&addr, &used).0, 200, "the assertion to be replayed");

    // Workload identity federation: keyturn trusts itself as a workload issuer (its own keys
    // at its own JWKS), with one subject mapped; a token of another subject, or of an issuer
    // it does not trust, gets nothing.
    let (svc, own_issuer, jwks_uri) =
        (api.server.service.clone(), issuer.clone(), format!("http://{addr}/.well-known/jwks.json"));
    let mapped_to = keyed.clone();
    tokio::spawn(async move {
        let new = keyturn::service::federation::NewIssuer {
            issuer: own_issuer.clone(),
            jwks_uri: Some(jwks_uri),
            audience: "workloads".into(),
        };
        svc.federation().trust_issuer(&new, &Actor::cli()).await.expect("trust");
        svc.federation()
            .map_subject(&own_issuer, "system:serviceaccount:ci:builder", &mapped_to, &Actor::cli())
            .await
            .expect("map");
    })
    .await
    .expect("join");
    let workload = |sub: &str| {
        let minted = api.server.service.clone();
        let sub = sub.to_owned();
        async move {
            let req =
                keyturn::service::tokens::IssueRequest { sub, aud: vec!["workloads".into()], ..Default::default() };
            tokio::spawn(
                async move { minted.tokens().issue_token(&req, &Actor::cli()).await.expect("mint").access_token },
            )
            .await
            .expect("join")
        }
    };
    let jwt_bearer = |token: &str| {
        let body = format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={token}");
        raw("POST", "/oauth/token", &[form_type], body.as_bytes())
    };
    let mapped = workload("system:serviceaccount:ci:builder").await;
    assert_eq!(send(&addr, &jwt_bearer(&mapped)).0, 200, "the mapped workload gets its client's token");
    let unmapped = workload("system:serviceaccount:ci:intruder").await;
    let untrusted = {
        let mut header = json!({"alg": "ES256", "kid": "k1"});
        header["typ"] = "JWT".into();
        jws(
            &header,
            &json!({"iss": "https://untrusted.example", "sub": "system:serviceaccount:ci:builder", "aud": "workloads", "exp": now + 600}),
            Some(&key),
        )
    };

    vec![
        row("a workload token from an untrusted issuer", jwt_bearer(&untrusted), 400, Some("invalid_grant")),
        row("a workload token for an unmapped subject", jwt_bearer(&unmapped), 400, Some("invalid_grant")),
        row(
            "a DPoP proof for another method",
            token_with(&proof(&|_, c| c["htm"] = "GET".into(), Some(&key))),
            400,
            Some("invalid_dpop_proof"),
        ),
        row(
            "a DPoP proof for another URL",
            token_with(&proof(&|_, c| c["htu"] = format!("{issuer}/oauth/revoke").into(), Some(&key))),
            400,
            Some("invalid_dpop_proof"),
        ),
        row(
            "a DPoP proof made five minutes ago",
            token_with(&proof(&|_, c| c["iat"] = (now - 300).into(), Some(&key))),
            400,
            Some("invalid_dpop_proof"),
        ),
        row(
            "a DPoP proof from five minutes ahead",
            token_with(&proof(&|_, c| c["iat"] = (now + 300).into(), Some(&key))),
            400,
            Some("invalid_dpop_proof"),
        ),
        row("a replayed DPoP proof", token_with(&spent), 400, Some("invalid_dpop_proof")),
        row(
            "a DPoP proof with alg none",
            token_with(&proof(&|h, _| h["alg"] = "none".into(), None)),
            400,
            Some("invalid_dpop_proof"),
        ),
        row(
            "a DPoP proof signed with HMAC",
            token_with(&proof(&|h, _| h["alg"] = "HS256".into(), Some(&hmac))),
            400,
            Some("invalid_dpop_proof"),
        ),
        row(
            "a DPoP proof with a private key in its header",
            token_with(&proof(&|h, _| h["jwk"]["d"] = "AAAA".into(), Some(&key))),
            400,
            Some("invalid_dpop_proof"),
        ),
        row(
            "a good DPoP proof with a garbage refresh token (the proof is not spent)",
            raw(
                "POST",
                "/oauth/token",
                &[form_type, ("DPoP", &proof(&|_, _| {}, Some(&key)))],
                b"grant_type=refresh_token&refresh_token=ktr_garbage",
            ),
            400,
            Some("invalid_grant"),
        ),
        row(
            "a good DPoP proof with a wrong client secret (the proof is not spent)",
            raw(
                "POST",
                "/oauth/token",
                &[
                    form_type,
                    ("Authorization", &format!("Basic {}", STANDARD.encode(format!("{client_id}:wrong")))),
                    ("DPoP", &proof(&|_, _| {}, Some(&key))),
                ],
                b"grant_type=client_credentials",
            ),
            401,
            Some("invalid_client"),
        ),
        row("a bound token at /auth/verify without its proof", verify("DPoP", None), 401, Some("DPoP error=")),
        row("a bound token as a bearer token", verify("Bearer", None), 401, Some("DPoP error=")),
        row(
            "a bound token with another key's proof",
            verify("DPoP", Some(resource_proof(&other_key.0, &other_key.1, "other-1"))),
            401,
            Some("invalid_dpop_proof"),
        ),
        row(
            "a client assertion for another audience",
            assertion(
                &|_, c| {
                    c["aud"] = "https://elsewhere.test".into();
                    c["jti"] = "a-2".into();
                },
                Some(&signer),
            ),
            401,
            Some("invalid_client"),
        ),
        row("a reused client assertion", used, 401, Some("invalid_client")),
        row(
            "a client assertion with alg none",
            assertion(
                &|h, c| {
                    h["alg"] = "none".into();
                    c["jti"] = "a-3".into();
                },
                None,
            ),
            401,
            Some("invalid_client"),
        ),
        row(
            "a client assertion signed with HMAC",
            assertion(
                &|h, c| {
                    h["alg"] = "HS256".into();
                    c["jti"] = "a-4".into();
                },
                Some(&hmac),
            ),
            401,
            Some("invalid_client"),
        ),
        row(
            "a client assertion naming another client",
            assertion(
                &|_, c| {
                    c["iss"] = "kc_someone_else".into();
                    c["sub"] = "kc_someone_else".into();
                    c["jti"] = "a-5".into();
                },
                Some(&signer),
            ),
            401,
            Some("invalid_client"),
        ),
        row(
            "a client assertion that never expires",
            assertion(
                &|_, c| {
                    c["exp"] = (now + 10 * 365 * 86400).into();
                    c["jti"] = "a-6".into();
                },
                Some(&signer),
            ),
            401,
            Some("invalid_client"),
        ),
    ]
}
