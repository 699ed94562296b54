//! Key changes an operator asks for: the list of keys, a rotation now (graceful or in an
//! emergency), and the revocation of a key. Each is guarded by the key's state inside its
//! transaction, so none applies twice, whichever process receives it.

use std::time::Duration;

use serde::Serialize;

use super::{audited, resolve_alg, Actor, Keys};
use crate::clock::{self, Instant};
use crate::error::{Error, Result};
use crate::keys::lifecycle::{self, Transition};
use crate::keys::{Algorithm, Custody, KeyId, KeyRecord, KeyState};
use crate::store::{self, lease, StoreError};

/// A key, its times, and what is next for it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyView {
    pub kid: String,
    pub alg: Algorithm,
    pub state: KeyState,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub created_at: Instant,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub published_at: Instant,
    #[serde(serialize_with = "clock::serialize_rfc3339_opt")]
    pub activated_at: Option<Instant>,
    #[serde(serialize_with = "clock::serialize_rfc3339_opt")]
    pub retired_at: Option<Instant>,
    #[serde(serialize_with = "clock::serialize_rfc3339_opt")]
    pub expired_at: Option<Instant>,
    #[serde(serialize_with = "clock::serialize_rfc3339_opt")]
    pub revoked_at: Option<Instant>,
    pub revoke_reason: Option<String>,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub not_after: Instant,
    /// Where its private half lives: `software` (sealed under the key-encryption key).
    pub custody: Custody,
    /// The next planned transition: `{"event": "activate"|"retire"|"expire", "at": time}`.
    pub next: Option<NextView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NextView {
    pub event: &'static str,
    #[serde(serialize_with = "clock::serialize_rfc3339_opt")]
    pub at: Option<Instant>,
}

/// Graceful or emergency rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RotateMode {
    /// Promote the pending key as soon as it has been published for the lead.
    Graceful,
    /// Sign with another key at once: the published pending key when there is one (every
    /// verifier holding the current JWKS has it), else a fresh key, which verifiers with a
    /// cached JWKS do not know until they refetch.
    Emergency,
}

/// What a rotation request did or will do.
#[derive(Clone, Debug, Serialize)]
pub struct RotateOutcome {
    pub mode: RotateMode,
    pub alg: Algorithm,
    /// The key that signs after the rotation.
    pub activate: Option<String>,
    /// The key that stops signing.
    pub retire: Option<String>,
    /// When the rotation takes (took) effect.
    pub at: String,
    /// Whether it has already happened.
    pub done: bool,
    /// Whether the key that signs was never published before (an emergency rotation with no
    /// published pending key): verifiers that cached the JWKS fail until they refetch it.
    pub fresh_key: bool,
    /// The new pending key an emergency rotation published, when it promoted the old one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// This emergency rotation repeated one answered less than `jwks_max_age` +
    /// `clock_skew` ago (a retry whose answer was lost, a second administrator, another
    /// node): nothing changed, and the other fields describe that earlier rotation.
    pub repeated: bool,
}

/// What revoking a key did.
#[derive(Clone, Debug, Serialize)]
pub struct RevokeOutcome {
    pub kid: String,
    pub previous_state: KeyState,
    /// The key activated in its place, when it was the active key.
    pub replacement: Option<String>,
    /// Tokens it signed that had not yet expired: they count as revoked from now on.
    pub live_tokens_invalidated: u64,
    /// The revocation-feed entry that says so.
    pub revocation_id: i64,
}

impl Keys {
    /// Every key (history included) with its times and next planned transition.
    pub async fn list_keys(&self) -> Result<Vec<KeyView>> {
        let all = self.store.read(|c| Box::pin(store::keys::all(c))).await?;
        let now = self.clock.now();
        let policy = self.policy();
        let snap = self.snapshot().await?;
        let upcoming = lifecycle::upcoming(&self.world(now, &snap, &policy));
        Ok(all
            .into_iter()
            .map(|row| {
                let k = row.record;
                let next = upcoming
                    .iter()
                    .find(|p| p.kid == k.kid)
                    .map(|p| NextView { event: p.event, at: p.at.map(|a| a.max(now)) });
                KeyView {
                    kid: k.kid.to_string(),
                    alg: k.alg,
                    state: k.state,
                    created_at: k.created_at,
                    published_at: k.published_at,
                    activated_at: k.activated_at,
                    retired_at: k.retired_at,
                    expired_at: k.expired_at,
                    revoked_at: k.revoked_at,
                    revoke_reason: k.revoke_reason,
                    not_after: k.not_after,
                    custody: k.custody,
                    next,
                }
            })
            .collect())
    }

    /// Rotates `alg` now: gracefully (as soon as the timing rules allow) or in an emergency.
    pub async fn rotate(&self, alg: Option<Algorithm>, mode: RotateMode, actor: &Actor) -> Result<RotateOutcome> {
        let alg = resolve_alg(&self.config, alg)?;
        let now = self.clock.now();
        let policy = self.policy();
        match mode {
            RotateMode::Graceful => {
                let by = actor.clone();
                self.store
                    .write(move |tx| {
                        Box::pin(async move {
                            lease::request(tx, alg, now, &by.name).await?;
                            audited(tx, now, &by, "key.rotate.requested", Some(alg.as_str()), Some("graceful")).await
                        })
                    })
                    .await?;
                let snap = self.snapshot().await?;
                let world = self.world(now, &snap, &policy);
                let active = snap.keys.iter().find(|k| k.alg == alg && k.state == KeyState::Active);
                let pending = snap.keys.iter().find(|k| k.alg == alg && k.state == KeyState::Pending);
                let at = match (active, pending) {
                    (Some(a), Some(p)) => lifecycle::promotion_time(&world, a, p).0,
                    _ => now,
                };
                let done = at <= now
                    && self
                        .apply_due(super::rotation::ScheduledRotations::AppliedHere)
                        .await?
                        .applied
                        .iter()
                        .any(|t| matches!(t, Transition::Rotate { alg: a, .. } if *a == alg));
                Ok(RotateOutcome {
                    mode,
                    alg,
                    activate: pending.map(|k| k.kid.to_string()),
                    retire: active.map(|k| k.kid.to_string()),
                    at: clock::rfc3339(at.max(now)),
                    done,
                    fresh_key: false,
                    pending: None,
                    repeated: false,
                })
            }
            RotateMode::Emergency => {
                // The replacement pending key (or, when no pending key is seasoned, the
                // fresh key that signs), made ahead of the transaction.
                let (fresh, sealed) = self.make_key(alg, KeyState::Pending, now, &policy).await?;
                let (by, seasoned) = (actor.clone(), policy.seen_by_caches());
                let change = Emergency { alg, now, seasoned, by };
                let outcome =
                    self.store.write(move |tx| Box::pin(async move { change.apply(tx, fresh, &sealed).await })).await?;
                if !outcome.repeated {
                    self.reload().await?;
                }
                tracing::warn!(
                    %alg,
                    kid = outcome.activate.as_deref().unwrap_or("-"),
                    fresh_key = outcome.fresh_key,
                    repeated = outcome.repeated,
                    actor = %actor.name,
                    "emergency rotation"
                );
                Ok(outcome)
            }
        }
    }

    /// What a rotation of `alg` would do now, changing nothing: the confirmation the
    /// dashboard and the API's `dry_run` show before an administrator commits to it. Read
    /// from the published snapshot; a graceful rotation takes effect once the pending key has
    /// been published for the lead (`Policy::earliest_activation`), as a real request would.
    pub fn rotate_preview(&self, alg: Option<Algorithm>, mode: RotateMode) -> Result<RotateOutcome> {
        let alg = resolve_alg(&self.config, alg)?;
        let now = self.clock.now();
        let published = self.published();
        let find = |state| published.keys.iter().find(|k| k.alg == alg && k.state == state);
        let (active, pending) = (find(KeyState::Active), find(KeyState::Pending));
        let at = match (mode, pending) {
            (RotateMode::Graceful, Some(p)) => published.policy.earliest_activation(p).max(now),
            _ => now,
        };
        Ok(RotateOutcome {
            mode,
            alg,
            activate: pending.map(|p| p.kid.to_string()),
            retire: active.map(|a| a.kid.to_string()),
            at: clock::rfc3339(at),
            done: false,
            fresh_key: mode == RotateMode::Emergency
                && pending.is_none_or(|p| p.published_at + published.policy.seen_by_caches() > now),
            pending: None,
            repeated: false,
        })
    }

    /// Revokes a key: it leaves the JWKS at once, its private key is erased, and if it was
    /// active another key signs at once (the pending key if there is one, already known to
    /// verifiers that fetched the JWKS since it was published; else a fresh one).
    pub async fn revoke_key(&self, kid: &KeyId, reason: &str, actor: &Actor) -> Result<RevokeOutcome> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(Error::Invalid(vec!["reason: give a reason of 1 to 500 characters".into()]));
        }
        let now = self.clock.now();
        let policy = self.policy();
        let row = self
            .store
            .read({
                let kid = kid.clone();
                move |c| Box::pin(async move { store::keys::get(c, &kid).await })
            })
            .await?
            .ok_or_else(|| Error::NotFound(format!("no key with kid {kid}")))?;
        let alg = row.record.alg;
        if !row.record.state.is_published() {
            return Err(Error::Conflict(format!("key {kid} is already {}", row.record.state.as_str())));
        }
        // A replacement pending key, made ahead of the transaction.
        let (fresh, sealed) = self.make_key(alg, KeyState::Pending, now, &policy).await?;
        let change = KeyRevocation {
            kid: kid.clone(),
            alg,
            reason: reason.to_owned(),
            configured: self.config.algorithms.contains(&alg),
            now,
            by: actor.clone(),
        };
        let shared = self.shared.clone();
        let (outcome, rev) = self
            .store
            .write(move |tx| Box::pin(async move { change.apply(tx, &shared, fresh, &sealed).await }))
            .await?;
        let rev_id = outcome.revocation_id;
        self.shared.revoked_mut().insert(rev_id, &rev);
        self.reload().await?;
        self.destroy_in_custody(kid, actor).await;
        tracing::warn!(%kid, actor = %actor.name, "key revoked");
        Ok(outcome)
    }
}

/// An emergency rotation of `alg`, asked for at `now` by `by`; `seasoned` is how long a key
/// must have been published before every caching verifier has it.
struct Emergency {
    alg: Algorithm,
    now: Instant,
    seasoned: Duration,
    by: Actor,
}

impl Emergency {
    /// Inside the write transaction: the active key retires and the next one signs (see
    /// [`sign_with_next`]), unless the same rotation was answered moments ago.
    async fn apply(&self, tx: &store::Tx<'_>, fresh: KeyRecord, sealed: &[u8]) -> store::Result<RotateOutcome> {
        let Emergency { alg, now, seasoned, ref by } = *self;
        let live = store::keys::live(tx).await?;
        let find = |state| live.iter().find(|r| r.record.alg == alg && r.record.state == state);
        let (active, pending) = (find(KeyState::Active), find(KeyState::Pending));
        if let Some(earlier) = repeated_emergency(tx, &live, active.map(|a| &a.record), now, seasoned).await? {
            let made = earlier.activate.as_deref().unwrap_or("-");
            let detail = format!(
                "{alg}: emergency rotation asked again within jwks_max_age + clock_skew of the one that made {made} sign: nothing changed (revoke the key if it is compromised)"
            );
            audited(tx, now, by, "key.rotate.emergency.repeated", earlier.activate.as_deref(), Some(&detail)).await?;
            return Ok(RotateOutcome { mode: RotateMode::Emergency, ..earlier });
        }
        // Only a pending key every caching verifier has fetched may sign at once.
        let pending = pending.filter(|p| p.record.published_at + seasoned <= now);
        let detail = match pending {
            Some(p) => format!(
                "{alg}: emergency rotation, the pending key {} (published since {}) signs at once; verifiers holding the current JWKS already have it",
                p.record.kid,
                clock::rfc3339(p.record.published_at)
            ),
            None => format!(
                "{alg}: emergency rotation with a fresh key: no pending key had been published for jwks_max_age + clock_skew, so verifiers that cached the JWKS may refuse its tokens until they refetch it"
            ),
        };
        if let Some(a) = active {
            store::keys::transition(tx, &a.record.kid, KeyState::Active, KeyState::Retired, now, None).await?;
            audited(tx, now, by, "key.retire", Some(a.record.kid.as_str()), Some(&detail)).await?;
        }
        let pending = pending.map(|p| &p.record.kid);
        let next = sign_with_next(tx, pending, fresh, sealed, now, by, "key.rotate.emergency", &detail).await?;
        let fresh_key = next.signs == next.fresh;
        Ok(RotateOutcome {
            mode: RotateMode::Emergency,
            alg,
            activate: Some(next.signs.to_string()),
            retire: active.map(|a| a.record.kid.to_string()),
            at: clock::rfc3339(now),
            done: true,
            fresh_key,
            pending: (!fresh_key).then(|| next.fresh.to_string()),
            repeated: false,
        })
    }
}

/// The revocation of key `kid` (of `alg`, still `configured` or not) for `reason`.
struct KeyRevocation {
    kid: KeyId,
    alg: Algorithm,
    reason: String,
    configured: bool,
    now: Instant,
    by: Actor,
}

impl KeyRevocation {
    /// Inside the write transaction: the key is revoked (with a revocation entry covering
    /// every token it signed) and, if it was active, the next key signs at once.
    async fn apply(
        &self,
        tx: &store::Tx<'_>,
        shared: &super::Shared,
        fresh: KeyRecord,
        sealed: &[u8],
    ) -> store::Result<(RevokeOutcome, crate::revocation::Revocation)> {
        let KeyRevocation { ref kid, alg, ref reason, configured, now, ref by } = *self;
        let state =
            store::keys::state(tx, kid).await?.ok_or_else(|| StoreError::Conflict(format!("key {kid} vanished")))?;
        if !state.is_published() {
            return Err(StoreError::Conflict(format!("key {kid} is already {}", state.as_str())));
        }
        let live_tokens = super::issued::unrevoked(shared, kid, &store::tokens::live_of_key(tx, kid, now).await?);
        store::keys::transition(tx, kid, state, KeyState::Revoked, now, Some(reason)).await?;
        // Every token it signed counts as revoked: introspection and the feed say so.
        let last = store::tokens::last_exp(tx, kid).await?.unwrap_or(now);
        let rev = crate::revocation::Revocation::Key(kid.to_string());
        let row = super::revocations::insert(tx, &rev, last, &format!("key revoked: {reason}"), now, by).await?;
        let detail = format!(
            "{alg} {} key revoked: {reason}; {live_tokens} unexpired tokens it signed now count as revoked",
            state.as_str()
        );
        audited(tx, now, by, "key.revoke", Some(kid.as_str()), Some(&detail)).await?;
        let mut replacement = None;
        if state == KeyState::Active && configured {
            let live = store::keys::live(tx).await?;
            let pending = live.into_iter().find(|r| r.record.alg == alg && r.record.state == KeyState::Pending);
            let detail = format!(
                "{alg}: emergency replacement of revoked key {kid}; verifiers that cached the JWKS before this key was published may fail until they refetch it"
            );
            let pending = pending.map(|p| p.record.kid);
            let action = "key.activate.emergency";
            replacement =
                Some(sign_with_next(tx, pending.as_ref(), fresh, sealed, now, by, action, &detail).await?.signs);
        } else if configured && state == KeyState::Pending {
            insert_fresh(tx, &fresh, sealed, now).await?;
        }
        let outcome = RevokeOutcome {
            kid: kid.to_string(),
            previous_state: state,
            replacement: replacement.map(|k| k.to_string()),
            live_tokens_invalidated: live_tokens,
            revocation_id: row.id,
        };
        Ok((outcome, rev))
    }
}

/// The emergency rotation that made `active` sign, when it was answered less than
/// `seasoned` (`jwks_max_age` + `clock_skew`) before `now`: a second one now would retire a
/// key verifiers may not have fetched yet for one they certainly have not. Described as its
/// own answer said, from the keys as they stand.
async fn repeated_emergency(
    tx: &store::Tx<'_>,
    live: &[store::keys::KeyRow],
    active: Option<&KeyRecord>,
    now: Instant,
    seasoned: Duration,
) -> store::Result<Option<RotateOutcome>> {
    let Some(active) = active else { return Ok(None) };
    let Some(at) = active.activated_at.filter(|at| *at + seasoned > now) else { return Ok(None) };
    if store::audit::last(tx, "key.rotate.emergency", active.kid.as_str()).await? != Some(at) {
        return Ok(None);
    }
    let alg = active.alg;
    // The key it retired is still published: retired keys stay until their tokens expire.
    let retired = live
        .iter()
        .find(|r| r.record.alg == alg && r.record.state == KeyState::Retired && r.record.retired_at == Some(at));
    let pending = live.iter().find(|r| r.record.alg == alg && r.record.state == KeyState::Pending);
    let fresh_key = active.published_at + seasoned > at;
    Ok(Some(RotateOutcome {
        mode: RotateMode::Emergency,
        alg,
        activate: Some(active.kid.to_string()),
        retire: retired.map(|r| r.record.kid.to_string()),
        at: clock::rfc3339(at),
        done: true,
        fresh_key,
        pending: pending.filter(|_| !fresh_key).map(|p| p.record.kid.to_string()),
        repeated: true,
    }))
}

/// What [`sign_with_next`] did.
struct NextSigner {
    /// The key that signs now.
    signs: KeyId,
    /// The key generated ahead: the new pending key, or the one that signs when no pending
    /// key was published.
    fresh: KeyId,
}

/// Inside a write transaction, once an algorithm's active key has stopped signing: its
/// published `pending` key signs at once (every verifier holding the current JWKS already
/// has it), and `fresh` becomes the next pending key; only when no pending key is published
/// does `fresh` itself sign. Each step is audited, the activation as `action` with `detail`.
#[allow(clippy::too_many_arguments)]
async fn sign_with_next(
    tx: &store::Tx<'_>,
    pending: Option<&KeyId>,
    mut fresh: KeyRecord,
    sealed: &[u8],
    now: Instant,
    by: &Actor,
    action: &str,
    detail: &str,
) -> store::Result<NextSigner> {
    let signs = match pending {
        Some(p) => {
            store::keys::transition(tx, p, KeyState::Pending, KeyState::Active, now, None).await?;
            p.clone()
        }
        None => {
            fresh.state = KeyState::Active;
            fresh.activated_at = Some(now);
            fresh.kid.clone()
        }
    };
    audited(tx, now, by, action, Some(signs.as_str()), Some(detail)).await?;
    insert_fresh(tx, &fresh, sealed, now).await?;
    // The activation answers a graceful request waiting for this algorithm, as a scheduled
    // rotation does (the planner counts any request still stored as made after it).
    lease::clear_request(tx, fresh.alg).await?;
    Ok(NextSigner { signs, fresh: fresh.kid })
}

/// Inserts a key generated ahead of its transaction; a pending one is audited as generated.
async fn insert_fresh(tx: &store::Tx<'_>, fresh: &KeyRecord, sealed: &[u8], now: Instant) -> store::Result<()> {
    store::keys::insert(tx, fresh, sealed).await?;
    if fresh.state == KeyState::Pending {
        let detail = format!("{}: published as pending", fresh.alg);
        audited(tx, now, &Actor::system(), "key.generate", Some(fresh.kid.as_str()), Some(&detail)).await?;
    }
    Ok(())
}
