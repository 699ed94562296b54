//! SQL for `seen_jtis`: the installation's one replay cache (DPoP proofs, client assertions).

use super::{args, Result, Tx};
use crate::clock::{to_unix, Instant};

/// Records that `jti`, signed by `key` (a thumbprint), has been used, to be remembered until
/// `until`; `false` when it already was (a replay, on this node or any other).
pub async fn first_use(tx: &Tx<'_>, key: &str, jti: &str, until: Instant) -> Result<bool> {
    let added = tx
        .execute(
            "INSERT INTO seen_jtis (key, jti, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![key, jti, to_unix(until)],
        )
        .await?;
    Ok(added == 1)
}

/// Forgets what can no longer be replayed: entries whose time ended before `now`.
pub async fn prune(tx: &Tx<'_>, now: Instant) -> Result<u64> {
    tx.execute("DELETE FROM seen_jtis WHERE expires_at < ?1", args![to_unix(now)]).await
}
