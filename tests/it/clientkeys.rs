//! private_key_jwt (RFC 7523 §2.2) against the real binary: a client registered with public
//! keys (inline, or at a `jwks_uri` a small server in the test publishes) authenticates at
//! the token, introspection and revocation endpoints with assertions it signs; it rotates
//! its keys by publishing new ones, with no help from keyturn; each assertion works once,
//! on one node of a cluster only; a flood of unknown key ids costs the sender, not the
//! client's key server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::daemon::{client, Daemon};
use crate::support::{eventually, keyturn_ok, p256_key};

const ISSUER: &str = "https://keyturn.assertions.test";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// One of a client's signing keys: its kid and private half.
pub struct ClientKey {
    pub kid: String,
    pub key: EncodingKey,
    pub jwk: Value,
}

impl ClientKey {
    pub fn new(kid: &str) -> ClientKey {
        let (key, mut jwk) = p256_key();
        jwk["kid"] = Value::from(kid);
        jwk["use"] = Value::from("sig");
        ClientKey { kid: kid.to_owned(), key, jwk }
    }

    /// An assertion of `client_id` for `aud`, with `jti`, valid for a minute.
    pub fn assertion(&self, client_id: &str, aud: &str, jti: &str) -> String {
        self.assertion_with(client_id, json!({"aud": aud, "jti": jti}))
    }

    /// An assertion of `client_id` with `claims` over the usual ones.
    pub fn assertion_with(&self, client_id: &str, claims: Value) -> String {
        let now = keyturn::clock::to_unix(keyturn::clock::Clock::system().now());
        let mut all = json!({"iss": client_id, "sub": client_id, "iat": now, "exp": now + 60});
        for (k, v) in claims.as_object().expect("claims") {
            all[k] = v.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &all, &self.key).expect("sign")
    }
}

/// A key server the test controls: it publishes a JWKS and counts the fetches.
pub struct KeyServer {
    pub url: String,
    keys: Arc<Mutex<Value>>,
    pub fetches: Arc<AtomicUsize>,
}

impl KeyServer {
    pub fn start(keys: &[&ClientKey]) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://127.0.0.1:{}/jwks.json", listener.local_addr().expect("addr").port());
        let served = Arc::new(Mutex::new(Value::Null));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (set, count) = (served.clone(), fetches.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                count.fetch_add(1, Ordering::SeqCst);
                let body = set.lock().expect("keys").to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let server = KeyServer { url, keys: served, fetches };
        server.publish(keys);
        server
    }

    pub fn publish(&self, keys: &[&ClientKey]) {
        *self.keys.lock().expect("keys") = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    }
}

/// `POST {path}` on `d` with `form`: the status and the JSON answer (`Null` for none).
fn post(d: &Daemon, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let res = client().post(format!("{}{path}", d.url)).form(form).send().expect("post");
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

fn token(d: &Daemon, assertion: &str) -> (u16, Value) {
    post(
        d,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
}

fn client_id(created: &Value) -> String {
    created["client_id"].as_str().expect("client_id").to_owned()
}

fn admin(data: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = keyturn_ok(data, &["apikey", "create", "--role", "admin", "--name", "ops"], env);
    out.lines().find(|l| l.starts_with("kt_")).expect("key").trim().to_owned()
}

fn register(d: &Daemon, admin: &str, body: Value) -> (u16, Value) {
    let res = client().post(format!("{}/api/v1/clients", d.url)).bearer_auth(admin).json(&body).send().expect("post");
    (res.status().as_u16(), res.json().expect("json"))
}

#[test]
fn a_client_with_a_jwks_uri_authenticates_everywhere_and_rotates_its_own_keys() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    // The failure throttle is raised so the flood below reaches the key checks.
    let env = [("KEYTURN_ISSUER", ISSUER), ("KEYTURN_AUTH_FAILURE_LIMIT", "1000")];
    let d = Daemon::start(&data, &env, "clientkeys");
    let admin = admin(&data, &env);
    let first = ClientKey::new("2026-12");
    let server = KeyServer::start(&[&first]);
    let (status, created) = register(
        &d,
        &admin,
        json!({"name": "batch", "audiences": ["api"], "scopes": ["read"], "jwks_uri": server.url}),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["token_endpoint_auth_method"], "private_key_jwt");
    assert!(created.get("client_secret").is_none(), "no secret is made: {created}");
    let id = client_id(&created);
    let token_url = format!("{ISSUER}/oauth/token");

    // The token endpoint, with the endpoint or the issuer as audience.
    let (status, body) = token(&d, &first.assertion(&id, &token_url, "t-1"));
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().expect("token").to_owned();
    let (status, _) = token(&d, &first.assertion(&id, ISSUER, "t-2"));
    assert_eq!(status, 200);
    // The same assertion again: refused, and nothing issued.
    let (status, body) = token(&d, &first.assertion(&id, &token_url, "t-1"));
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "a replay: {body}");

    // Introspection and revocation take the client's assertion too.
    let with = |aud: &str, jti: &str| {
        vec![
            ("client_assertion_type".to_owned(), ASSERTION_TYPE.to_owned()),
            ("client_assertion".to_owned(), first.assertion(&id, aud, jti)),
            ("token".to_owned(), access.clone()),
        ]
    };
    let form = with(&format!("{ISSUER}/oauth/introspect"), "i-1");
    let res = client().post(format!("{}/oauth/introspect", d.url)).form(&form).send().expect("introspect");
    assert_eq!(res.status().as_u16(), 200);
    let answer: Value = res.json().expect("json");
    assert_eq!((answer["active"].as_bool(), answer["client_id"].as_str()), (Some(true), Some(id.as_str())));
    let form = with(&format!("{ISSUER}/oauth/revoke"), "r-1");
    let res = client().post(format!("{}/oauth/revoke", d.url)).form(&form).send().expect("revoke");
    assert_eq!(res.status().as_u16(), 200);
    let form = with(ISSUER, "i-2");
    let answer: Value =
        client().post(format!("{}/oauth/introspect", d.url)).form(&form).send().expect("i").json().expect("json");
    assert_eq!(answer["active"], false, "revoked with the client's assertion");

    // The client rotates: it publishes a new key beside the old, then drops the old one.
    // keyturn fetches again when an assertion names a key its copy lacks.
    let second = ClientKey::new("2027-01");
    server.publish(&[&first, &second]);
    let (status, body) = token(&d, &second.assertion(&id, &token_url, "t-3"));
    assert_eq!(status, 200, "the new key at once: {body}");
    server.publish(&[&second]);
    let fetched = server.fetches.load(Ordering::SeqCst);
    // A flood of unknown key ids: at most one fetch per 10 s, so none now.
    let stranger = ClientKey::new("unknown");
    for n in 0..20 {
        let (status, _) = token(&d, &stranger.assertion(&id, &token_url, &format!("s-{n}")));
        assert_eq!(status, 401);
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), fetched, "unknown kids cost the sender, not the key server");
    let log = d.log_text();
    assert!(log.contains("no key of the issuer's key set verifies it"), "the reason is logged");
    assert!(!log.contains(&first.assertion(&id, &token_url, "t-1")[..40]), "never the assertion");
}

#[test]
fn a_client_with_inline_keys_and_every_refusal_of_an_assertion() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let env = [("KEYTURN_ISSUER", ISSUER)];
    let d = Daemon::start(&data, &env, "clientkeys-inline");
    let admin = admin(&data, &env);
    let key = ClientKey::new("k1");
    let jwks = json!({"keys": [key.jwk]});
    let path = root.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).expect("write");
    let out = keyturn_ok(
        &data,
        &["client", "create", "--name", "cron", "--audience", "api", "--jwks-file", path.to_str().expect("path")],
        &env,
    );
    assert!(!out.contains("client_secret"), "{out}");
    let id = out.lines().find_map(|l| l.strip_prefix("client_id=")).expect("client_id").to_owned();
    let token_url = format!("{ISSUER}/oauth/token");
    let (status, body) = token(&d, &key.assertion(&id, &token_url, "ok-1"));
    assert_eq!(status, 200, "{body}");

    // Each refused with invalid_client, and nothing issued.
    let now = keyturn::clock::to_unix(keyturn::clock::Clock::system().now());
    let other = ClientKey::new("k1");
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": id, "sub": id, "aud": token_url, "exp": now + 60, "jti": "h"}),
        &EncodingKey::from_secret(b"guess"),
    )
    .expect("sign");
    let refusals = [
        ("another audience", key.assertion(&id, "https://elsewhere.test/oauth/token", "r-1")),
        ("expired", key.assertion_with(&id, json!({"aud": token_url, "jti": "r-2", "exp": now - 120}))),
        ("valid for days", key.assertion_with(&id, json!({"aud": token_url, "jti": "r-3", "exp": now + 86400}))),
        ("no jti", key.assertion_with(&id, json!({"aud": token_url}))),
        ("another client's id", key.assertion_with(&id, json!({"aud": token_url, "jti": "r-4", "sub": "kc_x"}))),
        ("another key", other.assertion(&id, &token_url, "r-5")),
        ("HMAC", hmac),
    ];
    let before =
        crate::support::scalar(&crate::support::database(&data, &env), "SELECT COUNT(*) FROM issued_tokens", &[]);
    for (what, assertion) in refusals {
        let (status, body) = token(&d, &assertion);
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{what}: {body}");
    }
    let after =
        crate::support::scalar(&crate::support::database(&data, &env), "SELECT COUNT(*) FROM issued_tokens", &[]);
    assert_eq!(before, after, "nothing issued");
    // Malformed requests are 400 and say why.
    let (status, body) = post(
        &d,
        "/oauth/token",
        &[("grant_type", "client_credentials"), ("client_assertion_type", "password"), ("client_assertion", "x")],
    );
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = post(
        &d,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &key.assertion(&id, &token_url, "two-methods")),
            ("client_id", &id),
            ("client_secret", "also"),
        ],
    );
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "two methods: {body}");

    // A registered key set holds public keys only; a jwks_uri is https (http on loopback).
    let mut private = key.jwk.clone();
    private["d"] = Value::from("AAAA");
    for (body, why) in [
        (json!({"name": "x", "audiences": ["api"], "jwks": {"keys": [private]}}), "private"),
        (json!({"name": "x", "audiences": ["api"], "jwks_uri": "http://keys.example/jwks.json"}), "https"),
        (json!({"name": "x", "audiences": ["api"], "jwks": jwks, "jwks_uri": "https://k.example/j"}), "not both"),
    ] {
        let (status, answer) = register(&d, &admin, body);
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error_description"].as_str().expect("why").contains(why), "{answer}");
    }
}

#[test]
fn an_assertion_accepted_by_one_node_is_refused_by_another() {
    let server = crate::pg::PgServer::start();
    let cluster = crate::cluster::Cluster::new(&server, "assertions");
    cluster.cli(&["init"]);
    let key = ClientKey::new("k1");
    let keys = KeyServer::start(&[&key]);
    let out = cluster.cli(&["client", "create", "--name", "svc", "--audience", "api", "--jwks-uri", &keys.url]);
    let id = out.lines().find_map(|l| l.strip_prefix("client_id=")).expect("client_id").to_owned();
    let (a, b) = (cluster.node("a", &[]), cluster.node("b", &[]));
    let assertion = key.assertion(&id, "https://keyturn.cluster.test/oauth/token", "once");
    let (status, body) = token(&a, &assertion);
    assert_eq!(status, 200, "{body}");
    let (status, body) = token(&b, &assertion);
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "replayed on node b: {body}");
    // Node b fetched the client's keys too, and a fresh assertion passes there.
    let (status, _) = token(&b, &key.assertion(&id, "https://keyturn.cluster.test", "fresh"));
    assert_eq!(status, 200);
    eventually("both nodes to have fetched", Duration::from_secs(5), || {
        (keys.fetches.load(Ordering::SeqCst) >= 2).then_some(())
    });
}
