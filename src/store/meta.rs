//! SQL for `meta`: small named values such as the key-encryption key check.

use super::{args, Conn, Dialect, Result, Tx};

/// Reads a value; `None` when the table does not exist yet (a new database) or has no row.
pub async fn get(conn: &Conn<'_>, name: &str) -> Result<Option<Vec<u8>>> {
    let probe = match conn.dialect() {
        Dialect::Sqlite => "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
        Dialect::Postgres => "SELECT to_regclass('meta') IS NOT NULL",
    };
    if !conn.query_one(probe, args![]).await?.get::<bool>(0)? {
        return Ok(None);
    }
    conn.query_opt("SELECT value FROM meta WHERE name = ?1", args![name]).await?.map(|r| r.get(0)).transpose()
}

/// Writes a value, replacing any previous one.
pub async fn set(tx: &Tx<'_>, name: &str, value: &[u8]) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        args![name, value],
    )
    .await?;
    Ok(())
}

/// Writes a value unless one is there; returns whether it wrote (nodes starting together on
/// a new database: the first one's value stands).
pub async fn set_if_absent(tx: &Tx<'_>, name: &str, value: &[u8]) -> Result<bool> {
    Ok(tx
        .execute("INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING", args![name, value])
        .await?
        == 1)
}

/// Deletes a value.
pub async fn delete(tx: &Tx<'_>, name: &str) -> Result<()> {
    tx.execute("DELETE FROM meta WHERE name = ?1", args![name]).await?;
    Ok(())
}
