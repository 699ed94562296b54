//! SQL for `clients`: registered OAuth clients.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::Result;
use crate::clock::{from_unix, to_unix, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub audiences: Vec<String>,
    pub max_ttl_secs: u64,
    pub created_at: Instant,
    pub created_by: String,
    pub disabled_at: Option<Instant>,
}

const COLUMNS: &str = "client_id, name, secret_hash, scopes, audiences, max_ttl, created_at, created_by, disabled_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ClientRow> {
    let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    Ok(ClientRow {
        client_id: r.get(0)?,
        name: r.get(1)?,
        secret_hash: r.get(2)?,
        scopes: list(r.get(3)?),
        audiences: list(r.get(4)?),
        max_ttl_secs: r.get::<_, i64>(5)?.max(0) as u64,
        created_at: from_unix(r.get(6)?),
        created_by: r.get(7)?,
        disabled_at: r.get::<_, Option<i64>>(8)?.map(from_unix),
    })
}

pub fn insert(tx: &Transaction<'_>, c: &ClientRow) -> Result<()> {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    tx.execute(
        &format!("INSERT INTO clients ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            c.client_id,
            c.name,
            c.secret_hash,
            json(&c.scopes),
            json(&c.audiences),
            c.max_ttl_secs as i64,
            to_unix(c.created_at),
            c.created_by,
            c.disabled_at.map(to_unix)
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, client_id: &str) -> Result<Option<ClientRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM clients WHERE client_id = ?1"))?;
    Ok(stmt.query_row([client_id], from_row).optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<ClientRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM clients ORDER BY created_at, client_id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Disables a client; false if there is no such enabled client.
pub fn disable(tx: &Transaction<'_>, client_id: &str, at: Instant) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE clients SET disabled_at = ?1 WHERE client_id = ?2 AND disabled_at IS NULL",
        params![to_unix(at), client_id],
    )? == 1)
}
