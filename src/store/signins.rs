//! SQL for `sign_in_failures`: failed dashboard sign-ins, counted in the database so every
//! node of a cluster sees the same count.

use super::{args, Conn, Result, Tx};
use crate::clock::{from_unix, to_unix, Instant};

/// For each of `keys` with failures after `since`: how many, and the oldest.
pub fn failures_since(conn: &Conn<'_>, keys: &[&str; 2], since: Instant) -> Result<Vec<(u64, Instant)>> {
    conn.query(
        "SELECT count(*), min(at) FROM sign_in_failures WHERE key IN (?1, ?2) AND at > ?3 GROUP BY key",
        args![keys[0], keys[1], to_unix(since)],
    )?
    .iter()
    .map(|r| Ok((r.get::<i64>(0)?.max(0) as u64, from_unix(r.get(1)?))))
    .collect()
}

/// Records one failure under each key, and forgets failures older than `forget_before`.
pub fn record(tx: &Tx<'_>, keys: &[&str; 2], at: Instant, forget_before: Instant) -> Result<()> {
    tx.execute("DELETE FROM sign_in_failures WHERE at <= ?1", args![to_unix(forget_before)])?;
    for key in keys {
        tx.execute("INSERT INTO sign_in_failures (key, at) VALUES (?1, ?2)", args![key, to_unix(at)])?;
    }
    Ok(())
}

/// Forgets the failures under `key` (a successful sign-in to that account).
pub fn clear(tx: &Tx<'_>, key: &str) -> Result<()> {
    tx.execute("DELETE FROM sign_in_failures WHERE key = ?1", args![key])?;
    Ok(())
}
