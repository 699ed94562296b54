//! SQL for administrators, their sessions and setup links.

use super::{args, Conn, Result, Tx};
use crate::clock::{from_unix, to_unix, Instant};

pub async fn count(conn: &Conn<'_>) -> Result<u64> {
    Ok(conn.query_one("SELECT count(*) FROM admins", args![]).await?.get::<i64>(0)? as u64)
}

pub async fn names(conn: &Conn<'_>) -> Result<Vec<(String, Instant, Instant)>> {
    conn.query("SELECT name, created_at, password_changed_at FROM admins ORDER BY name", args![])
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, from_unix(r.get(1)?), from_unix(r.get(2)?))))
        .collect()
}

pub async fn password_hash(conn: &Conn<'_>, name: &str) -> Result<Option<String>> {
    conn.query_opt("SELECT password_hash FROM admins WHERE name = ?1", args![name]).await?.map(|r| r.get(0)).transpose()
}

pub async fn insert(tx: &Tx<'_>, name: &str, hash: &str, at: Instant, by: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO admins (name, password_hash, created_at, created_by, password_changed_at) VALUES (?1, ?2, ?3, ?4, ?3)",
        args![name, hash, to_unix(at), by],
    ).await?;
    Ok(())
}

/// Deletes an administrator; returns whether one was deleted.
pub async fn delete(tx: &Tx<'_>, name: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM admins WHERE name = ?1", args![name]).await? == 1)
}

pub async fn set_password(tx: &Tx<'_>, name: &str, hash: &str, at: Instant) -> Result<bool> {
    Ok(tx
        .execute(
            "UPDATE admins SET password_hash = ?1, password_changed_at = ?2 WHERE name = ?3",
            args![hash, to_unix(at), name],
        )
        .await?
        == 1)
}

/// A session row: (admin, csrf, created_at, last_seen).
pub async fn session(conn: &Conn<'_>, id_hash: &[u8]) -> Result<Option<(String, String, Instant, Instant)>> {
    conn.query_opt("SELECT admin, csrf, created_at, last_seen FROM admin_sessions WHERE id_hash = ?1", args![id_hash])
        .await?
        .map(|r| Ok((r.get(0)?, r.get(1)?, from_unix(r.get(2)?), from_unix(r.get(3)?))))
        .transpose()
}

pub async fn insert_session(
    tx: &Tx<'_>,
    id_hash: &[u8],
    admin: &str,
    csrf: &str,
    at: Instant,
    source: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO admin_sessions (id_hash, admin, csrf, created_at, last_seen, source) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        args![id_hash, admin, csrf, to_unix(at), source],
    ).await?;
    Ok(())
}

pub async fn touch_session(tx: &Tx<'_>, id_hash: &[u8], at: Instant) -> Result<()> {
    tx.execute("UPDATE admin_sessions SET last_seen = ?1 WHERE id_hash = ?2", args![to_unix(at), id_hash]).await?;
    Ok(())
}

pub async fn delete_session(tx: &Tx<'_>, id_hash: &[u8]) -> Result<usize> {
    Ok(tx.execute("DELETE FROM admin_sessions WHERE id_hash = ?1", args![id_hash]).await? as usize)
}

/// Ends every session of `admin`, except the one whose id hashes to `except`.
pub async fn delete_sessions_of(tx: &Tx<'_>, admin: &str, except: Option<&[u8]>) -> Result<usize> {
    // An id hash is never empty, so the empty string stands for "none".
    let except = except.unwrap_or_default();
    Ok(tx.execute("DELETE FROM admin_sessions WHERE admin = ?1 AND id_hash != ?2", args![admin, except]).await?
        as usize)
}

pub async fn insert_setup_link(tx: &Tx<'_>, token_hash: &[u8], at: Instant, expires: Instant, by: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO setup_links (token_hash, created_at, expires_at, created_by) VALUES (?1, ?2, ?3, ?4)",
        args![token_hash, to_unix(at), to_unix(expires), by],
    )
    .await?;
    Ok(())
}

/// Spends a setup link if it exists, is unused and unexpired at `now`; returns whether it did.
pub async fn spend_setup_link(tx: &Tx<'_>, token_hash: &[u8], now: Instant) -> Result<bool> {
    Ok(tx.execute(
        &format!("UPDATE setup_links SET used_at = ?1 WHERE token_hash = ?2 AND used_at IS NULL AND expires_at > ?1 AND {FIRST_LINK_RULE}"),
        args![to_unix(now), token_hash],
    ).await? == 1)
}

/// The link keyturn itself logs at first start (created by `system`) is for the first
/// administrator only: void as soon as any administrator exists. Links an administrator
/// or the CLI made (`keyturn admin add`) stay usable until used or expired.
const FIRST_LINK_RULE: &str = "(created_by <> 'system' OR NOT EXISTS (SELECT 1 FROM admins))";

/// Whether a setup link is currently usable (for showing the form before it is spent).
pub async fn setup_link_usable(conn: &Conn<'_>, token_hash: &[u8], now: Instant) -> Result<bool> {
    conn.query_one(
        &format!("SELECT EXISTS (SELECT 1 FROM setup_links WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 AND {FIRST_LINK_RULE})"),
        args![token_hash, to_unix(now)],
    ).await?
    .get(0)
}
