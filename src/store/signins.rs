//! SQL for `sign_in_failures`: failed dashboard sign-ins, counted in the database so every
//! node of a cluster sees the same count.

use super::{args, Conn, Result, Tx};
use crate::clock::{from_unix, to_unix, Instant};

/// Reserves one failure under each of `keys` for the sign-in `attempt`, unless a key
/// already has `limit` failures (reservations included) after `since`: then nothing is
/// recorded and the answer is the oldest failure of each key over the limit. Failures at or
/// before `since` are forgotten first. Run inside the write transaction, which commits
/// alone, so concurrent sign-ins see each other's reservations.
pub async fn reserve(
    tx: &Tx<'_>,
    keys: &[&str; 2],
    attempt: &str,
    at: Instant,
    since: Instant,
    limit: u64,
) -> Result<Vec<Instant>> {
    tx.execute("DELETE FROM sign_in_failures WHERE at <= ?1", args![to_unix(since)]).await?;
    let over: Vec<Instant> = failures_since(tx, keys, since)
        .await?
        .into_iter()
        .filter(|(n, _)| *n >= limit)
        .map(|(_, oldest)| oldest)
        .collect();
    if over.is_empty() {
        for key in keys {
            tx.execute(
                "INSERT INTO sign_in_failures (key, at, attempt) VALUES (?1, ?2, ?3)",
                args![key, to_unix(at), attempt],
            )
            .await?;
        }
    }
    Ok(over)
}

/// Takes back the reservations of a sign-in `attempt` that succeeded.
pub async fn release(tx: &Tx<'_>, attempt: &str) -> Result<()> {
    tx.execute("DELETE FROM sign_in_failures WHERE attempt = ?1", args![attempt]).await?;
    Ok(())
}

/// For each of `keys` with failures after `since`: how many, and the oldest.
async fn failures_since(conn: &Conn<'_>, keys: &[&str; 2], since: Instant) -> Result<Vec<(u64, Instant)>> {
    conn.query(
        "SELECT count(*), min(at) FROM sign_in_failures WHERE key IN (?1, ?2) AND at > ?3 GROUP BY key",
        args![keys[0], keys[1], to_unix(since)],
    )
    .await?
    .iter()
    .map(|r| Ok((r.get::<i64>(0)?.max(0) as u64, from_unix(r.get(1)?))))
    .collect()
}

/// Forgets the failures under `key` (a successful sign-in to that account).
pub async fn clear(tx: &Tx<'_>, key: &str) -> Result<()> {
    tx.execute("DELETE FROM sign_in_failures WHERE key = ?1", args![key]).await?;
    Ok(())
}
