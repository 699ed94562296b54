//! SQL for administrators, their sessions and setup links.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::Result;
use crate::clock::{from_unix, to_unix, Instant};

pub fn count(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("SELECT count(*) FROM admins", [], |r| r.get::<_, i64>(0))? as u64)
}

pub fn names(conn: &Connection) -> Result<Vec<(String, Instant, Instant)>> {
    let mut stmt = conn.prepare_cached("SELECT name, created_at, password_changed_at FROM admins ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, from_unix(r.get(1)?), from_unix(r.get(2)?))))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn password_hash(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn.query_row("SELECT password_hash FROM admins WHERE name = ?1", [name], |r| r.get(0)).optional()?)
}

pub fn insert(tx: &Transaction<'_>, name: &str, hash: &str, at: Instant, by: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO admins (name, password_hash, created_at, created_by, password_changed_at) VALUES (?1, ?2, ?3, ?4, ?3)",
        params![name, hash, to_unix(at), by],
    )?;
    Ok(())
}

pub fn set_password(tx: &Transaction<'_>, name: &str, hash: &str, at: Instant) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE admins SET password_hash = ?1, password_changed_at = ?2 WHERE name = ?3",
        params![hash, to_unix(at), name],
    )? == 1)
}

/// A session row: (admin, csrf, created_at, last_seen).
pub fn session(conn: &Connection, id_hash: &[u8]) -> Result<Option<(String, String, Instant, Instant)>> {
    Ok(conn
        .query_row("SELECT admin, csrf, created_at, last_seen FROM admin_sessions WHERE id_hash = ?1", [id_hash], |r| {
            Ok((r.get(0)?, r.get(1)?, from_unix(r.get(2)?), from_unix(r.get(3)?)))
        })
        .optional()?)
}

pub fn insert_session(
    tx: &Transaction<'_>,
    id_hash: &[u8],
    admin: &str,
    csrf: &str,
    at: Instant,
    source: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO admin_sessions (id_hash, admin, csrf, created_at, last_seen, source) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![id_hash, admin, csrf, to_unix(at), source],
    )?;
    Ok(())
}

pub fn touch_session(tx: &Transaction<'_>, id_hash: &[u8], at: Instant) -> Result<()> {
    tx.execute("UPDATE admin_sessions SET last_seen = ?1 WHERE id_hash = ?2", params![to_unix(at), id_hash])?;
    Ok(())
}

pub fn delete_session(tx: &Transaction<'_>, id_hash: &[u8]) -> Result<usize> {
    Ok(tx.execute("DELETE FROM admin_sessions WHERE id_hash = ?1", [id_hash])?)
}

/// Ends every session of `admin`, except the one whose id hashes to `except`.
pub fn delete_sessions_of(tx: &Transaction<'_>, admin: &str, except: Option<&[u8]>) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM admin_sessions WHERE admin = ?1 AND (?2 IS NULL OR id_hash != ?2)",
        params![admin, except],
    )?)
}

pub fn insert_setup_link(
    tx: &Transaction<'_>,
    token_hash: &[u8],
    at: Instant,
    expires: Instant,
    by: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO setup_links (token_hash, created_at, expires_at, created_by) VALUES (?1, ?2, ?3, ?4)",
        params![token_hash, to_unix(at), to_unix(expires), by],
    )?;
    Ok(())
}

/// Spends a setup link if it exists, is unused and unexpired at `now`; returns whether it did.
pub fn spend_setup_link(tx: &Transaction<'_>, token_hash: &[u8], now: Instant) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE setup_links SET used_at = ?1 WHERE token_hash = ?2 AND used_at IS NULL AND expires_at > ?1",
        params![to_unix(now), token_hash],
    )? == 1)
}

/// Whether a setup link is currently usable (for showing the form before it is spent).
pub fn setup_link_usable(conn: &Connection, token_hash: &[u8], now: Instant) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM setup_links WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2)",
        params![token_hash, to_unix(now)],
        |r| r.get(0),
    )?)
}
