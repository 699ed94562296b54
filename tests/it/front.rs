//! keyturn's own front (`web::serve`: the socket, the time-outs and bounds, the JWKS short
//! path) against Rocket's own server serving the very same application: the same requests,
//! over HTTP/1.1 and HTTP/2, must get the same answers. What the front adds by design (its
//! time-outs and bounds) is tested in `connections` and `http2`; here, nothing may differ.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use keyturn::service::Keyturn;
use reqwest::{Method, StatusCode};

use crate::api::Api;

/// The cookie secret the daemon's application uses.
fn cookie_secret(service: &Keyturn) -> String {
    match &service.config().secret_key {
        Some(secret) => secret.expose().to_owned(),
        None => std::fs::read_to_string(&service.data_dir().secret_key).expect("cookie secret").trim().to_owned(),
    }
}

/// Serves the daemon's application (same service, same secret) on Rocket's own server, on
/// a port of its own; returns its address once it listens.
async fn rockets_own_server(service: Arc<Keyturn>) -> SocketAddr {
    let secret = cookie_secret(&service);
    let (listening, address) = tokio::sync::oneshot::channel();
    let listening = std::sync::Mutex::new(Some(listening));
    let app = keyturn::application(service, &secret);
    let on_a_port_of_its_own = app.figment().clone().merge(("port", 0u16));
    let rocket =
        app.configure(on_a_port_of_its_own).attach(rocket::fairing::AdHoc::on_liftoff("address", move |rocket| {
            Box::pin(async move {
                let address = SocketAddr::new(rocket.config().address, rocket.config().port);
                if let Some(tx) = listening.lock().expect("lock").take() {
                    let _ = tx.send(address);
                }
            })
        }));
    tokio::spawn(async move { rocket.launch().await.map(drop) });
    address.await.expect("Rocket's server listens")
}

/// One answer, in the terms two servers must agree on.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    /// Every header but the ones that differ per answer (date, request id) or per
    /// connection; `Set-Cookie` by name and attributes, since private cookies are sealed
    /// with a fresh nonce each time.
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

/// The parts of a body that may differ between two correct answers (a token, a request id)
/// are replaced by their shape.
fn normalised(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(mut json) => {
            for volatile in ["access_token", "jti", "kid", "session_id", "refresh_token", "expires_in"] {
                if let Some(v) = json.get_mut(volatile) {
                    *v = serde_json::Value::String(format!("<{volatile}>"));
                }
            }
            json.to_string()
        }
        // Pages carry the sign-in form's token: compare without it.
        Err(_) => body.split("name=\"csrf\" value=\"").next().unwrap_or(body).to_owned(),
    }
}

async fn ask(client: &reqwest::Client, base: &str, req: &Request) -> Answer {
    let mut builder = client.request(req.method.clone(), format!("{base}{}", req.path));
    for (name, value) in &req.headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let res = builder.send().await.unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path));
    let status = res.status();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in res.headers() {
        let name = name.as_str().to_owned();
        if ["date", "x-request-id", "connection", "keep-alive"].contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let value = if name == "set-cookie" {
            // The cookie's name and attributes; its sealed value differs every time.
            let (pair, attributes) = value.split_once(';').unwrap_or((&value, ""));
            format!("{}=…;{attributes}", pair.split('=').next().unwrap_or(""))
        } else {
            value
        };
        headers.entry(name).or_default().push(value);
    }
    for values in headers.values_mut() {
        values.sort();
    }
    let text = res.text().await.unwrap_or_else(|e| panic!("{} {}{}: body: {e}", req.method, base, req.path));
    let body = normalised(&text);
    Answer { status, headers, body }
}

struct Request {
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<Vec<u8>>,
}

fn get(path: &'static str) -> Request {
    Request { method: Method::GET, path, headers: Vec::new(), body: None }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_front_answers_every_request_as_rockets_own_server_does() {
    let api = Api::start(&[]).await;
    let ours = api.server.url();
    let theirs = format!("http://{}", rockets_own_server(api.server.service.clone()).await);
    let jwks = crate::support::http().get(format!("{ours}/.well-known/jwks.json")).send().await.expect("jwks");
    let etag: &'static str = Box::leak(jwks.headers()["etag"].to_str().expect("etag").to_owned().into_boxed_str());
    let bearer: &'static str = Box::leak(format!("Bearer {}", api.issuer).into_boxed_str());
    let form = "application/x-www-form-urlencoded";
    let requests = vec![
        // The JWKS (the front's short path) and the other documents.
        get("/.well-known/jwks.json"),
        Request { headers: vec![("if-none-match", etag)], ..get("/.well-known/jwks.json") },
        Request { headers: vec![("if-none-match", "\"other\", W/\"x\"")], ..get("/.well-known/jwks.json") },
        Request { method: Method::HEAD, ..get("/.well-known/jwks.json") },
        Request { method: Method::HEAD, headers: vec![("if-none-match", etag)], ..get("/.well-known/jwks.json") },
        get("/.well-known/jwks.json?x=1"),
        get("/.well-known/openid-configuration"),
        get("/.well-known/oauth-authorization-server"),
        get("/healthz"),
        get("/readyz"),
        // Bodies: a form, JSON, an empty one, one too long, one malformed.
        Request {
            method: Method::POST,
            headers: vec![("content-type", form)],
            body: Some(b"grant_type=client_credentials&client_id=nobody&client_secret=wrong".to_vec()),
            ..get("/oauth/token")
        },
        Request {
            method: Method::POST,
            headers: vec![("content-type", "application/json"), ("authorization", bearer)],
            body: Some(br#"{"sub":"alice","aud":["api"]}"#.to_vec()),
            ..get("/api/v1/tokens")
        },
        Request {
            method: Method::POST,
            headers: vec![("content-type", "application/json"), ("authorization", bearer)],
            body: Some(br#"{"sub":"#.to_vec()),
            ..get("/api/v1/tokens")
        },
        Request {
            method: Method::POST,
            headers: vec![("content-type", "application/json"), ("authorization", bearer)],
            body: Some(format!(r#"{{"sub":"{}","aud":["api"]}}"#, "a".repeat(70 * 1024)).into_bytes()),
            ..get("/api/v1/tokens")
        },
        Request {
            method: Method::POST,
            headers: vec![("content-type", form)],
            body: Some(Vec::new()),
            ..get("/oauth/introspect")
        },
        // Errors: unknown paths and methods, a missing or wrong credential.
        get("/no/such/page"),
        get("/api/v1/keys"),
        Request { headers: vec![("authorization", "Bearer kt_nope")], ..get("/api/v1/keys") },
        Request { method: Method::DELETE, ..get("/.well-known/jwks.json") },
        // The dashboard: pages that set cookies and forms that read them.
        get("/admin/login"),
        get("/admin"),
        Request {
            method: Method::POST,
            headers: vec![("content-type", form), ("cookie", "keyturn_form=forged; other=1")],
            body: Some(b"name=alice&password=wrong&csrf=x".to_vec()),
            ..get("/admin/login")
        },
    ];
    let http1 = crate::support::http();
    let http2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("h2 client");
    let mut differ = Vec::new();
    for (protocol, client) in [("HTTP/1.1", &http1), ("HTTP/2", &http2)] {
        for req in &requests {
            let (a, b) = (ask(client, &ours, req).await, ask(client, &theirs, req).await);
            if a != b {
                differ.push(format!("{protocol} {} {}:\n  front:  {a:?}\n  Rocket: {b:?}", req.method, req.path));
            }
        }
    }
    assert!(differ.is_empty(), "{} answers differ:\n{}", differ.len(), differ.join("\n"));
}
