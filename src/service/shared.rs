//! What the capabilities share in memory: the published key set, the revocation index and
//! when this node last heard from its database. Each capability holds the rest of what it
//! needs (the store, the clock, the settings) itself.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Published;
use crate::error::{Error, Result};
use crate::keys::lifecycle::Policy;
use crate::revocation::{Revocation, RevocationIndex};
use crate::store::{self, Dialect};

/// How long a cluster node keeps answering introspection from memory without hearing from
/// its database. Safe because a revocation exists only once the database recorded it: while
/// the database is down for every node, none can be made anywhere, so what a node holds is
/// complete. Only a node cut off alone could miss revocations made through other nodes, and
/// for at most this long, the same staleness a verifier polling the feed accepts; after it,
/// introspection answers 503 instead of guessing.
pub const SYNC_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The state every capability reads and one writes: the key set [`super::Keys`] publishes,
/// the revocations in force, and this node's last word from its database.
pub struct Shared {
    published: RwLock<Arc<Published>>,
    revoked: RwLock<RevocationIndex>,
    synced: crate::clock::Watchdog,
    dialect: Dialect,
}

impl Shared {
    pub(super) fn new(published: Published, revoked: RevocationIndex, dialect: Dialect) -> Shared {
        Shared {
            published: RwLock::new(Arc::new(published)),
            revoked: RwLock::new(revoked),
            synced: crate::clock::Watchdog::default(),
            dialect,
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

    /// Notes that this node has just compared its state with the database.
    pub(super) fn synced(&self) {
        self.synced.reset();
    }

    /// Refuses answers from memory once this cluster node has gone [`SYNC_STALE_AFTER`]
    /// without hearing from its database. A single SQLite node's memory is always current.
    pub fn require_fresh_state(&self) -> Result<()> {
        let quiet = self.synced.elapsed();
        if self.dialect == Dialect::Postgres && quiet > SYNC_STALE_AFTER {
            return Err(Error::Store(store::StoreError::Unavailable(format!(
                "this node has not reached the database for {}s; it does not answer from state that old",
                quiet.as_secs()
            ))));
        }
        Ok(())
    }
}
