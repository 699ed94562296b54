//! What the dashboard's overview answers at a glance: the active key of each algorithm, when
//! the next rotation and activation happen, recent issuance, revocations, and warnings.

use super::Keyturn;
use crate::clock::Instant;
use crate::error::Result;
use crate::keys::lifecycle;
use crate::keys::{Algorithm, KeyState};
use crate::store;

/// One algorithm's line on the overview.
#[derive(Clone, Debug)]
pub struct AlgorithmStatus {
    pub alg: Algorithm,
    pub active_kid: Option<String>,
    pub active_since: Option<Instant>,
    pub pending_kid: Option<String>,
    /// When the pending key will activate (the next rotation).
    pub next_rotation: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct Overview {
    pub now: Instant,
    pub algorithms: Vec<AlgorithmStatus>,
    pub next_fire: Option<Instant>,
    pub tokens_24h: u64,
    pub revocations: usize,
    /// The size of the JWKS served now, in bytes.
    pub jwks_bytes: usize,
    pub warnings: Vec<String>,
}

/// Above this JWKS size the overview warns: Apache's mod_oauth2 caches no entry over 8 KB by
/// default (mod_auth_openidc 16 KB), and refetches the JWKS for every request instead.
pub const JWKS_WARN_BYTES: usize = 8 * 1024;

impl Keyturn {
    pub async fn overview(&self) -> Result<Overview> {
        let now = self.clock.now();
        let published = self.published();
        let policy = &published.policy;
        let last_exp = self.store.read(|c| Box::pin(store::tokens::last_exp_by_live_key(c))).await?;
        let requested = self.store.read(|c| Box::pin(store::lease::requests(c))).await?;
        let world = lifecycle::World {
            now,
            keys: &published.keys,
            last_token_exp: &last_exp,
            requested: &requested,
            policy,
            algorithms: &self.config.algorithms,
        };
        let mut warnings = super::policy::warnings(policy, now);
        let mut algorithms = Vec::new();
        for &alg in &self.config.algorithms {
            let active = published.keys.iter().find(|k| k.alg == alg && k.state == KeyState::Active);
            let pending = published.keys.iter().find(|k| k.alg == alg && k.state == KeyState::Pending);
            if pending.is_none() {
                warnings.push(format!(
                    "{alg} has no pending key: the next rotation cannot be graceful until one is generated"
                ));
            }
            if let Some(a) = active {
                let ends = policy.exp_limit(a);
                if ends - now < time::Duration::days(1) {
                    warnings.push(format!(
                        "{alg}'s active key {} is near the end of its planned life ({}); a rotation is due",
                        a.kid,
                        crate::clock::rfc3339(ends)
                    ));
                }
            }
            let next_rotation = match (active, pending) {
                (Some(a), Some(p)) => Some(lifecycle::promotion_time(&world, a, p).0.max(now)),
                _ => None,
            };
            algorithms.push(AlgorithmStatus {
                alg,
                active_kid: active.map(|k| k.kid.to_string()),
                active_since: active.and_then(|k| k.activated_at),
                pending_kid: pending.map(|k| k.kid.to_string()),
                next_rotation,
            });
        }
        for k in published.keys.iter().filter(|k| k.state == KeyState::Retired) {
            // A retired key leaves the JWKS after its last token's expiry plus the leeway, so
            // in normal operation it never leaves first: warn only if it really would.
            let expires = lifecycle::expiry_time(&world, k);
            if last_exp.get(&k.kid).is_some_and(|e| *e > now && expires <= *e) {
                warnings.push(format!(
                    "retired key {} leaves the JWKS at {} while tokens it signed still live",
                    k.kid,
                    crate::clock::rfc3339(expires)
                ));
            }
        }
        let jwks_bytes = published.jwks.body.len();
        if jwks_bytes > JWKS_WARN_BYTES {
            warnings.push(format!(
                "the JWKS is {:.1} KB: gateways that cache only small documents (Apache's mod_oauth2: 8 KB by default) refetch it for every request; set jwks_x5c = false to drop the certificates{}",
                jwks_bytes as f64 / 1024.0,
                if self.config.jwks_x5c { "" } else { " (already off: fewer algorithms or smaller RSA keys would help)" }
            ));
        }
        let tokens_24h = self
            .store
            .read(move |c| Box::pin(async move { store::tokens::issued_since(c, now - time::Duration::days(1)).await }))
            .await?;
        Ok(Overview {
            now,
            algorithms,
            next_fire: policy.schedule.next_after(now),
            tokens_24h,
            revocations: self.revocations.revocation_count(),
            jwks_bytes,
            warnings,
        })
    }
}

/// Tokens issued and revocations made in one period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Activity {
    pub start: Instant,
    pub issued: u64,
    pub revoked: u64,
}

impl Keyturn {
    /// Tokens issued and revocations made in each of the last `periods` periods of
    /// `period_secs`, oldest first. Periods are whole UTC hours or days (aligned to the epoch),
    /// the last one the period now falls in, so an event at 06:10 is counted in the 06:00 hour
    /// and today's events under today.
    pub async fn activity(&self, periods: i64, period_secs: i64) -> Result<Vec<Activity>> {
        let now = self.clock.now();
        let current = crate::clock::to_unix(now).div_euclid(period_secs) * period_secs;
        let since = crate::clock::from_unix(current - (periods - 1) * period_secs);
        let (issued, revoked) = self
            .store
            .read(move |c| {
                Box::pin(async move {
                    Ok((
                        store::tokens::issued_per(c, since, period_secs).await?,
                        store::revocations::created_per(c, since, period_secs).await?,
                    ))
                })
            })
            .await?;
        let at = |list: &[(i64, u64)], i: i64| list.iter().find(|(b, _)| *b == i).map_or(0, |(_, n)| *n);
        Ok((0..periods)
            .map(|i| Activity {
                start: since + time::Duration::seconds(i * period_secs),
                issued: at(&issued, i),
                revoked: at(&revoked, i),
            })
            .collect())
    }
}

impl Keyturn {
    /// The `/metrics` document: gauges read now, then the process's counters.
    /// While the database does not answer, the figures it alone knows are left out and
    /// `keyturn_database_up` says 0: an outage is when operators need the rest most.
    pub async fn metrics_text(&self) -> Result<String> {
        let jwks_bytes = self.published().jwks.body.len() as u64;
        let revocation_lag = self.shared.revocation_lag();
        let from_database = async {
            let o = self.overview().await?;
            let keys = self.store.read(|c| Box::pin(store::keys::counts(c))).await?;
            Ok::<_, crate::error::Error>((o, keys))
        };
        let state = match from_database.await {
            Ok((o, keys)) => {
                let until = |t: Instant| std::time::Duration::from_secs((t - o.now).whole_seconds().max(0) as u64);
                crate::metrics::State {
                    keys,
                    until_next_rotation: o.next_fire.map(until),
                    until_next_activation: o
                        .algorithms
                        .iter()
                        .filter_map(|a| Some((a.alg, until(a.next_rotation?))))
                        .collect(),
                    revocations: o.revocations as u64,
                    jwks_bytes,
                    database_up: true,
                    revocation_lag,
                }
            }
            Err(e) => {
                tracing::warn!("metrics without the database's figures: {e}");
                crate::metrics::State {
                    keys: Vec::new(),
                    until_next_rotation: None,
                    until_next_activation: Vec::new(),
                    revocations: self.shared.revoked().len() as u64,
                    jwks_bytes,
                    database_up: false,
                    revocation_lag,
                }
            }
        };
        Ok(self.metrics.render(&state))
    }
}
