//! SQL for the rotator lease and rotation requests.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::Result;
use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::Algorithm;

/// The name of the one lease keyturn uses.
pub const ROTATOR: &str = "rotator";

/// Takes or renews the lease for `holder` until `until`, if it is free, lapsed at `now`, or
/// already held by `holder`. Returns whether `holder` holds it. Call inside the transaction
/// whose changes the lease guards.
pub fn acquire(tx: &Transaction<'_>, holder: &str, now: Instant, until: Instant) -> Result<bool> {
    let current: Option<(String, i64)> = tx
        .query_row("SELECT holder, expires_at FROM leases WHERE name = ?1", [ROTATOR], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let free = match &current {
        None => true,
        Some((h, expires)) => h == holder || *expires <= to_unix(now),
    };
    if free {
        tx.execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            params![ROTATOR, holder, to_unix(until)],
        )?;
    }
    Ok(free)
}

/// The current holder and expiry, if any.
pub fn current(conn: &Connection) -> Result<Option<(String, Instant)>> {
    Ok(conn
        .query_row("SELECT holder, expires_at FROM leases WHERE name = ?1", [ROTATOR], |r| {
            Ok((r.get(0)?, from_unix(r.get(1)?)))
        })
        .optional()?)
}

/// Releases the lease if `holder` has it (on clean shutdown, so a stand-by takes over at once).
pub fn release(tx: &Transaction<'_>, holder: &str) -> Result<()> {
    tx.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", params![ROTATOR, holder])?;
    Ok(())
}

pub fn requests(conn: &Connection) -> Result<HashMap<Algorithm, Instant>> {
    let mut stmt = conn.prepare_cached("SELECT alg, requested_at FROM rotation_requests")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, from_unix(r.get(1)?))))?;
    let mut out = HashMap::new();
    for row in rows {
        let (alg, at) = row?;
        if let Ok(alg) = alg.parse() {
            out.insert(alg, at);
        }
    }
    Ok(out)
}

pub fn request(tx: &Transaction<'_>, alg: Algorithm, at: Instant, by: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO rotation_requests (alg, requested_at, requested_by) VALUES (?1, ?2, ?3)
         ON CONFLICT (alg) DO UPDATE SET requested_at = excluded.requested_at, requested_by = excluded.requested_by",
        params![alg.as_str(), to_unix(at), by],
    )?;
    Ok(())
}

pub fn clear_request(tx: &Transaction<'_>, alg: Algorithm) -> Result<()> {
    tx.execute("DELETE FROM rotation_requests WHERE alg = ?1", [alg.as_str()])?;
    Ok(())
}
