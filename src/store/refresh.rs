//! SQL for `refresh_tokens`: opaque refresh tokens, stored as hashes, grouped in families.

use super::{args, Conn, Result, Tx};
use crate::clock::{from_unix, to_unix, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRow {
    pub token_hash: Vec<u8>,
    pub family: String,
    pub sub: String,
    pub client_id: Option<String>,
    pub aud: Vec<String>,
    pub scope: Option<String>,
    pub claims: Option<String>,
    pub alg: Option<String>,
    pub issued_at: Instant,
    pub expires_at: Instant,
    pub used_at: Option<Instant>,
    pub revoked_at: Option<Instant>,
    /// The thumbprint of the DPoP key it is bound to, if any.
    pub jkt: Option<String>,
}

pub async fn insert(tx: &Conn<'_>, r: &RefreshRow) -> Result<()> {
    tx.execute(
        "INSERT INTO refresh_tokens (token_hash, family, sub, client_id, aud, scope, claims, alg, issued_at, expires_at, used_at, revoked_at, jkt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        args![
            r.token_hash,
            r.family,
            r.sub,
            r.client_id,
            serde_json::to_string(&r.aud).unwrap_or_else(|_| "[]".into()),
            r.scope,
            r.claims,
            r.alg,
            to_unix(r.issued_at),
            to_unix(r.expires_at),
            r.used_at.map(to_unix),
            r.revoked_at.map(to_unix),
            r.jkt
        ],
    ).await?;
    Ok(())
}

pub async fn get(conn: &Conn<'_>, token_hash: &[u8]) -> Result<Option<RefreshRow>> {
    let row = conn.query_opt(
        "SELECT token_hash, family, sub, client_id, aud, scope, claims, alg, issued_at, expires_at, used_at, revoked_at, jkt
         FROM refresh_tokens WHERE token_hash = ?1",
        args![token_hash],
    ).await?;
    row.map(|r| {
        Ok(RefreshRow {
            token_hash: r.get(0)?,
            family: r.get(1)?,
            sub: r.get(2)?,
            client_id: r.get(3)?,
            aud: serde_json::from_str(&r.get::<String>(4)?).unwrap_or_default(),
            scope: r.get(5)?,
            claims: r.get(6)?,
            alg: r.get(7)?,
            issued_at: from_unix(r.get(8)?),
            expires_at: from_unix(r.get(9)?),
            used_at: r.get::<Option<i64>>(10)?.map(from_unix),
            revoked_at: r.get::<Option<i64>>(11)?.map(from_unix),
            jkt: r.get(12)?,
        })
    })
    .transpose()
}

/// Marks a refresh token spent; false if it was already spent or revoked (a race lost).
pub async fn spend(tx: &Conn<'_>, token_hash: &[u8], at: Instant) -> Result<bool> {
    Ok(tx
        .execute(
            "UPDATE refresh_tokens SET used_at = ?1 WHERE token_hash = ?2 AND used_at IS NULL AND revoked_at IS NULL",
            args![to_unix(at), token_hash],
        )
        .await?
        == 1)
}

/// Revokes every refresh token of a family; returns how many were still usable.
pub async fn revoke_family(tx: &Tx<'_>, family: &str, at: Instant) -> Result<usize> {
    Ok(tx
        .execute(
            "UPDATE refresh_tokens SET revoked_at = ?1 WHERE family = ?2 AND revoked_at IS NULL",
            args![to_unix(at), family],
        )
        .await? as usize)
}

/// Revokes every refresh token of a subject (`column` = "sub") or client ("client_id").
pub async fn revoke_all_of(tx: &Tx<'_>, column: &str, value: &str, at: Instant) -> Result<usize> {
    let column = if column == "sub" { "sub" } else { "client_id" };
    Ok(tx
        .execute(
            &format!("UPDATE refresh_tokens SET revoked_at = ?1 WHERE {column} = ?2 AND revoked_at IS NULL"),
            args![to_unix(at), value],
        )
        .await? as usize)
}

/// Deletes refresh tokens that expired before `before`.
pub async fn prune(tx: &Tx<'_>, before: Instant) -> Result<usize> {
    Ok(tx.execute("DELETE FROM refresh_tokens WHERE expires_at < ?1", args![to_unix(before)]).await? as usize)
}
