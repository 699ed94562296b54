//! SQL for the `signing_keys` table.

use super::{args, Conn, Result, Row, StoreError, Tx};
use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::{Algorithm, Custody, KeyId, KeyRecord, KeyState};

/// A key row: the public record and, while the key lives, its sealed private half.
#[derive(Clone, Debug)]
pub struct KeyRow {
    pub record: KeyRecord,
    pub sealed_private: Option<Vec<u8>>,
}

const COLUMNS: &str = "kid, alg, state, public_jwk, sealed_private, created_at, published_at, activated_at, \
                       retired_at, expired_at, revoked_at, revoke_reason, not_after, custody";

fn from_row(row: &Row) -> Result<KeyRow> {
    let kid: String = row.get(0)?;
    let alg: String = row.get(1)?;
    let state: String = row.get(2)?;
    let opt_time = |i: usize| -> Result<Option<Instant>> { Ok(row.get::<Option<i64>>(i)?.map(from_unix)) };
    let alg = alg.parse::<Algorithm>().map_err(|e| StoreError::Corrupt(format!("key {kid}: {e}")))?;
    let state = state.parse::<KeyState>().map_err(|e| StoreError::Corrupt(format!("key {kid}: {e}")))?;
    let custody: String = row.get(13)?;
    let custody = custody.parse::<Custody>().map_err(|e| StoreError::Corrupt(format!("key {kid}: {e}")))?;
    Ok(KeyRow {
        record: KeyRecord {
            kid: KeyId::new(kid),
            alg,
            state,
            public_jwk: row.get(3)?,
            created_at: from_unix(row.get(5)?),
            published_at: from_unix(row.get(6)?),
            activated_at: opt_time(7)?,
            retired_at: opt_time(8)?,
            expired_at: opt_time(9)?,
            revoked_at: opt_time(10)?,
            revoke_reason: row.get(11)?,
            not_after: from_unix(row.get(12)?),
            custody,
        },
        sealed_private: row.get(4)?,
    })
}

/// Every key, oldest first.
pub async fn all(conn: &Conn<'_>) -> Result<Vec<KeyRow>> {
    conn.query(&format!("SELECT {COLUMNS} FROM signing_keys ORDER BY created_at, kid"), args![])
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Every key still in play (pending, active, retired), oldest first.
pub async fn live(conn: &Conn<'_>) -> Result<Vec<KeyRow>> {
    conn.query(
        &format!(
            "SELECT {COLUMNS} FROM signing_keys WHERE state IN ('pending', 'active', 'retired') ORDER BY created_at, kid"
        ),
        args![],
    ).await?
    .iter()
    .map(from_row)
    .collect()
}

/// The state of one key, read inside a transaction to guard a decision.
pub async fn state(conn: &Conn<'_>, kid: &KeyId) -> Result<Option<KeyState>> {
    let s: Option<String> = conn
        .query_opt("SELECT state FROM signing_keys WHERE kid = ?1", args![kid.as_str()])
        .await?
        .map(|r| r.get(0))
        .transpose()?;
    s.map(|s| s.parse().map_err(StoreError::Corrupt)).transpose()
}

/// One key by kid.
pub async fn get(conn: &Conn<'_>, kid: &KeyId) -> Result<Option<KeyRow>> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM signing_keys WHERE kid = ?1"), args![kid.as_str()])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Inserts a new key. A key a token holds has an empty `sealed_private`: the table ties
/// `NULL` to the end of a key's life, whoever holds it.
pub async fn insert(tx: &Tx<'_>, record: &KeyRecord, sealed_private: &[u8]) -> Result<()> {
    let t = |v: Option<Instant>| v.map(to_unix);
    tx.execute(
        &format!(
            "INSERT INTO signing_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        args![
            record.kid.as_str(),
            record.alg.as_str(),
            record.state.as_str(),
            record.public_jwk,
            sealed_private,
            to_unix(record.created_at),
            to_unix(record.published_at),
            t(record.activated_at),
            t(record.retired_at),
            t(record.expired_at),
            t(record.revoked_at),
            record.revoke_reason,
            to_unix(record.not_after),
            record.custody.as_str(),
        ],
    )
    .await?;
    Ok(())
}

/// Moves a key from `from` to `to` at `at`, stamping the matching time column and erasing the
/// private key when the new state holds none. Fails with `Conflict` if the key is not in
/// `from` any more, so two writers can never apply the same transition twice.
pub async fn transition(
    tx: &Tx<'_>,
    kid: &KeyId,
    from: KeyState,
    to: KeyState,
    at: Instant,
    reason: Option<&str>,
) -> Result<()> {
    let column = match to {
        KeyState::Pending => "published_at",
        KeyState::Active => "activated_at",
        KeyState::Retired => "retired_at",
        KeyState::Expired => "expired_at",
        KeyState::Revoked => "revoked_at",
    };
    let erase = if to.holds_private_key() { "" } else { ", sealed_private = NULL" };
    let changed = tx
        .execute(
            &format!(
                "UPDATE signing_keys SET state = ?1, {column} = ?2, revoke_reason = coalesce(?3, revoke_reason){erase}
             WHERE kid = ?4 AND state = ?5"
            ),
            args![to.as_str(), to_unix(at), reason, kid.as_str(), from.as_str()],
        )
        .await?;
    if changed != 1 {
        return Err(StoreError::Conflict(format!("key {kid} is no longer {}", from.as_str())));
    }
    Ok(())
}

/// Replaces a key's sealed private half (KEK rotation).
pub async fn reseal(tx: &Tx<'_>, kid: &KeyId, sealed: &[u8]) -> Result<()> {
    tx.execute("UPDATE signing_keys SET sealed_private = ?1 WHERE kid = ?2", args![sealed, kid.as_str()]).await?;
    Ok(())
}

/// How many keys there are per (algorithm, state).
pub async fn counts(conn: &Conn<'_>) -> Result<Vec<(Algorithm, KeyState, Custody, u64)>> {
    let rows = conn
        .query("SELECT alg, state, custody, count(*) FROM signing_keys GROUP BY alg, state, custody", args![])
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let (alg, state, custody) = (row.get::<String>(0)?, row.get::<String>(1)?, row.get::<String>(2)?);
        let alg = alg.parse().map_err(|e: crate::keys::UnknownAlgorithm| StoreError::Corrupt(e.to_string()))?;
        let state = state.parse().map_err(|e: String| StoreError::Corrupt(e))?;
        let custody = custody.parse().map_err(|e: String| StoreError::Corrupt(e))?;
        out.push((alg, state, custody, row.get::<i64>(3)?.max(0) as u64));
    }
    Ok(out)
}
