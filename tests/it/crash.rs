//! Crash consistency: the real daemon is killed with SIGKILL at random moments while it
//! rotates, issues and revokes, over and over; after every restart the invariants hold and
//! no key or acknowledged token record is lost (DESIGN.md invariant 5).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use keyturn::store::{args, Dialect};

use crate::daemon::{client, fast_env, keyturn_once, Daemon};
use crate::support::{rows, scalar};

fn env() -> Vec<(&'static str, &'static str)> {
    fast_env(&[("KEYTURN_ALGORITHMS", "ES256,RS256")])
}

struct Acked {
    jti: String,
    kid: String,
}

/// Keys whose activation skipped the lead on purpose (bootstrap and emergencies).
fn emergency_kids(audit: &[Value]) -> BTreeSet<String> {
    audit
        .iter()
        .filter(|e| {
            matches!(e["action"].as_str(), Some("key.bootstrap" | "key.rotate.emergency" | "key.activate.emergency"))
        })
        .filter_map(|e| e["target"].as_str().map(str::to_owned))
        .collect()
}

fn check(d: &Daemon, key: &str, db: &crate::support::Db, known: &mut BTreeSet<String>, acked: &[Acked], round: usize) {
    // The key list is read from the database and the JWKS from memory, rebuilt just after
    // each transition commits: read both until they describe the same moment.
    let (keys, published, state) =
        crate::support::eventually("the JWKS and the key states to agree", Duration::from_secs(5), || {
            let keys = d.get("/api/v1/keys", Some(key))["keys"].as_array().expect("keys").clone();
            let jwks = d.get("/.well-known/jwks.json", None);
            let published: BTreeSet<String> = jwks["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .map(|k| k["kid"].as_str().expect("kid").to_owned())
                .collect();
            let state: HashMap<String, String> = keys
                .iter()
                .map(|k| (k["kid"].as_str().expect("kid").to_owned(), k["state"].as_str().expect("state").to_owned()))
                .collect();
            // The JWKS is exactly the pending, active and retired keys.
            let live: BTreeSet<String> = state
                .iter()
                .filter(|(_, s)| matches!(s.as_str(), "pending" | "active" | "retired"))
                .map(|(k, _)| k.clone())
                .collect();
            (published == live).then_some((keys, published, state))
        });

    // No key lost.
    for kid in known.iter() {
        assert!(state.contains_key(kid), "round {round}: key {kid} vanished");
    }
    known.extend(state.keys().cloned());
    // Invariant 3: exactly one active key per algorithm.
    for alg in ["ES256", "RS256"] {
        let n = keys.iter().filter(|k| k["alg"] == alg && k["state"] == "active").count();
        assert_eq!(n, 1, "round {round}: {alg} has {n} active keys");
    }

    if db.dialect() == Dialect::Sqlite {
        let integrity: String = rows(db, "PRAGMA integrity_check", args![])[0].get(0).expect("integrity");
        assert_eq!(integrity, "ok", "round {round}");
    }
    let audit = d.audit(key);
    let emergency = emergency_kids(&audit);
    let now = scalar(
        db,
        match db.dialect() {
            Dialect::Sqlite => "SELECT unixepoch()",
            Dialect::Postgres => "SELECT CAST(extract(epoch FROM now()) AS BIGINT)",
        },
        args![],
    );
    for t in acked {
        // Every acknowledged token was durably recorded...
        let row: Option<(i64, i64)> = rows(db, "SELECT iat, exp FROM issued_tokens WHERE jti = ?1", args![t.jti])
            .first()
            .map(|r| (r.get(0).expect("iat"), r.get(1).expect("exp")));
        let (iat, exp) = row.unwrap_or_else(|| panic!("round {round}: acknowledged token {} was not recorded", t.jti));
        // ...its key stays published while it lives (invariant 2)...
        if exp + 1 > now && state.get(&t.kid).map(String::as_str) != Some("revoked") {
            assert!(published.contains(&t.kid), "round {round}: live token {} lost its key {}", t.jti, t.kid);
        }
        // ...and it was signed by a key published for the lead, unless that key was an
        // audited emergency or bootstrap activation (invariant 1).
        if !emergency.contains(&t.kid) {
            let published_at = scalar(db, "SELECT published_at FROM signing_keys WHERE kid = ?1", args![t.kid]);
            assert!(
                iat - published_at >= 2,
                "round {round}: token {} signed {}s after its key was published",
                t.jti,
                iat - published_at
            );
        }
    }
}

#[test]
fn sigkill_at_random_moments_keeps_invariants_and_loses_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    keyturn_once(&data, &["init"], &env());
    let admin =
        keyturn_once(&data, &["apikey", "create", "--role", "admin", "--name", "crash"], &env()).trim().to_owned();
    let db = crate::support::database(&data, &env());
    let mut known = BTreeSet::new();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let mut seed: u64 = 0x00c0_ffee;
    let rounds = 32;
    for round in 0..rounds {
        let d = Daemon::start(&data, &env(), "crash");
        check(&d, &admin, &db, &mut known, &acked.lock().expect("lock"), round);

        // Load while the lifecycle runs: tokens, emergency rotations, the odd revocation.
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (stop, acked, url, admin) = (stop.clone(), acked.clone(), d.url.clone(), admin.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let alg = if n % 2 == 0 { "ES256" } else { "RS256" };
                    let res = c
                        .post(format!("{url}/api/v1/tokens"))
                        .bearer_auth(&admin)
                        .json(&json!({"sub": "s", "aud": "a", "ttl": "3s", "alg": alg}))
                        .send();
                    if let Ok(r) = res {
                        if r.status().is_success() {
                            if let Ok(v) = r.json::<Value>() {
                                acked.lock().expect("lock").push(Acked {
                                    jti: v["jti"].as_str().unwrap_or_default().into(),
                                    kid: v["kid"].as_str().unwrap_or_default().into(),
                                });
                            }
                        }
                    }
                    if n % 7 == 0 {
                        let _ = c
                            .post(format!("{url}/api/v1/keys/rotate"))
                            .bearer_auth(&admin)
                            .json(&json!({"mode": "emergency", "alg": alg}))
                            .send();
                    }
                }
            })
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(100 + seed % 1400));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load thread");
    }
    let d = Daemon::start(&data, &env(), "crash");
    check(&d, &admin, &db, &mut known, &acked.lock().expect("lock"), rounds);
    let tokens = acked.lock().expect("lock").len();
    assert!(tokens > 100, "the load did run: {tokens} tokens");
    let audit = d.audit(&admin);
    let rotations =
        audit.iter().filter(|e| e["action"] == "key.activate" || e["action"] == "key.rotate.emergency").count();
    assert!(rotations >= rounds, "rotations happened throughout: {rotations}");
    eprintln!(
        "crash test: {rounds} SIGKILLs, {tokens} acknowledged tokens, {rotations} rotations, {} keys",
        known.len()
    );
}
