//! SQL for `settings`: policy values edited through the API.

use std::collections::HashMap;

use super::{args, Conn, Result, Tx};

pub async fn all(conn: &Conn<'_>) -> Result<HashMap<String, String>> {
    conn.query("SELECT name, value FROM settings", args![]).await?.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
}

pub async fn set(tx: &Tx<'_>, name: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        args![name, value],
    )
    .await?;
    Ok(())
}
