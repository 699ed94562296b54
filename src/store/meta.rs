//! SQL for `meta`: small named values such as the key-encryption key check.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::Result;

/// Reads a value; `None` when the table does not exist yet (a new database) or has no row.
pub fn get(conn: &Connection, name: &str) -> Result<Option<Vec<u8>>> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    Ok(conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).optional()?)
}

/// Writes a value, replacing any previous one.
pub fn set(tx: &Transaction<'_>, name: &str, value: &[u8]) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}
