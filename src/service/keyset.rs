//! Keys and rotation: the signing keys, sealed under the key-encryption key, their lifecycle
//! under the rotator lease, and the published snapshot rebuilt from them after every change.
//!
//! The operations live beside their rules: `rotation.rs` (the tick and the lease),
//! `key_changes.rs` (an administrator's rotation and key revocation), `kek.rs` (the
//! key-encryption key), `policy.rs` (the timing settings).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use jsonwebtoken::DecodingKey;

use super::custody::Custodian;
use super::documents::{discovery, serialize_jwks};
use super::shared::Shared;
use super::{policy, Published};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::lifecycle::Policy;
use crate::keys::sealed::Kek;
use crate::keys::{KeyRecord, KeyState};
use crate::store::{self, ChangeMark, Store};

/// The signing keys: making, rotating, revoking and publishing them.
pub struct Keys {
    pub(super) config: Arc<Config>,
    pub(super) clock: Clock,
    pub(super) store: Store,
    pub(super) shared: Arc<Shared>,
    pub(super) kek: Arc<Kek>,
    /// Makes keys and opens their signers.
    pub(super) custodian: Custodian,
    /// This process's identity for the rotator lease.
    pub(super) holder: String,
    /// Whether this process handed the lease over (a clean shutdown, `close`).
    lease_released: AtomicBool,
    /// Whether the token may still hold a key that has ended: true at start-up and after a
    /// destruction failed; housekeeping then looks (`destroy_ended_in_custody`).
    pub(super) undestroyed: AtomicBool,
    /// The store's mark of other processes' commits when the snapshot was last rebuilt: when
    /// another process (the CLI, a second daemon) commits, the snapshot is rebuilt too.
    seen: Mutex<Option<ChangeMark>>,
    /// Held through a reload, from its read to its install: two reloads at once (a local
    /// change and another node's notice) could otherwise finish out of order and leave the
    /// older state published.
    reloading: tokio::sync::Mutex<()>,
    /// Bumped whenever the policy changes, so the scheduler can follow a new cron expression.
    policy_version: tokio::sync::watch::Sender<u64>,
}

impl Keys {
    pub(super) fn new(
        config: Arc<Config>,
        clock: Clock,
        store: Store,
        shared: Arc<Shared>,
        kek: Arc<Kek>,
        custodian: Custodian,
    ) -> Keys {
        Keys {
            custodian,
            config,
            clock,
            store,
            shared,
            kek,
            holder: super::random_id(12),
            lease_released: AtomicBool::new(false),
            undestroyed: AtomicBool::new(true),
            seen: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            policy_version: tokio::sync::watch::channel(0).0,
        }
    }

    /// The current snapshot: live keys, policy, JWKS, discovery and signers.
    pub fn published(&self) -> Arc<Published> {
        self.shared.published()
    }

    /// The timing policy in force.
    pub fn policy(&self) -> Policy {
        self.shared.policy()
    }

    /// Subscribes to policy changes (the scheduler follows the cron expression).
    pub fn watch_policy(&self) -> tokio::sync::watch::Receiver<u64> {
        self.policy_version.subscribe()
    }

    /// The store's mark when the snapshot was last rebuilt (`None` before the first).
    pub(super) fn seen(&self) -> Option<ChangeMark> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A MAC of `data` under a key derived from the key-encryption key for `purpose`: the
    /// same on every node of the installation.
    pub(super) fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        self.kek.mac(purpose, data)
    }

    /// Rebuilds the published snapshot from the database.
    pub async fn reload(&self) -> Result<()> {
        let _one_at_a_time = self.reloading.lock().await;
        let (((rows, stored), federated), mark) = self
            .store
            .read_marked(|c| {
                Box::pin(async move {
                    let federated = store::federation::any_issuer(c).await?;
                    Ok(((store::keys::live(c).await?, store::settings::all(c).await?), federated))
                })
            })
            .await?;
        let current = self.published();
        let mut signers = BTreeMap::new();
        for row in &rows {
            if row.record.state != KeyState::Active {
                continue;
            }
            // Keep a signer already loaded for the same kid; open the others.
            if let Some(existing) = current.signers.get(&row.record.alg).filter(|s| *s.kid() == row.record.kid) {
                signers.insert(row.record.alg, existing.clone());
                continue;
            }
            signers.insert(row.record.alg, Arc::new(self.custodian.signer(row)?));
        }
        let mut verifiers = HashMap::new();
        for row in rows.iter().filter(|r| r.record.state.is_published()) {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&row.record.public_jwk).map_err(|e| {
                Error::KeyDoesNotLoad { kid: row.record.kid.clone(), reason: format!("stored public key: {e}") }
            })?;
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| Error::KeyDoesNotLoad {
                kid: row.record.kid.clone(),
                reason: format!("stored public key: {e}"),
            })?;
            verifiers.insert(row.record.kid.to_string(), (row.record.alg, Arc::new(key)));
        }
        let keys: Vec<KeyRecord> = rows.into_iter().map(|r| r.record).collect();
        let policy = policy::effective(&self.config, &stored, Some(&current.policy));
        let policy_changed = policy != current.policy;
        self.shared.publish(Published {
            jwks: serialize_jwks(&keys, self.config.jwks_x5c)?,
            openid_configuration: discovery(&self.config, &keys, true, federated),
            oauth_metadata: discovery(&self.config, &keys, false, federated),
            keys,
            policy,
            signers,
            verifiers,
        });
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(mark);
        if policy_changed {
            self.policy_version.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// Gives the lease up (clean shutdown), so a stand-by can take over at once.
    pub async fn release_lease(&self) -> Result<()> {
        release(&self.store, self.holder.clone()).await?;
        self.lease_released.store(true, Ordering::Release);
        Ok(())
    }
}

/// Gives `holder`'s rotator lease up.
async fn release(store: &Store, holder: String) -> store::Result<()> {
    store.write(move |tx| Box::pin(async move { store::lease::release(tx, &holder).await })).await
}

impl Drop for Keys {
    fn drop(&mut self) {
        // Best effort, when nothing released it (a clean shutdown and `close` have, and
        // waited for it): hand the lease over at once instead of letting it lapse.
        if self.lease_released.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (store, holder) = (self.store.clone(), self.holder.clone());
        runtime.spawn(async move {
            if let Err(e) = release(&store, holder).await {
                tracing::debug!("releasing the rotator lease: {e}");
            }
        });
    }
}
