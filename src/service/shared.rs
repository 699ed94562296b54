//! What the capabilities share in memory: the published key set, the revocation index and
//! when this node last heard from its database. Each capability holds the rest of what it
//! needs (the store, the clock, the settings) itself.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Published;
use crate::error::{Error, Result};
use crate::keys::lifecycle::Policy;
use crate::revocation::{Revocation, RevocationIndex};
use crate::store::{self, Dialect};

/// The state every capability reads and one writes: the key set [`super::Keys`] publishes,
/// the revocations in force, and this node's last word from its database.
pub struct Shared {
    published: RwLock<Arc<Published>>,
    revoked: RwLock<RevocationIndex>,
    synced: crate::clock::Watchdog,
    dialect: Dialect,
    /// `max_revocation_lag`: how long a cluster node answers from the revocations it holds
    /// without hearing from its database.
    max_lag: std::time::Duration,
}

impl Shared {
    pub(super) fn new(
        published: Published,
        revoked: RevocationIndex,
        dialect: Dialect,
        max_lag: std::time::Duration,
    ) -> Shared {
        Shared {
            published: RwLock::new(Arc::new(published)),
            revoked: RwLock::new(revoked),
            synced: crate::clock::Watchdog::default(),
            dialect,
            max_lag,
        }
    }

    /// The current snapshot: live keys, policy, JWKS, discovery and signers.
    pub fn published(&self) -> Arc<Published> {
        self.published.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The timing policy in force.
    pub fn policy(&self) -> Policy {
        self.published().policy.clone()
    }

    /// Installs a new snapshot (only [`super::Keys::reload`] makes them).
    pub(super) fn publish(&self, published: Published) {
        *self.published.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(published);
    }

    /// The revocations in force, for reading.
    pub(super) fn revoked(&self) -> RwLockReadGuard<'_, RevocationIndex> {
        self.revoked.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The revocations in force, for a change the database has committed.
    pub(super) fn revoked_mut(&self) -> RwLockWriteGuard<'_, RevocationIndex> {
        self.revoked.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds revocations committed here to the index.
    pub(super) fn apply_revocations(&self, added: &[(i64, Revocation)]) {
        let mut idx = self.revoked_mut();
        for (id, rev) in added {
            idx.insert(*id, rev);
        }
    }

    /// Notes that this node's state holds every change the database had committed at `at`
    /// (taken before the check that found so).
    pub(super) fn synced(&self, at: crate::clock::Stamp) {
        self.synced.reset_to(at);
    }

    /// How far behind the database this node's revocations may be: the time since it last
    /// heard from it (a cluster node; `None` for a single SQLite node, whose memory is the
    /// only writer's and always current).
    pub fn revocation_lag(&self) -> Option<std::time::Duration> {
        (self.dialect == Dialect::Postgres).then(|| self.synced.elapsed())
    }

    /// Refuses answers from memory once this cluster node has gone longer than
    /// `max_revocation_lag` without hearing from its database: a node cut off alone could
    /// miss revocations made through the others, so past the bound it answers 503, never
    /// "active" from state that old.
    pub fn require_fresh_state(&self) -> Result<()> {
        match self.revocation_lag() {
            Some(lag) if lag > self.max_lag => Err(Error::Store(store::StoreError::Unavailable(format!(
                "this node has not heard from the database for {} ms (max_revocation_lag {} s): it does not answer from revocations that may be stale",
                lag.as_millis(),
                self.max_lag.as_secs()
            )))),
            _ => Ok(()),
        }
    }
}
