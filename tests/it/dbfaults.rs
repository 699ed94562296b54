//! The cluster rides out its database: a PostgreSQL server stalled (every process stopped,
//! as a frozen VM or a saturated disk looks), a node cut off from it alone, a server that
//! turns read-only, and a failover to a synchronous standby. Each on servers of the test's
//! own; the nodes are the real binary.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{etag, introspect, load, post, Cluster};
use crate::daemon::{client, Daemon};
use crate::pg::PgServer;
use crate::support::eventually;

/// What a node answers: status, whether `Retry-After` came with it, how long it took.
struct Answer {
    status: u16,
    retry_after: bool,
    took: Duration,
    body: Value,
}

fn timed(request: reqwest::blocking::RequestBuilder) -> Answer {
    let started = Instant::now();
    let res = request.send().expect("the node answers");
    let status = res.status().as_u16();
    let retry_after = res.headers().contains_key("retry-after");
    let body = res.json().unwrap_or(Value::Null);
    Answer { status, retry_after, took: started.elapsed(), body }
}

/// Asserts `answer` is a 503 with `Retry-After`, given within `limit`.
fn refused_in_time(what: &str, answer: &Answer, limit: Duration) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert!(answer.retry_after, "{what}: Retry-After");
    assert!(answer.took <= limit, "{what}: answered after {:?}, past {limit:?}", answer.took);
}

/// Every jti in `answered` is recorded in the cluster's database.
fn all_recorded(cluster: &Cluster, answered: &[String]) {
    let db = crate::support::database(&cluster.data("check"), &cluster.env());
    let stored: BTreeSet<String> = crate::support::rows(&db, "SELECT jti FROM issued_tokens", keyturn::store::args![])
        .iter()
        .map(|r| r.get(0).expect("jti"))
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|j| !stored.contains(*j)).collect();
    assert!(missing.is_empty(), "{} of {} answered tokens were not recorded", missing.len(), answered.len());
}

#[test]
fn a_stalled_database_answers_503_within_the_deadline_and_everything_returns_by_itself() {
    let server = PgServer::start();
    let cluster = Cluster::new(&server, "stall");
    cluster.cli(&["init"]);
    let issuer = cluster.cli(&["apikey", "create", "--role", "issuer", "--name", "svc"]);
    let admin = cluster.cli(&["apikey", "create", "--role", "admin", "--name", "ops"]);
    let a = cluster.node("a", &[("KEYTURN_DATABASE_TIMEOUT", "1s")]);
    let mut answered = Vec::new();
    let (status, minted) = post(
        &a,
        "/api/v1/tokens",
        &issuer,
        json!({"sub": "alice", "aud": "api", "refresh": true, "session_label": "x"}),
    );
    assert_eq!(status, 200, "{minted}");
    answered.push(minted["jti"].as_str().expect("jti").to_owned());
    let refresh_token = minted["refresh_token"].as_str().expect("refresh token").to_owned();
    let access = minted["access_token"].as_str().expect("token").to_owned();

    server.signal("STOP");
    // One second of deadline; the rest is slack for a loaded machine, far below the 15 s
    // and more a stalled database cost before.
    let limit = Duration::from_millis(2500);
    let url = |path: &str| format!("{}{path}", a.url);
    let issue = || client().post(url("/api/v1/tokens")).bearer_auth(&issuer).json(&json!({"sub": "bob", "aud": "api"}));
    refused_in_time("issuance", &timed(issue()), limit);
    let refresh = || {
        client()
            .post(url("/oauth/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())])
    };
    refused_in_time("refresh", &timed(refresh()), limit);
    let revoke = client().post(url("/oauth/revoke")).bearer_auth(&issuer).form(&[("token", access.as_str())]);
    refused_in_time("revocation", &timed(revoke), limit);
    let register = client()
        .post(url("/api/v1/clients"))
        .bearer_auth(&admin)
        .json(&json!({"name": "late", "audiences": ["api"], "scopes": [], "max_ttl": "10m"}));
    refused_in_time("an administrator's write", &timed(register), limit);
    let ready = timed(client().get(url("/readyz")));
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.took <= limit, "/readyz answered after {:?}", ready.took);
    // Served from memory meanwhile.
    for path in ["/.well-known/jwks.json", "/.well-known/openid-configuration"] {
        let served = timed(client().get(url(path)));
        assert_eq!(served.status, 200, "{path}");
    }

    server.signal("CONT");
    eventually("/readyz to recover by itself", Duration::from_secs(20), || {
        client().get(url("/readyz")).send().ok()?.status().is_success().then_some(())
    });
    let issued: Value = eventually("issuance to come back", Duration::from_secs(20), || {
        let res = issue().send().ok()?;
        res.status().is_success().then(|| res.json().expect("json"))
    });
    answered.push(issued["jti"].as_str().expect("jti").to_owned());
    // The refresh refused during the stall may have committed after its deadline: asked
    // again, it answers (within the refresh grace it is the same exchange).
    let again = timed(refresh());
    assert_eq!(again.status, 200, "the refresh, asked again: {}", again.body);
    all_recorded(&cluster, &answered);
}

/// A TCP proxy to the database that can stop forwarding, as a network partition looks to the
/// node behind it: its connections stay open and nothing arrives either way (what is sent
/// meanwhile is lost; a connection that lost some is broken and the node must drop it).
struct Partition {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Partition {
    fn to(upstream: u16) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for downstream in listener.incoming().map_while(Result::ok) {
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (down2, up2) = (downstream.try_clone().expect("clone"), up.try_clone().expect("clone"));
                let (f1, f2) = (flag.clone(), flag.clone());
                std::thread::spawn(move || pump(downstream, up, &f1));
                std::thread::spawn(move || pump(up2, down2, &f2));
            }
        });
        Partition { port, cut }
    }

    fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if cut.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn verify_status(d: &Daemon, token: &str) -> u16 {
    client().get(format!("{}/auth/verify", d.url)).bearer_auth(token).send().expect("verify").status().as_u16()
}

#[test]
fn a_node_cut_off_from_the_database_stops_saying_active_within_max_revocation_lag() {
    let server = PgServer::start();
    let proxy = Partition::to(server.port);
    let cluster = Cluster::new(&server, "partition");
    cluster.cli(&["init"]);
    let issuer = cluster.cli(&["apikey", "create", "--role", "issuer", "--name", "svc"]);
    let verifier = cluster.cli(&["apikey", "create", "--role", "verifier", "--name", "gw"]);
    let env = cluster.env();
    let direct = env.iter().find(|(k, _)| *k == "KEYTURN_DATABASE_URL").expect("url").1;
    let through_proxy = direct.replace(&format!(":{}/", server.port), &format!(":{}/", proxy.port));
    let lag = Duration::from_secs(3);
    let a = cluster.node(
        "a",
        &[
            ("KEYTURN_DATABASE_URL", through_proxy.as_str()),
            ("KEYTURN_MAX_REVOCATION_LAG", "3s"),
            ("KEYTURN_DATABASE_TIMEOUT", "1s"),
        ],
    );
    let b = cluster.node("b", &[]);
    let (status, minted) = post(&b, "/api/v1/tokens", &issuer, json!({"sub": "mallory", "aud": "api"}));
    assert_eq!(status, 200);
    let token = minted["access_token"].as_str().expect("token").to_owned();
    eventually("node a to know the token", Duration::from_secs(10), || {
        introspect(&a, &verifier, &token)?.then_some(())
    });
    assert_eq!(verify_status(&a, &token), 200);

    proxy.cut(true);
    let cut_at = Instant::now();
    let res = client().post(format!("{}/oauth/revoke", b.url)).bearer_auth(&issuer).form(&[("token", &token)]).send();
    assert!(res.expect("revoke").status().is_success());
    assert_eq!(introspect(&b, &verifier, &token), Some(false), "revoked on b");
    // A key node a has never seen must be looked up, and cannot be: that is 503, not 401.
    let newcomer = cluster.cli(&["apikey", "create", "--role", "verifier", "--name", "gw2"]);
    let res = client()
        .post(format!("{}/oauth/introspect", a.url))
        .bearer_auth(&newcomer)
        .form(&[("token", token.as_str())])
        .send()
        .expect("introspect");
    assert_eq!(res.status().as_u16(), 503, "a key that cannot be looked up");
    assert!(res.headers().contains_key("retry-after"));
    // Node a cannot hear of it. It may say "active" only while its last word from the
    // database is younger than max_revocation_lag (its checks run each second; the slack is
    // for a loaded machine); then it answers 503, never "active".
    let mut said_active_until = None;
    eventually("node a to stop answering from stale state", lag + Duration::from_secs(5), || {
        let res = client()
            .post(format!("{}/oauth/introspect", a.url))
            .bearer_auth(&verifier)
            .form(&[("token", token.as_str())])
            .send()
            .ok()?;
        match res.status().as_u16() {
            503 => Some(()),
            200 => {
                let body: Value = res.json().ok()?;
                if body["active"] == true {
                    said_active_until = Some(cut_at.elapsed());
                }
                None
            }
            other => panic!("introspection answered {other}"),
        }
    });
    if let Some(last) = said_active_until {
        assert!(last <= lag + Duration::from_millis(1500), "said active {last:?} after the cut; the bound is {lag:?}");
    }
    assert_eq!(verify_status(&a, &token), 503, "/auth/verify neither");
    let ready = client().get(format!("{}/readyz", a.url)).send().expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let why = ready.text().expect("body");
    assert!(why.contains("max_revocation_lag"), "{why}");
    let metrics = client().get(format!("{}/metrics", a.url)).send().expect("metrics").text().expect("text");
    let lag_seen: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyturn_revocation_lag_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("keyturn_revocation_lag_seconds in {metrics}"));
    assert!(lag_seen > lag.as_secs_f64(), "{lag_seen}");
    assert!(metrics.contains("keyturn_database_up 0\n"), "{metrics}");
    assert_eq!(etag(&a, "/.well-known/jwks.json"), etag(&b, "/.well-known/jwks.json"), "the key set is still served");

    proxy.cut(false);
    eventually("node a to learn of the revocation", Duration::from_secs(20), || {
        (!introspect(&a, &verifier, &token)?).then_some(())
    });
    assert_eq!(verify_status(&a, &token), 401);
}

#[test]
fn a_server_that_turns_read_only_has_its_connections_dropped_at_once() {
    let server = PgServer::start();
    let cluster = Cluster::at(format!("{}?target_session_attrs=read-write", server.database("readonly")));
    cluster.cli(&["init"]);
    let issuer = cluster.cli(&["apikey", "create", "--role", "issuer", "--name", "svc"]);
    let a = cluster.node("a", &[]);
    let connections = || {
        let n = server.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keyturn'");
        n.trim().parse::<u32>().expect("count")
    };
    let issue = || post(&a, "/api/v1/tokens", &issuer, json!({"sub": "bob", "aud": "api"}));
    for _ in 0..20 {
        assert_eq!(issue().0, 200);
    }
    // As a primary a failover demoted looks to the nodes still connected to it.
    server.psql("postgres", "ALTER SYSTEM SET default_transaction_read_only = on");
    server.psql("postgres", "SELECT pg_reload_conf()");
    eventually("the server to be read-only", Duration::from_secs(10), || {
        (server.psql("readonly", "SHOW default_transaction_read_only").trim() == "on").then_some(())
    });
    let (status, body) = issue();
    assert_eq!(status, 503, "a read-only server is an unavailable database, not a server error: {body}");
    let (status, _) = issue();
    assert_eq!(status, 503);
    // The URL asks for a server that takes writes: none is to be had, so no connection is
    // kept open to this one (the listener for changes aside, which only reads).
    eventually("the node's connections to be closed", Duration::from_secs(10), || (connections() <= 1).then_some(()));
    assert!(a.log_text().contains("is read-only"), "logged");

    server.psql("postgres", "ALTER SYSTEM SET default_transaction_read_only = off");
    server.psql("postgres", "SELECT pg_reload_conf()");
    eventually("issuance to come back", Duration::from_secs(20), || (issue().0 == 200).then_some(()));
}

#[test]
fn a_failover_to_a_synchronous_standby_loses_no_answered_token() {
    let primary = PgServer::start();
    primary.database("failover");
    let standby = primary.synchronous_standby();
    let url = format!(
        "postgresql://keyturn@127.0.0.1:{},127.0.0.1:{}/failover?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let cluster = Cluster::at(url);
    cluster.cli(&["init"]);
    let issuer = cluster.cli(&["apikey", "create", "--role", "issuer", "--name", "svc"]);
    let fast = [("KEYTURN_DATABASE_TIMEOUT", "1s"), ("KEYTURN_LEASE_TTL", "3s")];
    let (a, b) = (cluster.node("a", &fast), cluster.node("b", &fast));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            load(vec![a.url.clone(), b.url.clone()], issuer.clone(), stop.clone(), answered.clone(), refused.clone())
        })
        .collect();
    eventually("tokens issued under load", Duration::from_secs(10), || {
        (answered.lock().expect("lock").len() > 100).then_some(())
    });

    let before_kill = answered.lock().expect("lock").len();
    primary.signal("KILL");
    eventually("issuance refused while there is no primary", Duration::from_secs(10), || {
        (!refused.lock().expect("lock").is_empty()).then_some(())
    });
    standby.promote();
    let promoted_at = Instant::now();
    let at_promotion = answered.lock().expect("lock").len();
    eventually("issuance back on the promoted standby", Duration::from_secs(10), || {
        (answered.lock().expect("lock").len() > at_promotion + 50).then_some(())
    });
    let back_after = promoted_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let refusals = refused.lock().expect("lock").clone();
    assert!(refusals.iter().all(|(s, retry)| *s == 503 && *retry), "only 503 with Retry-After: {refusals:?}");
    let answered = answered.lock().expect("lock").clone();
    eprintln!(
        "failover: {} tokens answered ({before_kill} before the kill), {} refused, issuance back {back_after:?} after the promotion",
        answered.len(),
        refusals.len()
    );
    all_recorded(&cluster, &answered);
    // One key set on both nodes, and one of them rotates: the lease is held on the new primary.
    eventually("one key set", Duration::from_secs(10), || {
        (etag(&a, "/.well-known/jwks.json") == etag(&b, "/.well-known/jwks.json")).then_some(())
    });
    eventually("a node to hold the rotator lease on the new primary", Duration::from_secs(10), || {
        let sql = "SELECT count(*) FROM leases WHERE expires_at > extract(epoch FROM now())";
        (standby.psql("failover", sql).trim() == "1").then_some(())
    });
}
