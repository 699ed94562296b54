//! SQL for `api_keys`.

use super::{args, Conn, Result, Row, Tx};
use crate::clock::{from_unix, to_unix, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub created_at: Instant,
    pub created_by: String,
    pub revoked_at: Option<Instant>,
    /// When it last authenticated a request, to the minute.
    pub last_used_at: Option<Instant>,
}

pub async fn insert(tx: &Tx<'_>, k: &ApiKeyRow) -> Result<()> {
    tx.execute(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_at, created_by, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![k.id, k.name, k.role, k.secret_hash, to_unix(k.created_at), k.created_by, k.revoked_at.map(to_unix)],
    ).await?;
    Ok(())
}

const COLUMNS: &str = "id, name, role, secret_hash, created_at, created_by, revoked_at, last_used_at";

fn from_row(r: &Row) -> Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at: from_unix(r.get(4)?),
        created_by: r.get(5)?,
        revoked_at: r.get::<Option<i64>>(6)?.map(from_unix),
        last_used_at: r.get::<Option<i64>>(7)?.map(from_unix),
    })
}

pub async fn get(conn: &Conn<'_>, id: &str) -> Result<Option<ApiKeyRow>> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"), args![id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn list(conn: &Conn<'_>) -> Result<Vec<ApiKeyRow>> {
    conn.query(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"), args![])
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Notes that a key authenticated a request at `at`.
pub async fn used(tx: &Tx<'_>, id: &str, at: Instant) -> Result<()> {
    tx.execute("UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2", args![to_unix(at), id]).await?;
    Ok(())
}

/// Revokes an API key; false if there is no such unrevoked key.
pub async fn revoke(tx: &Tx<'_>, id: &str, at: Instant) -> Result<bool> {
    Ok(tx
        .execute("UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL", args![to_unix(at), id])
        .await?
        == 1)
}
