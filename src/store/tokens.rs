//! SQL for `issued_tokens`: the record of every token signed, never the token itself.

use std::collections::HashMap;

use rusqlite::{params, Connection, Transaction};

use super::Result;
use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::KeyId;

/// What is recorded about an issued token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub jti: String,
    pub sub: String,
    pub kid: KeyId,
    pub aud: Vec<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub iat: Instant,
    pub exp: Instant,
    pub issued_by: String,
}

pub fn insert(tx: &Transaction<'_>, t: &TokenRecord) -> Result<()> {
    let aud = serde_json::to_string(&t.aud).unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(
        "INSERT INTO issued_tokens (jti, sub, kid, aud, client_id, scope, iat, exp, issued_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        t.jti,
        t.sub,
        t.kid.as_str(),
        aud,
        t.client_id,
        t.scope,
        to_unix(t.iat),
        to_unix(t.exp),
        t.issued_by
    ])?;
    Ok(())
}

/// The latest `exp` of the tokens signed by each live (not expired, not revoked) key.
pub fn last_exp_by_live_key(conn: &Connection) -> Result<HashMap<KeyId, Instant>> {
    // One index probe per live key (issued_tokens_kid_exp), whatever the history's size.
    let mut stmt = conn.prepare_cached(
        "SELECT k.kid, (SELECT max(t.exp) FROM issued_tokens t WHERE t.kid = k.kid) AS last
         FROM signing_keys k WHERE k.state IN ('pending', 'active', 'retired')",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            KeyId::new(r.get::<_, String>(0)?),
            r.get::<_, Option<i64>>(1)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        if let (kid, Some(last)) = row? {
            out.insert(kid, from_unix(last));
        }
    }
    Ok(out)
}

/// The latest `exp` of the tokens signed by one key, read inside the transaction that
/// expires it so a token recorded a moment earlier is never missed.
pub fn last_exp(conn: &Connection, kid: &KeyId) -> Result<Option<Instant>> {
    let v: Option<i64> = conn.query_row(
        "SELECT max(exp) FROM issued_tokens WHERE kid = ?1",
        [kid.as_str()],
        |r| r.get(0),
    )?;
    Ok(v.map(from_unix))
}

/// How many tokens signed by `kid` are still unexpired at `now`.
pub fn live_count(conn: &Connection, kid: &KeyId, now: Instant) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM issued_tokens WHERE kid = ?1 AND exp > ?2",
        params![kid.as_str(), to_unix(now)],
        |r| r.get::<_, i64>(0),
    )? as u64)
}
