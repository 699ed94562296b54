//! Applying the lifecycle: the periodic tick, housekeeping and the rotator lease.
//!
//! Scheduled transitions are applied only by the holder of the rotator lease, checked inside
//! each transaction, so two processes on one database never both rotate. Administrator
//! actions (emergency rotation, revocation) are applied by whichever process receives them;
//! every change is guarded by the key's current state, so none can apply twice.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use super::key_changes::{KeyView, NextView, RevokeOutcome, RotateMode, RotateOutcome};
use super::{audited, Actor, Keys, Keyturn};
use crate::clock::{self, Instant};
use crate::error::{Error, Result};
use crate::keys::lifecycle::{self, Policy, RotationCause, Transition, World};
use crate::keys::{Algorithm, KeyId, KeyRecord, KeyState};
use crate::store::{self, lease, StoreError};

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Transitions applied.
    pub applied: Vec<Transition>,
    /// Transitions due but left to the lease holder.
    pub deferred: usize,
    /// Whether this process holds the rotator lease after the tick.
    pub holds_lease: bool,
}

/// The `meta` row housekeeping writes to learn whether the database takes writes.
const WRITE_PROBE: &str = "write-probe";

/// How long after a fire time housekeeping leaves the scheduled rotation to the rotation job.
pub const ROTATION_JOB_GRACE: Duration = Duration::from_secs(10);

/// Who applies a scheduled rotation at its fire time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduledRotations {
    /// This run: the rotation job itself, start-up, a request, or housekeeping when no
    /// rotation job runs (a schedule the cron scheduler cannot run).
    AppliedHere,
    /// The rotation job, which runs beside housekeeping: housekeeping leaves a rotation whose
    /// fire time has just come to it, and applies one it missed.
    LeftToTheJob,
}

/// The fire time of a scheduled rotation that is due at that very time, which is the
/// rotation job's to apply. `None` for every other transition, and for a scheduled rotation
/// that the publish lead deferred past its fire time: housekeeping applies those.
fn scheduled_fire(t: &Transition, keys: &[KeyRecord], policy: &Policy) -> Option<Instant> {
    let Transition::Rotate { activate, cause: RotationCause::Schedule(fire), .. } = t else { return None };
    let pending = keys.iter().find(|k| &k.kid == activate)?;
    (policy.earliest_activation(pending) <= *fire).then_some(*fire)
}

pub(super) struct Snapshot {
    pub(super) keys: Vec<KeyRecord>,
    last_exp: HashMap<KeyId, Instant>,
    requested: HashMap<Algorithm, Instant>,
}

impl Keyturn {
    /// Looks at the lifecycle and applies whatever is due. Idempotent: the rotation job calls
    /// it at the schedule's fire times; start-up calls it once (catch-up), and so do graceful
    /// rotations and tests.
    pub async fn tick(&self) -> Result<TickReport> {
        self.tick_for(ScheduledRotations::AppliedHere).await
    }

    /// The housekeeping run (every second): follows other processes' changes, renews the
    /// rotator lease, applies what falls due between fire times (an activation the publish
    /// lead deferred, a graceful request, an expiry, a key whose certificate ends) and prunes
    /// revocations. With [`ScheduledRotations::LeftToTheJob`], a scheduled rotation whose fire
    /// time has just come is left to the rotation job; one it missed by more than
    /// [`ROTATION_JOB_GRACE`] (this process did not hold the lease then, or the job did not
    /// run) is applied, with a warning.
    pub async fn housekeeping(&self, scheduled: ScheduledRotations) -> Result<TickReport> {
        self.retry_failed_writes().await;
        self.clients.prune_throttle();
        self.tokens.prune_verified();
        if self.keys.undestroyed.swap(false, Ordering::AcqRel) {
            self.keys.destroy_ended_in_custody().await;
        }
        self.tick_for(scheduled).await
    }

    /// After a write failed in the database itself (a full disk), one small durable write a
    /// second until one succeeds: readiness then recovers by itself even when nothing else
    /// writes (a node out of rotation gets no requests that would).
    async fn retry_failed_writes(&self) {
        if self.store.write_failure().is_none() {
            return;
        }
        let stamp = clock::to_unix(self.clock.now()).to_be_bytes();
        if let Err(e) =
            self.store.write(move |tx| Box::pin(async move { store::meta::set(tx, WRITE_PROBE, &stamp).await })).await
        {
            tracing::warn!("the database still does not take writes: {e}");
        }
    }

    async fn tick_for(&self, scheduled: ScheduledRotations) -> Result<TickReport> {
        self.reload_if_changed().await?;
        let report = self.keys.apply_due(scheduled).await?;
        let now = self.clock.now();
        let due = self.last_prune.lock().map(|l| l.is_none_or(|t| now - t >= time::Duration::MINUTE)).unwrap_or(true);
        if due {
            self.revocations.prune(now).await?;
            self.tokens.prune_sessions(now).await?;
            self.store.write(move |tx| Box::pin(async move { store::replay::prune(tx, now).await })).await?;
            if let Ok(mut l) = self.last_prune.lock() {
                *l = Some(now);
            }
        }
        Ok(report)
    }

    /// Ends this process's use of the installation: hands the rotator lease over (so another
    /// process need not wait for it to lapse) and closes the database. What every command
    /// that opened it does before the process exits.
    pub async fn close(self) {
        if let Err(e) = self.keys.release_lease().await {
            tracing::debug!("releasing the rotator lease: {e}");
        }
    }
}

impl Keys {
    /// After a key ended (expired, revoked): destroys what a token holds of it, audited. A
    /// failure is logged; the key is out of the JWKS and never signs again either way.
    pub(super) async fn destroy_in_custody(&self, kid: &KeyId, by: &Actor) {
        match self.custodian.destroy(kid).await {
            Ok(false) => {}
            Ok(true) => {
                let (now, kid, by) = (self.clock.now(), kid.clone(), by.clone());
                let recorded = self
                    .store
                    .write(move |tx| {
                        Box::pin(async move {
                            let detail = "its private key was destroyed in the PKCS#11 token";
                            audited(tx, now, &by, "key.destroy", Some(kid.as_str()), Some(detail)).await
                        })
                    })
                    .await;
                if let Err(e) = recorded {
                    tracing::warn!("recording a key's destruction in the token: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(%kid, "the key has ended but the token did not destroy it (tried again each second): {e}");
                self.undestroyed.store(true, Ordering::Release);
            }
        }
    }

    /// Destroys what the token still holds of keys that have ended: a destruction that
    /// failed when the key ended (the token away then; tried again each housekeeping tick
    /// until it succeeds), or what ended while no process had the token open (at start-up). Keys the database does not know are left alone: another
    /// node's key not yet recorded, or another application's.
    pub(super) async fn destroy_ended_in_custody(&self) {
        let held = match self.custodian.held().await {
            Ok(held) => held,
            Err(e) => {
                self.undestroyed.store(true, Ordering::Release);
                return tracing::warn!("listing the keys the token holds: {e}");
            }
        };
        let sys = Actor { source: Some(format!("rotator {}", self.holder)), ..Actor::system() };
        for kid in held {
            let looked = kid.clone();
            let state = self.store.read(move |c| Box::pin(async move { store::keys::state(c, &looked).await })).await;
            match state {
                Ok(Some(KeyState::Expired | KeyState::Revoked)) => self.destroy_in_custody(&kid, &sys).await,
                Ok(_) => {}
                Err(e) => {
                    self.undestroyed.store(true, Ordering::Release);
                    tracing::warn!(%kid, "looking up a key the token holds: {e}");
                }
            }
        }
    }

    pub(super) async fn snapshot(&self) -> Result<Snapshot> {
        Ok(self
            .store
            .read(move |c| {
                Box::pin(async move {
                    Ok(Snapshot {
                        keys: store::keys::live(c).await?.into_iter().map(|r| r.record).collect(),
                        last_exp: store::tokens::last_exp_by_live_key(c).await?,
                        requested: lease::requests(c).await?,
                    })
                })
            })
            .await?)
    }

    pub(super) fn world<'a>(&'a self, now: Instant, s: &'a Snapshot, policy: &'a Policy) -> World<'a> {
        World {
            now,
            keys: &s.keys,
            last_token_exp: &s.last_exp,
            requested: &s.requested,
            policy,
            algorithms: &self.config.algorithms,
        }
    }

    /// Plans the lifecycle on the database's current state and, holding the rotator lease,
    /// applies each transition in its own transaction; republishes when any applied.
    pub(super) async fn apply_due(&self, scheduled: ScheduledRotations) -> Result<TickReport> {
        let now = self.clock.now();
        let policy = self.policy();
        let snap = self.snapshot().await?;
        let mut plan = lifecycle::plan(&self.world(now, &snap, &policy));
        if scheduled == ScheduledRotations::LeftToTheJob {
            plan.retain(|t| match scheduled_fire(t, &snap.keys, &policy) {
                Some(fire) if now < fire + ROTATION_JOB_GRACE => false,
                Some(fire) => {
                    tracing::warn!(transition = ?t, fire = %clock::rfc3339(fire), "a scheduled rotation was not applied at its fire time; housekeeping applies it now");
                    true
                }
                None => true,
            });
        }
        let holds_lease = self.renew_lease(now, !plan.is_empty()).await?;
        let mut report = TickReport { holds_lease, ..TickReport::default() };
        if !holds_lease {
            report.deferred = plan.len();
            return Ok(report);
        }
        // A transition that fails (a key the token cannot make now) does not hold back the
        // others (a retired key still expires on time); the first failure is the answer.
        let mut failed = None;
        for transition in plan {
            match self.apply(&transition, now, &policy).await {
                Ok(true) => report.applied.push(transition),
                Ok(false) => report.deferred += 1,
                // Another writer got there first; the next tick sees the new state.
                Err(Error::Store(StoreError::Conflict(reason))) => {
                    tracing::debug!(%reason, "transition skipped");
                    report.deferred += 1;
                }
                Err(e) => {
                    tracing::debug!(transition = ?transition, "transition failed: {e}");
                    failed.get_or_insert(e);
                }
            }
        }
        if !report.applied.is_empty() {
            self.reload().await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Takes or renews the rotator lease when needed (`want`) or when half of it has passed.
    async fn renew_lease(&self, now: Instant, want: bool) -> Result<bool> {
        let current = self.store.read(|c| Box::pin(lease::current(c))).await?;
        if let Some((holder, expires)) = &current {
            let half_left = *expires - now > self.config.lease_ttl / 2;
            if *holder == self.holder && *expires > now && half_left && !want {
                return Ok(true);
            }
            if *holder != self.holder && *expires > now {
                return Ok(false);
            }
        }
        let (holder, until) = (self.holder.clone(), now + self.config.lease_ttl);
        let took =
            self.store.write(move |tx| Box::pin(async move { lease::acquire(tx, &holder, now, until).await })).await?;
        if took == lease::Acquired::Taken {
            tracing::info!(holder = %self.holder, "took the rotator lease");
        }
        Ok(took.holds())
    }

    /// Makes a key, ready to insert, with the custodian the settings choose.
    pub(super) async fn make_key(
        &self,
        alg: Algorithm,
        state: KeyState,
        now: Instant,
        policy: &Policy,
    ) -> Result<(KeyRecord, Vec<u8>)> {
        self.ensure_kek_current().await?;
        self.custodian.make(alg, state, now, policy).await
    }

    /// Applies one planned transition in one transaction, under the lease. Returns false if
    /// the lease was lost in the meantime.
    async fn apply(&self, t: &Transition, now: Instant, policy: &Policy) -> Result<bool> {
        // The lease holder is where scheduled changes come from.
        let sys = Actor { source: Some(format!("rotator {}", self.holder)), ..Actor::system() };
        let lease_ttl = self.config.lease_ttl;
        let holder = self.holder.clone();
        // Keys are generated before the transaction: key generation is the slow part, and
        // holding the write lock for it would stall every writer.
        let fresh = match t {
            Transition::Bootstrap { alg } => Some(self.make_key(*alg, KeyState::Active, now, policy).await?),
            Transition::GeneratePending { alg } | Transition::Rotate { alg, .. } => {
                Some(self.make_key(*alg, KeyState::Pending, now, policy).await?)
            }
            _ => None,
        };
        let (leeway, applying) = (policy.leeway, t.clone());
        let applied = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    match lease::acquire(tx, &holder, now, now + lease_ttl).await? {
                        lease::Acquired::Refused => return Ok(false),
                        // Lapsed since this process last held it (paused, cut off): taken anew in
                        // the transaction it guards.
                        lease::Acquired::Taken => tracing::info!(holder = %holder, "took the rotator lease"),
                        lease::Acquired::Renewed => {}
                    }
                    let note = async |action: &str, kid: &KeyId, detail: &str| {
                        audited(tx, now, &sys, action, Some(kid.as_str()), Some(detail)).await
                    };
                    match &applying {
                        Transition::Bootstrap { alg } => {
                            let (record, sealed) =
                                fresh.as_ref().ok_or_else(|| StoreError::Conflict("no key made".into()))?;
                            store::keys::insert(tx, record, sealed).await?;
                            note(
                                "key.bootstrap",
                                &record.kid,
                                &format!("{alg}: no key for this algorithm; generated and activated at once"),
                            )
                            .await?;
                        }
                        Transition::GeneratePending { alg } => {
                            let (record, sealed) =
                                fresh.as_ref().ok_or_else(|| StoreError::Conflict("no key made".into()))?;
                            store::keys::insert(tx, record, sealed).await?;
                            note("key.generate", &record.kid, &format!("{alg}: published as pending")).await?;
                        }
                        Transition::Rotate { alg, retire, activate, cause } => {
                            let (record, sealed) =
                                fresh.as_ref().ok_or_else(|| StoreError::Conflict("no key made".into()))?;
                            let why = match cause {
                                RotationCause::Schedule(at) => {
                                    format!("scheduled rotation (fire time {})", clock::rfc3339(*at))
                                }
                                RotationCause::Requested(at) => {
                                    format!("graceful rotation requested at {}", clock::rfc3339(*at))
                                }
                                RotationCause::KeyLifeEnding => "the active key's certificate is ending".into(),
                                RotationCause::NoActiveKey => {
                                    "emergency: there was no active key, so the pending key was promoted at once".into()
                                }
                            };
                            if let Some(old) = retire {
                                store::keys::transition(tx, old, KeyState::Active, KeyState::Retired, now, None)
                                    .await?;
                                note("key.retire", old, &format!("{alg}: {why}")).await?;
                            }
                            store::keys::transition(tx, activate, KeyState::Pending, KeyState::Active, now, None)
                                .await?;
                            note("key.activate", activate, &format!("{alg}: {why}")).await?;
                            store::keys::insert(tx, record, sealed).await?;
                            note("key.generate", &record.kid, &format!("{alg}: published as pending")).await?;
                            lease::clear_request(tx, *alg).await?;
                        }
                        Transition::Expire { kid } => {
                            // Re-read inside the transaction: a token recorded a moment ago counts.
                            let row = store::keys::get(tx, kid)
                                .await?
                                .ok_or_else(|| StoreError::Conflict(format!("key {kid} vanished")))?;
                            if now < lifecycle::expires_at(&row.record, store::tokens::last_exp(tx, kid).await?, leeway)
                            {
                                return Err(StoreError::Conflict(format!(
                                    "key {kid} signed a token that expires later"
                                )));
                            }
                            store::keys::transition(tx, kid, KeyState::Retired, KeyState::Expired, now, None).await?;
                            note(
                        "key.expire",
                        kid,
                        "every token it signed has expired (plus leeway); removed from the JWKS, private key erased",
                    ).await?;
                        }
                        Transition::Retire { kid } => {
                            store::keys::transition(tx, kid, KeyState::Active, KeyState::Retired, now, None).await?;
                            note("key.retire", kid, "its algorithm is no longer configured").await?;
                        }
                        Transition::Withdraw { kid } => {
                            store::keys::transition(tx, kid, KeyState::Pending, KeyState::Expired, now, None).await?;
                            note("key.withdraw", kid, "its algorithm is no longer configured; it never signed").await?;
                        }
                    }
                    Ok(true)
                })
            })
            .await?;
        if applied {
            tracing::info!(transition = ?t, "applied lifecycle transition");
            if let Transition::Expire { kid } | Transition::Withdraw { kid } = t {
                let sys = Actor { source: Some(format!("rotator {}", self.holder)), ..Actor::system() };
                self.destroy_in_custody(kid, &sys).await;
            }
        }
        Ok(applied)
    }
}
