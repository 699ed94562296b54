//! SQL for `revocations`. The row id is the revocation feed's cursor.

use super::{args, Conn, Result, Tx};
use crate::clock::{from_unix, to_unix, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationRow {
    pub id: i64,
    /// `jti`, `sub`, `client_id` or `kid`.
    pub kind: String,
    pub value: String,
    pub cutoff: Instant,
    pub covers_until: Instant,
    pub reason: String,
    pub created_at: Instant,
    pub created_by: String,
}

/// Revocations made per `bucket` seconds from `since` on, among those still kept (an entry is
/// pruned once the tokens it covers have expired): (bucket index, count).
pub async fn created_per(conn: &Conn<'_>, since: Instant, bucket: i64) -> Result<Vec<(i64, u64)>> {
    conn.query(
        "SELECT (created_at - ?1) / ?2 AS b, count(*) FROM revocations WHERE created_at >= ?1 GROUP BY b ORDER BY b",
        args![to_unix(since), bucket],
    )
    .await?
    .iter()
    .map(|r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)? as u64)))
    .collect()
}

pub async fn insert(tx: &Tx<'_>, r: &RevocationRow) -> Result<i64> {
    tx.query_one(
        "INSERT INTO revocations (kind, value, cutoff, covers_until, reason, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        args![
            r.kind,
            r.value,
            to_unix(r.cutoff),
            to_unix(r.covers_until),
            r.reason,
            to_unix(r.created_at),
            r.created_by
        ],
    )
    .await?
    .get(0)
}

/// Entries after the cursor `after`, oldest first, at most `limit`.
pub async fn after(conn: &Conn<'_>, after: i64, limit: u32) -> Result<Vec<RevocationRow>> {
    conn.query(
        "SELECT id, kind, value, cutoff, covers_until, reason, created_at, created_by FROM revocations
         WHERE id > ?1 ORDER BY id LIMIT ?2",
        args![after, limit],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(RevocationRow {
            id: r.get(0)?,
            kind: r.get(1)?,
            value: r.get(2)?,
            cutoff: from_unix(r.get(3)?),
            covers_until: from_unix(r.get(4)?),
            reason: r.get(5)?,
            created_at: from_unix(r.get(6)?),
            created_by: r.get(7)?,
        })
    })
    .collect()
}

/// Deletes entries whose every covered token expired before `before`.
pub async fn prune(tx: &Tx<'_>, before: Instant) -> Result<usize> {
    Ok(tx.execute("DELETE FROM revocations WHERE covers_until < ?1", args![to_unix(before)]).await? as usize)
}

/// How many entries there are.
pub async fn count(conn: &Conn<'_>) -> Result<u64> {
    Ok(conn.query_one("SELECT count(*) FROM revocations", args![]).await?.get::<i64>(0)? as u64)
}
