//! SQL for `api_keys`.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::Result;
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
}

pub fn insert(tx: &Transaction<'_>, k: &ApiKeyRow) -> Result<()> {
    tx.execute(
        "INSERT INTO api_keys (id, name, role, secret_hash, created_at, created_by, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![k.id, k.name, k.role, k.secret_hash, to_unix(k.created_at), k.created_by, k.revoked_at.map(to_unix)],
    )?;
    Ok(())
}

const COLUMNS: &str = "id, name, role, secret_hash, created_at, created_by, revoked_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at: from_unix(r.get(4)?),
        created_by: r.get(5)?,
        revoked_at: r.get::<_, Option<i64>>(6)?.map(from_unix),
    })
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<ApiKeyRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1"))?;
    Ok(stmt.query_row([id], from_row).optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<ApiKeyRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Revokes an API key; false if there is no such unrevoked key.
pub fn revoke(tx: &Transaction<'_>, id: &str, at: Instant) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
        params![to_unix(at), id],
    )? == 1)
}
