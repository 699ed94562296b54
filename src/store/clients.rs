//! SQL for `clients`: registered OAuth clients.

use super::{args, Conn, Result, Row, Tx};
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
    /// Whether every token request of the client must come with a DPoP proof.
    pub dpop_required: bool,
    /// The client's public keys (a JWKS, JSON), when it authenticates with private_key_jwt.
    pub jwks: Option<String>,
    /// Where the client publishes its public keys, when it authenticates with private_key_jwt.
    pub jwks_uri: Option<String>,
}

const COLUMNS: &str = "client_id, name, secret_hash, scopes, audiences, max_ttl, created_at, created_by, \
                       disabled_at, dpop_required, jwks, jwks_uri";

fn from_row(r: &Row) -> Result<ClientRow> {
    let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    Ok(ClientRow {
        client_id: r.get(0)?,
        name: r.get(1)?,
        secret_hash: r.get(2)?,
        scopes: list(r.get(3)?),
        audiences: list(r.get(4)?),
        max_ttl_secs: r.get::<i64>(5)?.max(0) as u64,
        created_at: from_unix(r.get(6)?),
        created_by: r.get(7)?,
        disabled_at: r.get::<Option<i64>>(8)?.map(from_unix),
        dpop_required: r.get::<i64>(9)? != 0,
        jwks: r.get(10)?,
        jwks_uri: r.get(11)?,
    })
}

pub async fn insert(tx: &Tx<'_>, c: &ClientRow) -> Result<()> {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    tx.execute(
        &format!("INSERT INTO clients ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        args![
            c.client_id,
            c.name,
            c.secret_hash,
            json(&c.scopes),
            json(&c.audiences),
            c.max_ttl_secs as i64,
            to_unix(c.created_at),
            c.created_by,
            c.disabled_at.map(to_unix),
            i64::from(c.dpop_required),
            c.jwks,
            c.jwks_uri
        ],
    )
    .await?;
    Ok(())
}

pub async fn get(conn: &Conn<'_>, client_id: &str) -> Result<Option<ClientRow>> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM clients WHERE client_id = ?1"), args![client_id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn list(conn: &Conn<'_>) -> Result<Vec<ClientRow>> {
    conn.query(&format!("SELECT {COLUMNS} FROM clients ORDER BY created_at, client_id"), args![])
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Disables a client; false if there is no such enabled client.
pub async fn disable(tx: &Tx<'_>, client_id: &str, at: Instant) -> Result<bool> {
    Ok(tx
        .execute(
            "UPDATE clients SET disabled_at = ?1 WHERE client_id = ?2 AND disabled_at IS NULL",
            args![to_unix(at), client_id],
        )
        .await?
        == 1)
}
