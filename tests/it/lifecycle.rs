//! The lifecycle over long stretches of fake time, through the real service and a real
//! SQLite file, asserting DESIGN.md invariants 1–3 at every step.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use keyturn::clock::{Clock, Instant};
use keyturn::keys::lifecycle::Transition;
use keyturn::keys::{Algorithm, KeyState};
use keyturn::service::rotation::ScheduledRotations;
use keyturn::service::tokens::IssueRequest;
use keyturn::service::{Actor, Keyturn};
use time::macros::datetime;

use crate::support::config;

/// A small deterministic generator, so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

struct Issued {
    jti: String,
    kid: String,
    token: String,
    exp: Instant,
}

/// Checks invariants 1–3 at `now` for the tokens issued so far (`fresh` were issued at now).
fn check(service: &Keyturn, algorithms: &[Algorithm], tokens: &[Issued], fresh: &[&Issued], step: usize) {
    let now = service.now();
    let published = service.published();
    let policy = service.policy();
    let jwks: JwkSet = serde_json::from_slice(&published.jwks.body).expect("jwks");
    let live_kids: Vec<String> = published.keys.iter().map(|k| k.kid.to_string()).collect();

    // 3: exactly one active key per configured algorithm.
    for alg in algorithms {
        let active = published.keys.iter().filter(|k| k.alg == *alg && k.state == KeyState::Active).count();
        assert_eq!(active, 1, "step {step}: {alg} has {active} active keys");
    }
    // 2: every token still within exp + leeway has its key published; the JWKS holds only
    // pending, active and retired keys.
    for t in tokens {
        if t.exp + policy.leeway > now {
            assert!(jwks.find(&t.kid).is_some(), "step {step}: token {} (exp {}) lost its key {}", t.jti, t.exp, t.kid);
        }
    }
    for jwk in &jwks.keys {
        let kid = jwk.common.key_id.clone().expect("kid");
        assert!(live_kids.contains(&kid), "step {step}: {kid} is published but not live");
    }
    // 1: a token is signed only by a key published for at least the lead (bootstrap keys
    // excepted: no verifier could hold a token of theirs before them), and verifies with
    // nothing but the published JWKS.
    for t in fresh {
        let key = published.keys.iter().find(|k| k.kid.as_str() == t.kid).expect("signing key is live");
        let bootstrap = key.activated_at == Some(key.created_at);
        assert!(
            bootstrap || now - key.published_at >= policy.publish_lead,
            "step {step}: {} signed after only {} of publication",
            t.kid,
            now - key.published_at
        );
        let jwk = jwks.find(&t.kid).expect("published");
        let alg: Algorithm = format!("{:?}", jwk.common.key_algorithm.expect("alg")).parse().expect("known alg");
        let mut v = Validation::new(alg.jwt());
        v.validate_exp = false;
        v.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&t.token, &DecodingKey::from_jwk(jwk).expect("key"), &v)
            .unwrap_or_else(|e| panic!("step {step}: token does not verify with the JWKS: {e}"));
    }
}

/// Runs `days` of fake time in random steps of `step_range` seconds, issuing tokens with
/// random lifetimes, and returns (steps, rotations, expiries).
async fn simulate(
    env: &[(&str, &str)],
    algorithms: &[Algorithm],
    start: Instant,
    days: u64,
    step_range: (u64, u64),
    seed: u64,
) -> (usize, usize, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::fake(start);
    let service = Keyturn::open(config(dir.path(), env), clock.clone()).await.expect("open");
    let max_ttl = service.policy().max_token_ttl.as_secs();
    let end = start + Duration::from_secs(days * 86_400);
    let mut rng = Rng(seed);
    let mut tokens: Vec<Issued> = Vec::new();
    let (mut steps, mut rotations, mut expiries) = (0, 0, 0);
    let actor = Actor::system();
    while service.now() < end {
        clock.advance(Duration::from_secs(rng.between(step_range.0, step_range.1)));
        let report = service.tick().await.expect("tick");
        for t in &report.applied {
            match t {
                Transition::Rotate { .. } => rotations += 1,
                Transition::Expire { .. } => expiries += 1,
                _ => {}
            }
        }
        let before = tokens.len();
        for alg in algorithms {
            let req = IssueRequest {
                sub: format!("user-{}", rng.between(1, 50)),
                aud: vec!["api".into()],
                ttl: Some(Duration::from_secs(rng.between(1, max_ttl))),
                alg: Some(*alg),
                ..IssueRequest::default()
            };
            let issued = service.tokens().issue_token(&req, &actor).await.expect("issue");
            let exp = service.now() + Duration::from_secs(issued.expires_in);
            tokens.push(Issued { jti: issued.jti, kid: issued.kid, token: issued.access_token, exp });
        }
        let fresh: Vec<&Issued> = tokens[before..].iter().collect();
        check(&service, algorithms, &tokens, &fresh, steps);
        // Forget tokens long past, to keep each step's check small.
        let horizon = service.now() - Duration::from_secs(86_400);
        tokens.retain(|t| t.exp > horizon);
        steps += 1;
    }
    (steps, rotations, expiries)
}

#[tokio::test]
async fn a_year_of_weekly_rotations_keeps_the_invariants() {
    let start = datetime!(2026-01-01 09:30:00 UTC);
    let algs = [Algorithm::ES256, Algorithm::EdDSA];
    let (steps, rotations, expiries) =
        simulate(&[("KEYTURN_ALGORITHMS", "ES256,EdDSA")], &algs, start, 365, (600, 30 * 3600), 0x5eed_0001).await;
    // 2026 has 52 Mondays after January 1st; each algorithm rotates at each.
    assert_eq!(rotations, 52 * 2, "rotations over {steps} steps");
    assert!(expiries >= 50 * 2, "retired keys expire: {expiries}");
}

#[tokio::test]
async fn minute_level_rotations_keep_the_invariants() {
    // Every minute, with a lead just over a minute: each rotation waits for its pending key.
    let env = [
        ("KEYTURN_ROTATION_SCHEDULE", "* * * * *"),
        ("KEYTURN_JWKS_MAX_AGE", "30s"),
        ("KEYTURN_CLOCK_SKEW", "5s"),
        ("KEYTURN_PUBLISH_LEAD", "70s"),
        ("KEYTURN_MAX_TOKEN_TTL", "5m"),
        ("KEYTURN_LEEWAY", "30s"),
    ];
    let start = datetime!(2026-03-01 00:00:00 UTC);
    let (steps, rotations, _) = simulate(&env, &[Algorithm::ES256], start, 30, (5, 200), 0x5eed_0002).await;
    // After a rotation at tick t the next is due by t + 2 min (the lead passes within the
    // second fire), and applied at the first tick after that, at most 200 s later: so at
    // least one rotation every 320 s.
    assert!(rotations >= 30 * 86_400 / 320, "{rotations} rotations over {steps} steps");
}

#[tokio::test]
async fn catch_up_after_downtime_rotates_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::fake(datetime!(2026-01-06 12:00:00 UTC)); // a Tuesday
    let service = Keyturn::open(config(dir.path(), &[]), clock.clone()).await.expect("open");
    let before: HashMap<String, KeyState> =
        service.published().keys.iter().map(|k| (k.kid.to_string(), k.state)).collect();
    drop(service);

    // Down for five weeks: five fire times missed.
    clock.advance(Duration::from_secs(35 * 86_400));
    let service = Keyturn::open(config(dir.path(), &[]), clock.clone()).await.expect("reopen");
    let activations: Vec<_> = service
        .audit()
        .page(None, 1000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "key.activate")
        .collect();
    assert_eq!(activations.len(), 1, "one catch-up rotation: {activations:?}");
    assert!(activations[0].detail.as_deref().unwrap_or("").contains("scheduled rotation"));
    let pending_before =
        before.iter().find(|(_, s)| **s == KeyState::Pending).map(|(k, _)| k.clone()).expect("pending");
    let active_now = service.published().signer(Algorithm::ES256).expect("active").kid().to_string();
    assert_eq!(active_now, pending_before, "the key published before the downtime took over");

    // Ticking again at the same instant changes nothing more.
    assert!(service.tick().await.expect("tick").applied.is_empty());
    // Neither does a restart at the same instant.
    drop(service);
    let service = Keyturn::open(config(dir.path(), &[]), clock).await.expect("reopen");
    let count = service
        .audit()
        .page(None, 1000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action == "key.activate")
        .count();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_rotation_job_rotates_and_housekeeping_catches_up_only_what_it_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Opened on a Tuesday: the next fire time of the default weekly schedule is Monday 00:00.
    let clock = Clock::fake(datetime!(2026-01-06 12:00:00 UTC));
    let service = Keyturn::open(config(dir.path(), &[]), clock.clone()).await.expect("open");
    let active = |s: &Keyturn| s.published().signer(Algorithm::ES256).expect("active").kid().to_string();
    // Other transitions (the retired key expiring) may come with any run; rotations are counted.
    let rotations = |r: keyturn::service::rotation::TickReport| {
        r.applied.iter().filter(|t| matches!(t, Transition::Rotate { .. })).count()
    };
    let first = active(&service);

    // At the fire time, housekeeping (beside a running rotation job) leaves the rotation to
    // the job; the job's tick applies it.
    clock.set(datetime!(2026-01-12 00:00:00 UTC));
    assert_eq!(
        rotations(service.housekeeping(ScheduledRotations::LeftToTheJob).await.expect("housekeeping")),
        0,
        "the job's to apply"
    );
    assert_eq!(active(&service), first);
    assert_eq!(rotations(service.tick().await.expect("the rotation job")), 1);
    let second = active(&service);
    assert_ne!(second, first);

    // A fire time the job missed (this process did not hold the lease then, say) is applied
    // by housekeeping once the grace has passed, and only then.
    clock.set(datetime!(2026-01-19 00:00:05 UTC));
    assert_eq!(
        rotations(service.housekeeping(ScheduledRotations::LeftToTheJob).await.expect("housekeeping")),
        0,
        "within the grace"
    );
    assert_eq!(active(&service), second);
    clock.set(datetime!(2026-01-19 00:00:00 UTC) + keyturn::service::rotation::ROTATION_JOB_GRACE);
    assert_eq!(
        rotations(service.housekeeping(ScheduledRotations::LeftToTheJob).await.expect("housekeeping")),
        1,
        "caught up"
    );
    assert_ne!(active(&service), second);

    // Without a rotation job (a schedule the cron scheduler cannot run), housekeeping applies
    // the scheduled rotation at its fire time.
    let third = active(&service);
    clock.set(datetime!(2026-01-26 00:00:00 UTC));
    assert_eq!(rotations(service.housekeeping(ScheduledRotations::AppliedHere).await.expect("housekeeping")), 1);
    assert_ne!(active(&service), third);
}
