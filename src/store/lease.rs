//! SQL for the rotator lease and rotation requests.

use std::collections::HashMap;

use super::{args, Conn, Result, Tx};
use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::Algorithm;

/// The name of the one lease keyturn uses.
pub const ROTATOR: &str = "rotator";

/// What [`acquire`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
    /// Another holder's lease is in force.
    Refused,
    /// `holder` had it and renewed it.
    Renewed,
    /// It was free or had lapsed: `holder` has it now.
    Taken,
}

impl Acquired {
    pub fn holds(self) -> bool {
        self != Acquired::Refused
    }
}

/// Takes or renews the lease for `holder` until `until`, if it is free, lapsed at `now`, or
/// already held by `holder`. Call inside the transaction whose changes the lease guards:
/// transactions commit one at a time, so the answer still holds when the changes commit.
pub async fn acquire(tx: &Tx<'_>, holder: &str, now: Instant, until: Instant) -> Result<Acquired> {
    let current = tx.query_opt("SELECT holder, expires_at FROM leases WHERE name = ?1", args![ROTATOR]).await?;
    let outcome = match current {
        None => Acquired::Taken,
        Some(row) if row.get::<String>(0)? == holder && row.get::<i64>(1)? > to_unix(now) => Acquired::Renewed,
        Some(row) if row.get::<i64>(1)? <= to_unix(now) => Acquired::Taken,
        Some(_) => Acquired::Refused,
    };
    if outcome.holds() {
        tx.execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            args![ROTATOR, holder, to_unix(until)],
        )
        .await?;
    }
    Ok(outcome)
}

/// The current holder and expiry, if any.
pub async fn current(conn: &Conn<'_>) -> Result<Option<(String, Instant)>> {
    conn.query_opt("SELECT holder, expires_at FROM leases WHERE name = ?1", args![ROTATOR])
        .await?
        .map(|r| Ok((r.get(0)?, from_unix(r.get(1)?))))
        .transpose()
}

/// Releases the lease if `holder` has it (on clean shutdown, so a stand-by takes over at once).
pub async fn release(tx: &Tx<'_>, holder: &str) -> Result<()> {
    tx.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", args![ROTATOR, holder]).await?;
    Ok(())
}

pub async fn requests(conn: &Conn<'_>) -> Result<HashMap<Algorithm, Instant>> {
    let mut out = HashMap::new();
    for row in conn.query("SELECT alg, requested_at FROM rotation_requests", args![]).await? {
        if let Ok(alg) = row.get::<String>(0)?.parse() {
            out.insert(alg, from_unix(row.get(1)?));
        }
    }
    Ok(out)
}

pub async fn request(tx: &Tx<'_>, alg: Algorithm, at: Instant, by: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO rotation_requests (alg, requested_at, requested_by) VALUES (?1, ?2, ?3)
         ON CONFLICT (alg) DO UPDATE SET requested_at = excluded.requested_at, requested_by = excluded.requested_by",
        args![alg.as_str(), to_unix(at), by],
    )
    .await?;
    Ok(())
}

pub async fn clear_request(tx: &Tx<'_>, alg: Algorithm) -> Result<()> {
    tx.execute("DELETE FROM rotation_requests WHERE alg = ?1", args![alg.as_str()]).await?;
    Ok(())
}
