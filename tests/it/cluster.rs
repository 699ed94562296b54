//! Several `keyturn serve` nodes on one PostgreSQL server of the test's own: one key set,
//! changes on every node within a second, nothing lost when the database goes away.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::daemon::{client, keyturn_once, rotators, Daemon};
use crate::pg::PgServer;
use crate::support::eventually;

const ISSUER: &str = "https://keyturn.cluster.test";
const SECRET: &str = "Y2x1c3Rlci1jb29raWUtc2VjcmV0LTMyLWJ5dGVzISE=";

/// A cluster's shared settings: one database, one key-encryption key, one cookie secret,
/// one issuer; each node has its own data dir.
pub(crate) struct Cluster {
    root: tempfile::TempDir,
    url: String,
    kek: PathBuf,
}

impl Cluster {
    pub(crate) fn new(server: &PgServer, database: &str) -> Cluster {
        Cluster::at(server.database(database))
    }

    /// A cluster on the database at `url` (a multi-host URL, say).
    pub(crate) fn at(url: String) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let kek = root.path().join("kek");
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("random");
        std::fs::write(&kek, bytes).expect("kek");
        std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        Cluster { url, kek, root }
    }

    pub(crate) fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("KEYTURN_DATABASE_URL", self.url.as_str()),
            ("KEYTURN_KEK_FILE", self.kek.to_str().expect("utf8")),
            ("KEYTURN_SECRET_KEY", SECRET),
            ("KEYTURN_ISSUER", ISSUER),
        ]
    }

    pub(crate) fn data(&self, node: &str) -> PathBuf {
        self.root.path().join(node)
    }

    pub(crate) fn node(&self, name: &str, extra: &[(&str, &str)]) -> Daemon {
        let mut env = self.env();
        env.extend_from_slice(extra);
        Daemon::start(&self.data(name), &env, name)
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
        keyturn_once(&self.data("cli"), args, &self.env()).trim().to_owned()
    }
}

pub(crate) fn etag(d: &Daemon, path: &str) -> (String, Vec<u8>) {
    let res = client().get(format!("{}{path}", d.url)).send().expect("get");
    assert!(res.status().is_success(), "{path}: {}", res.status());
    let tag = res.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (tag, res.bytes().expect("body").to_vec())
}

pub(crate) fn post(d: &Daemon, path: &str, key: &str, body: Value) -> (u16, Value) {
    let res = client().post(format!("{}{path}", d.url)).bearer_auth(key).json(&body).send().expect("post");
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

pub(crate) fn introspect(d: &Daemon, verifier: &str, token: &str) -> Option<bool> {
    let res = client()
        .post(format!("{}/oauth/introspect", d.url))
        .bearer_auth(verifier)
        .form(&[("token", token)])
        .send()
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json::<Value>().ok()?["active"].as_bool()
}

/// Every node serves the same bytes for `path`, with the same ETag.
fn same_everywhere(nodes: &[&Daemon], path: &str) -> Option<String> {
    let first = etag(nodes[0], path);
    nodes[1..].iter().all(|n| etag(n, path) == first).then_some(first.0)
}

#[test]
fn changes_on_one_node_reach_every_node_within_a_second() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "propagation");
    cluster.cli(&["init"]);
    let admin = cluster.cli(&["apikey", "create", "--role", "admin", "--name", "ops"]);
    let issuer = cluster.cli(&["apikey", "create", "--role", "issuer", "--name", "svc"]);
    let verifier = cluster.cli(&["apikey", "create", "--role", "verifier", "--name", "gw"]);
    let (a, b, c) = (cluster.node("a", &[]), cluster.node("b", &[]), cluster.node("c", &[]));
    let nodes = [&a, &b, &c];
    let second = Duration::from_secs(1);

    // One key set and one discovery document, byte for byte, on every node.
    let before =
        eventually("the same JWKS on every node", second, || same_everywhere(&nodes, "/.well-known/jwks.json"));
    for doc in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        assert!(same_everywhere(&nodes, doc).is_some(), "{doc} differs between nodes");
    }

    // A key-set change on A is served by B and C within a second, with A's ETag.
    let (status, _) = post(&a, "/api/v1/keys/rotate", &admin, json!({"mode": "emergency"}));
    assert_eq!(status, 200);
    let after = etag(&a, "/.well-known/jwks.json").0;
    assert_ne!(after, before, "the emergency rotation changed the key set");
    eventually("B and C to serve A's new key set", second, || {
        (same_everywhere(&nodes, "/.well-known/jwks.json") == Some(after.clone())).then_some(())
    });

    // A revocation made on A blocks introspection on B and C within a second.
    let (status, token) = post(&a, "/api/v1/tokens", &issuer, json!({"sub": "alice", "aud": "orders"}));
    assert_eq!(status, 200, "{token}");
    let token = token["access_token"].as_str().expect("token").to_owned();
    assert_eq!(introspect(&b, &verifier, &token), Some(true), "a token issued on A is active on B");
    let (status, _) = post(&a, "/api/v1/revocations", &admin, json!({"sub": "alice", "reason": "test"}));
    assert_eq!(status, 201);
    eventually("B and C to refuse the revoked token", second, || {
        (introspect(&b, &verifier, &token) == Some(false) && introspect(&c, &verifier, &token) == Some(false))
            .then_some(())
    });

    // An API key revoked from the command line (on no node at all) stops working on C
    // within a second.
    let listing = cluster.cli(&["apikey", "list"]);
    let id = listing.lines().find(|l| l.contains("\tgw\tverifier\t")).and_then(|l| l.split('\t').next()).expect("id");
    cluster.cli(&["apikey", "revoke", id]);
    eventually("C to refuse the revoked API key", second, || introspect(&c, &verifier, &token).is_none().then_some(()));

    // Refresh-token reuse is seen across nodes: used on A, replayed on B, the family dies.
    let (status, pair) = post(&a, "/api/v1/tokens", &issuer, json!({"sub": "bob", "aud": "orders", "refresh": true}));
    assert_eq!(status, 200, "{pair}");
    let refresh = pair["refresh_token"].as_str().expect("refresh token").to_owned();
    let redeem = |d: &Daemon, token: &str| {
        let res = client()
            .post(format!("{}/oauth/token", d.url))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .send()
            .expect("refresh");
        (res.status().as_u16(), res.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, next) = redeem(&a, &refresh);
    assert_eq!(status, 200, "{next}");
    let successor = next["refresh_token"].as_str().expect("successor").to_owned();
    // Past the grace window (10 s by default) a replay is reuse; with the grace, a replay
    // gets the same successor, on any node.
    let (status, again) = redeem(&b, &refresh);
    assert_eq!(status, 200, "within the grace window a retry on another node is answered: {again}");
    assert_eq!(again["refresh_token"].as_str(), Some(successor.as_str()), "the same successor on every node");
}

#[test]
fn refresh_reuse_on_another_node_revokes_the_family() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "reuse");
    cluster.cli(&["init"]);
    let issuer = cluster.cli(&["apikey", "create", "--role", "issuer", "--name", "svc"]);
    let no_grace = [("KEYTURN_REFRESH_GRACE", "0s")];
    let (a, b) = (cluster.node("a", &no_grace), cluster.node("b", &no_grace));
    let (status, pair) = post(&a, "/api/v1/tokens", &issuer, json!({"sub": "bob", "aud": "orders", "refresh": true}));
    assert_eq!(status, 200, "{pair}");
    let refresh = pair["refresh_token"].as_str().expect("refresh token").to_owned();
    let redeem = |d: &Daemon, token: &str| {
        client()
            .post(format!("{}/oauth/token", d.url))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .send()
            .expect("refresh")
    };
    let first = redeem(&a, &refresh);
    assert_eq!(first.status().as_u16(), 200);
    let successor = first.json::<Value>().expect("json")["refresh_token"].as_str().expect("successor").to_owned();
    assert_eq!(redeem(&b, &refresh).status().as_u16(), 400, "a replay on B is reuse");
    assert_eq!(redeem(&a, &successor).status().as_u16(), 400, "and the family is revoked everywhere");
}

#[test]
fn ten_nodes_started_at_once_on_an_empty_database_make_one_key_set() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "stampede");
    let algs = [("KEYTURN_ALGORITHMS", "ES256,EdDSA")];
    let mut env = cluster.env();
    env.extend_from_slice(&algs);
    let mut nodes: Vec<Daemon> =
        (0..10).map(|i| Daemon::spawn(&cluster.data(&format!("n{i}")), &env, &format!("n{i}"))).collect();
    for n in &mut nodes {
        n.wait_ready(Duration::from_secs(60));
    }
    let refs: Vec<&Daemon> = nodes.iter().collect();
    eventually("one JWKS on every node", Duration::from_secs(5), || same_everywhere(&refs, "/.well-known/jwks.json"));
    let db = crate::support::Db::open(keyturn::store::Location::Postgres(Box::new(
        keyturn::store::Target::parse(&cluster.url).expect("url"),
    )));
    let counts = crate::support::rows(
        &db,
        "SELECT alg, state, count(*) FROM signing_keys GROUP BY alg, state ORDER BY alg, state",
        keyturn::store::args![],
    );
    let counts: Vec<(String, String, i64)> =
        counts.iter().map(|r| (r.get(0).expect("alg"), r.get(1).expect("state"), r.get(2).expect("n"))).collect();
    let want: Vec<(String, String, i64)> = ["ES256", "EdDSA"]
        .iter()
        .flat_map(|a| [(a.to_string(), "active".to_string(), 1), (a.to_string(), "pending".to_string(), 1)])
        .collect();
    assert_eq!(counts, want, "exactly one active and one pending key per algorithm");
    let migrations = crate::support::scalar(&db, "SELECT version FROM keyturn_schema", keyturn::store::args![]);
    assert_eq!(migrations, keyturn::store::SCHEMA_VERSION);
}

#[test]
fn a_node_with_another_key_encryption_key_refuses_to_join() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "wrong_kek");
    let _a = cluster.node("a", &[]);
    let other = cluster.root.path().join("other-kek");
    std::fs::write(&other, [7u8; 32]).expect("kek");
    let mut env = cluster.env();
    env.retain(|(k, _)| *k != "KEYTURN_KEK_FILE");
    env.push(("KEYTURN_KEK_FILE", other.to_str().expect("utf8")));
    let data_b = cluster.data("b");
    env.push(("KEYTURN_DATA_DIR", data_b.to_str().expect("utf8")));
    let out = crate::support::run_keyturn(&["serve"], &env, cluster.root.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not decrypt"), "{stderr}");
    let no_secret: Vec<(&str, &str)> = cluster.env().into_iter().filter(|(k, _)| *k != "KEYTURN_SECRET_KEY").collect();
    let out = crate::support::run_keyturn(&["apikey", "list"], &no_secret, cluster.root.path());
    assert!(String::from_utf8_lossy(&out.stderr).contains("same cookie secret"), "a node without the cookie secret");
}

/// Issues tokens on `nodes` until `stop`, recording every answered token's jti and every
/// refusal's status.
pub(crate) fn load(
    nodes: Vec<String>,
    key: String,
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<(u16, bool)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let c = client();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let url = &nodes[i % nodes.len()];
            i += 1;
            let Ok(res) = c
                .post(format!("{url}/api/v1/tokens"))
                .bearer_auth(&key)
                .json(&json!({"sub": "load", "aud": "api"}))
                .send()
            else {
                continue;
            };
            let status = res.status().as_u16();
            let retry_after = res.headers().contains_key("retry-after");
            if status == 200 {
                let body: Value = res.json().expect("json");
                answered.lock().expect("lock").push(body["jti"].as_str().expect("jti").to_owned());
            } else {
                refused.lock().expect("lock").push((status, retry_after));
            }
        }
    })
}

#[test]
fn postgresql_stopped_under_load_answers_503_loses_nothing_and_recovers_by_itself() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "outage");
    cluster.cli(&["init"]);
    let issuer = cluster.cli(&["apikey", "create", "--role", "issuer", "--name", "svc"]);
    let verifier = cluster.cli(&["apikey", "create", "--role", "verifier", "--name", "gw"]);
    // Introspection answers from memory while the node's word from the database is younger
    // than max_revocation_lag: a minute here, so that it can be seen doing so.
    let lag = [("KEYTURN_MAX_REVOCATION_LAG", "60s")];
    let (a, b) = (cluster.node("a", &lag), cluster.node("b", &lag));
    let (status, token) = post(&a, "/api/v1/tokens", &issuer, json!({"sub": "before", "aud": "api"}));
    assert_eq!(status, 200);
    let token = token["access_token"].as_str().expect("token").to_owned();
    let jwks_before = etag(&a, "/.well-known/jwks.json");

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            load(vec![a.url.clone(), b.url.clone()], issuer.clone(), stop.clone(), answered.clone(), refused.clone())
        })
        .collect();
    eventually("tokens issued under load", Duration::from_secs(10), || {
        (answered.lock().expect("lock").len() > 50).then_some(())
    });

    server.halt();
    for d in [&a, &b] {
        eventually("/readyz to say the database is unavailable", Duration::from_secs(10), || {
            let res = client().get(format!("{}/readyz", d.url)).send().ok()?;
            (res.status().as_u16() == 503).then(|| res.text().unwrap_or_default())
        });
    }
    eventually("issuance refused with 503 while the database is down", Duration::from_secs(10), || {
        (refused.lock().expect("lock").iter().filter(|(s, retry)| *s == 503 && *retry).count() > 20).then_some(())
    });
    let refusals = refused.lock().expect("lock").clone();
    assert!(refusals.iter().all(|(s, retry)| *s == 503 && *retry), "only 503 with Retry-After: {refusals:?}");
    // Served from memory meanwhile: the key set, discovery, and introspection.
    assert_eq!(etag(&b, "/.well-known/jwks.json"), jwks_before, "the same key set while the database is down");
    assert_eq!(introspect(&b, &verifier, &token), Some(true), "introspection answers from memory");

    server.resume();
    for d in [&a, &b] {
        eventually("/readyz to recover without a restart", Duration::from_secs(20), || {
            client().get(format!("{}/readyz", d.url)).send().ok()?.status().is_success().then_some(())
        });
    }
    let count_before = answered.lock().expect("lock").len();
    eventually("issuance to resume on both nodes", Duration::from_secs(20), || {
        (answered.lock().expect("lock").len() > count_before + 50).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }

    // Every answered token is in the database.
    let db = crate::support::database(&cluster.data("a"), &cluster.env());
    let stored: BTreeSet<String> = crate::support::rows(&db, "SELECT jti FROM issued_tokens", keyturn::store::args![])
        .iter()
        .map(|r| r.get(0).expect("jti"))
        .collect();
    let answered = answered.lock().expect("lock").clone();
    let missing: Vec<&String> = answered.iter().filter(|j| !stored.contains(*j)).collect();
    assert!(missing.is_empty(), "{} of {} answered tokens were not recorded", missing.len(), answered.len());
    drop(db);
}

#[test]
fn db_copy_moves_one_sqlite_node_into_a_cluster_without_reissuing_anything() {
    let server = PgServer::start();
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("single");
    let single = [crate::support::SQLITE, ("KEYTURN_ISSUER", ISSUER)];
    keyturn_once(&data, &["init"], &single);
    let issuer =
        keyturn_once(&data, &["apikey", "create", "--role", "issuer", "--name", "svc"], &single).trim().to_owned();
    let verifier =
        keyturn_once(&data, &["apikey", "create", "--role", "verifier", "--name", "gw"], &single).trim().to_owned();
    let admin =
        keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "ops"], &single).trim().to_owned();
    let d = Daemon::start(&data, &single, "single");
    let (_, kept) = post(&d, "/api/v1/tokens", &issuer, json!({"sub": "alice", "aud": "orders"}));
    let (_, revoked) = post(&d, "/api/v1/tokens", &issuer, json!({"sub": "mallory", "aud": "orders"}));
    let (status, _) = post(&d, "/api/v1/revocations", &admin, json!({"sub": "mallory", "reason": "left"}));
    assert_eq!(status, 201);
    let (kept, revoked) =
        (kept["access_token"].as_str().expect("token"), revoked["access_token"].as_str().expect("token"));
    let kids = crate::support::kids(&d.get("/.well-known/jwks.json", None));
    let audit_before = d.audit(&admin).len();
    assert!(d.signal_and_wait("TERM", Duration::from_secs(15)).success());

    // Copy, then run a cluster node on the copy with the single node's key file.
    let url = server.database("moved");
    let out = keyturn_once(&data, &["db", "copy", "--to", &url], &single);
    assert!(out.contains("signing_keys\t2"), "{out}");
    let again = crate::support::run_keyturn(
        &["db", "copy", "--to", &url],
        &[("KEYTURN_DATA_DIR", data.to_str().expect("utf8")), crate::support::SQLITE],
        root.path(),
    );
    assert_eq!(again.status.code(), Some(1), "a second copy is refused");
    let said = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(said.contains("was copied to") && said.contains("keyturn db reuse"), "{said}");
    // The old single node refuses to serve the copied database, saying why and how to undo
    // it (the reported split brain waiting to happen).
    let refused = crate::support::run_keyturn(
        &["serve"],
        &[("KEYTURN_DATA_DIR", data.to_str().expect("utf8")), crate::support::SQLITE, ("KEYTURN_PORT", "0")],
        root.path(),
    );
    assert_eq!(refused.status.code(), Some(1), "the old node refuses to start");
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(said.contains("was copied to") && said.contains("Point database_url at the copy"), "{said}");
    let kek = data.join("kek");
    let env = [
        ("KEYTURN_DATABASE_URL", url.as_str()),
        ("KEYTURN_KEK_FILE", kek.to_str().expect("utf8")),
        ("KEYTURN_SECRET_KEY", SECRET),
        ("KEYTURN_ISSUER", ISSUER),
    ];
    let node = Daemon::start(&root.path().join("node"), &env, "node");
    assert_eq!(crate::support::kids(&node.get("/.well-known/jwks.json", None)), kids, "the same kids");
    assert_eq!(introspect(&node, &verifier, kept), Some(true), "a token issued before the copy is active");
    assert_eq!(introspect(&node, &verifier, revoked), Some(false), "a revocation made before the copy holds");
    let audit = node.audit(&admin);
    assert!(audit.len() > audit_before, "the audit log came along, with the copy recorded");
    assert!(audit.iter().any(|e| e["action"] == "database.copy"));
    let (status, _) = post(&node, "/api/v1/tokens", &issuer, json!({"sub": "bob", "aud": "orders"}));
    assert_eq!(status, 200, "the cluster issues with the copied keys");

    // Going back: `db reuse` takes the mark away (audited), and the single node serves again.
    let out = keyturn_once(&data, &["db", "reuse"], &single);
    assert!(out.contains("is served again"), "{out}");
    let back = Daemon::start(&data, &single, "single-again");
    assert_eq!(crate::support::kids(&back.get("/.well-known/jwks.json", None)), kids, "the same keys");
    assert!(back.audit(&admin).iter().any(|e| e["action"] == "database.reuse"), "the reuse is audited");
}

/// A strict verifier, as a gateway caches keys: it fetches the JWKS only when the last copy's
/// `max-age` has run out (by the cluster's clock), from whichever node, and never refetches
/// on an unknown kid.
struct StrictVerifier {
    jwks: jsonwebtoken::jwk::JwkSet,
    fresh_until: time::OffsetDateTime,
    fetches: usize,
}

impl StrictVerifier {
    async fn fetch(url: &str, now: time::OffsetDateTime) -> StrictVerifier {
        let mut v =
            StrictVerifier { jwks: jsonwebtoken::jwk::JwkSet { keys: Vec::new() }, fresh_until: now, fetches: 0 };
        v.refetch(url, now).await;
        v
    }

    async fn refetch(&mut self, url: &str, now: time::OffsetDateTime) {
        let res = crate::support::http().get(format!("{url}/.well-known/jwks.json")).send().await.expect("jwks");
        let max_age: i64 = res
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("max-age=").nth(1))
            .and_then(|v| v.split(',').next()?.trim().parse().ok())
            .expect("a max-age");
        self.jwks = res.json().await.expect("jwks json");
        self.fresh_until = now + time::Duration::seconds(max_age);
        self.fetches += 1;
    }

    async fn verify(&mut self, token: &str, url: &str, now: time::OffsetDateTime) -> Result<(), String> {
        if now >= self.fresh_until {
            self.refetch(url, now).await;
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let jwk = self.jwks.find(&kid).ok_or_else(|| format!("no applicable key {kid} in the cached JWKS"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        // Times are the cluster's fake clock's, checked below.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&["orders"]);
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())?.claims;
        let exp = claims["exp"].as_i64().ok_or("no exp")?;
        (exp > now.unix_timestamp()).then_some(()).ok_or_else(|| "expired".to_owned())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_and_a_strict_verifier_through_two_hundred_rotations() {
    let server = tokio::task::spawn_blocking(PgServer::start).await.expect("pg");
    let cluster = Cluster::new(&server, "rotations");
    let clock = crate::support::fake_clock();
    let mut env = cluster.env();
    env.extend_from_slice(&[
        ("KEYTURN_ALGORITHMS", "ES256,EdDSA"),
        ("KEYTURN_ROTATION_SCHEDULE", "* * * * *"),
        ("KEYTURN_PUBLISH_LEAD", "30s"),
        ("KEYTURN_JWKS_MAX_AGE", "20s"),
        ("KEYTURN_CLOCK_SKEW", "5s"),
        ("KEYTURN_MAX_TOKEN_TTL", "30s"),
        ("KEYTURN_LEEWAY", "5s"),
    ]);
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(crate::support::start(&cluster.data(name), &env, clock.clone()).await);
    }
    let svc = nodes[0].service.clone();
    let issuer = tokio::spawn(async move {
        svc.clients()
            .create_api_key(keyturn::service::apikeys::Role::Issuer, "svc", &keyturn::service::Actor::cli())
            .await
            .expect("key")
            .1
            .to_string()
    })
    .await
    .expect("join");
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let db = crate::support::database_of(nodes[0].service.config());
    let activations = |db: &crate::support::Db| {
        crate::support::scalar(
            db,
            "SELECT count(*) FROM signing_keys WHERE activated_at IS NOT NULL",
            keyturn::store::args![],
        )
    };
    let bootstrapped = activations(&db);
    let mut verifier = StrictVerifier::fetch(&urls[0], clock.now()).await;
    let (mut live, mut verified, mut failures, mut step) = (Vec::<String>::new(), 0usize, Vec::<String>::new(), 0usize);
    let mut last_tag = String::new();
    // 200 rotations of each algorithm.
    while activations(&db) - bootstrapped < 400 {
        step += 1;
        assert!(step < 5_000, "400 rotations did not happen in 5000 steps");
        clock.advance(Duration::from_secs(10));
        // Every node's housekeeping runs; the lease holder applies what fell due.
        for n in &nodes {
            let s = n.service.clone();
            tokio::spawn(async move { s.tick().await.expect("tick") }).await.expect("join");
        }
        // Every node serves the same key set (same ETag) within a second of a change.
        let mut tags = Vec::new();
        let started = std::time::Instant::now();
        loop {
            tags.clear();
            for u in &urls {
                let res = crate::support::http().get(format!("{u}/.well-known/jwks.json")).send().await.expect("jwks");
                tags.push(res.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned());
            }
            if tags.iter().all(|t| *t == tags[0]) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "step {step}: nodes disagree for over a second: {tags:?}"
            );
        }
        if tags[0] != last_tag {
            last_tag = tags[0].clone();
        }
        let active: i64 = crate::support::scalar(
            &db,
            "SELECT count(*) FROM signing_keys WHERE state = 'active' GROUP BY alg ORDER BY count(*) DESC LIMIT 1",
            keyturn::store::args![],
        );
        assert_eq!(active, 1, "step {step}: never two active keys per algorithm");
        // A token from a node in turn, for each algorithm; every live token still verifies.
        for alg in ["ES256", "EdDSA"] {
            let url = &urls[step % urls.len()];
            let res = crate::support::http()
                .post(format!("{url}/api/v1/tokens"))
                .bearer_auth(&issuer)
                .json(&json!({"sub": "alice", "aud": "orders", "alg": alg}))
                .send()
                .await
                .expect("issue");
            assert_eq!(res.status().as_u16(), 200, "step {step}: issuance on {url}");
            live.push(res.json::<Value>().await.expect("json")["access_token"].as_str().expect("token").to_owned());
        }
        let now = clock.now();
        let mut still = Vec::new();
        for token in live.drain(..) {
            let from = &urls[(step + 1) % urls.len()];
            match verifier.verify(&token, from, now).await {
                Ok(()) => {
                    verified += 1;
                    still.push(token);
                }
                Err(e) if e == "expired" => {}
                Err(e) => failures.push(format!("step {step}: {e}")),
            }
        }
        live = still;
    }
    assert!(
        failures.is_empty(),
        "{} failed verifications of {verified}: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "{} rotations in {step} steps; {verified} verifications, {} JWKS fetches",
        activations(&db) - bootstrapped,
        verifier.fetches
    );
    for n in nodes {
        n.stop().await.expect("stop");
    }
    tokio::task::spawn_blocking(move || drop((db, server))).await.expect("join");
}

#[test]
fn a_paused_rotator_never_applies_a_transition_after_its_lease_lapsed() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "paused");
    cluster.cli(&["init"]);
    let admin = cluster.cli(&["apikey", "create", "--role", "admin", "--name", "ops"]);
    let fast = crate::daemon::FAST_LIFECYCLE;
    let (a, b) = (cluster.node("a", fast), cluster.node("b", fast));
    let activations = |d: &Daemon| d.audit(&admin).iter().filter(|e| e["action"] == "key.activate").count();
    eventually("two scheduled rotations", Duration::from_secs(30), || (activations(&a) >= 2).then_some(()));
    let holder = rotators(&a.audit(&admin)).last().expect("a rotator").clone();
    let a_holds = a.log_text().contains(&holder.replace("rotator ", "holder="));
    let (paused, other) = if a_holds { (a, b) } else { (b, a) };

    // Paused (as a stopped VM or a long GC would leave it): the other node takes over once
    // the lease lapses, even if the paused one was inside a transaction.
    paused.signal("STOP");
    let before = rotators(&other.audit(&admin)).len();
    eventually("the other node to rotate", Duration::from_secs(30), || {
        rotators(&other.audit(&admin))[before..].iter().any(|r| *r != holder).then_some(())
    });
    paused.signal("CONT");
    let now = activations(&other);
    eventually("two more rotations with both nodes running", Duration::from_secs(30), || {
        (activations(&other) >= now + 2).then_some(())
    });
    // Whatever the paused node had planned, it applied nothing on its old lease: every
    // transition it applied after the other node took the lease over comes after it took
    // the lease anew (leases can change hands between running nodes; they never overlap).
    // Log lines start with their UTC time, so they compare as text.
    let other_log = other.log_text();
    let lease_lines = |log: &str| -> String {
        log.lines()
            .filter(|l| l.contains("rotator lease") || l.contains("applied lifecycle"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let takeover = other_log.lines().rfind(|l| l.contains("took the rotator lease")).unwrap_or_else(|| {
        panic!(
            "no takeover in {holder}'s peer:\n{}\n-- paused:\n{}",
            lease_lines(&other_log),
            lease_lines(&paused.log_text())
        )
    });
    let since = &takeover[..27];
    let paused_log = paused.log_text();
    let later: Vec<&str> = paused_log.lines().filter(|l| l.len() > 27 && &l[..27] > since).collect();
    if let Some(applied) = later.iter().position(|l| l.contains("applied lifecycle transition")) {
        let retaken = later.iter().position(|l| l.contains("took the rotator lease"));
        assert!(
            retaken.is_some_and(|t| t < applied),
            "the paused node applied a transition on its lapsed lease:\n{}",
            later.join("\n")
        );
    }
    let keys = other.get("/api/v1/keys", Some(&admin));
    let active = keys["keys"].as_array().expect("keys").iter().filter(|k| k["state"] == "active").count();
    assert_eq!(active, 1, "one active key");
}

#[test]
fn policy_changes_and_failed_sign_ins_count_across_the_cluster() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "shared_state");
    cluster.cli(&["init"]);
    let admin = cluster.cli(&["apikey", "create", "--role", "admin", "--name", "ops"]);
    let (a, b) = (cluster.node("a", &[]), cluster.node("b", &[]));
    let second = Duration::from_secs(1);

    // A policy change through A is in force on B within a second.
    let res = client()
        .put(format!("{}/api/v1/schedule", a.url))
        .bearer_auth(&admin)
        .json(&json!({"jwks_max_age": "2m"}))
        .send()
        .expect("put schedule");
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().unwrap_or_default());
    eventually("B to serve the new JWKS max-age", second, || {
        let res = client().get(format!("{}/.well-known/jwks.json", b.url)).send().ok()?;
        let cc = res.headers().get("cache-control")?.to_str().ok()?.to_owned();
        cc.contains("max-age=120").then_some(())
    });

    // Failed sign-ins for one account, spread over both nodes, are limited as one count.
    let sign_in = |d: &Daemon| {
        let fields = [("name", "root"), ("password", "not the password at all")];
        crate::support::post_form_as_browser_blocking(&client(), &d.url, "/admin/login", "/admin/login", &fields)
            .status()
            .as_u16()
    };
    let answers: Vec<u16> = (0..6).map(|i| sign_in(if i % 2 == 0 { &a } else { &b })).collect();
    assert!(answers[..5].iter().all(|s| *s == 401), "five refusals: {answers:?}");
    assert_eq!(answers[5], 429, "the sixth failure, on either node, is limited: {answers:?}");
    assert_eq!(sign_in(&a), 429, "and limited on the other node too");
}
