//! SQL for `issued_tokens`: the record of every token signed, never the token itself.

use std::collections::HashMap;

use super::{args, Conn, Result, Row};
use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::KeyId;
use crate::records::{Lifetime, TokenQuery, TokenRecord};

pub fn insert(tx: &Conn<'_>, t: &TokenRecord) -> Result<()> {
    let aud = serde_json::to_string(&t.aud).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO issued_tokens (jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        args![
            t.jti,
            t.sub,
            t.kid.as_str(),
            aud,
            t.client_id,
            t.scope,
            to_unix(t.iat),
            to_unix(t.exp),
            t.issued_by,
            t.family
        ],
    )?;
    Ok(())
}

/// The latest `exp` of the tokens signed by each live (not expired, not revoked) key.
pub fn last_exp_by_live_key(conn: &Conn<'_>) -> Result<HashMap<KeyId, Instant>> {
    // One index probe per live key (issued_tokens_kid_exp), whatever the history's size.
    let rows = conn.query(
        "SELECT k.kid, (SELECT max(t.exp) FROM issued_tokens t WHERE t.kid = k.kid) AS last
         FROM signing_keys k WHERE k.state IN ('pending', 'active', 'retired')",
        args![],
    )?;
    let mut out = HashMap::new();
    for row in rows {
        if let Some(last) = row.get::<Option<i64>>(1)? {
            out.insert(KeyId::new(row.get::<String>(0)?), from_unix(last));
        }
    }
    Ok(out)
}

/// The latest `exp` of the tokens signed by one key, read inside the transaction that
/// expires it so a token recorded a moment earlier is never missed.
pub fn last_exp(conn: &Conn<'_>, kid: &KeyId) -> Result<Option<Instant>> {
    let v: Option<i64> =
        conn.query_one("SELECT max(exp) FROM issued_tokens WHERE kid = ?1", args![kid.as_str()])?.get(0)?;
    Ok(v.map(from_unix))
}

/// How many tokens signed by `kid` are still unexpired at `now`.
pub fn live_count(conn: &Conn<'_>, kid: &KeyId, now: Instant) -> Result<u64> {
    let n: i64 = conn
        .query_one("SELECT count(*) FROM issued_tokens WHERE kid = ?1 AND exp > ?2", args![kid.as_str(), to_unix(now)])?
        .get(0)?;
    Ok(n as u64)
}

/// One issued token by jti.
pub fn get(conn: &Conn<'_>, jti: &str) -> Result<Option<TokenRecord>> {
    conn.query_opt(&format!("SELECT {TOKEN_COLUMNS} FROM issued_tokens WHERE jti = ?1"), args![jti])?
        .as_ref()
        .map(token_from_row)
        .transpose()
}

/// `rowid` is SQLite's own row number; the PostgreSQL schema has an identity column of that
/// name, so both order and page the same way.
const TOKEN_COLUMNS: &str = "jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family, rowid";

fn token_from_row(r: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        jti: r.get(0)?,
        sub: r.get(1)?,
        kid: KeyId::new(r.get::<String>(2)?),
        aud: serde_json::from_str(&r.get::<String>(3)?).unwrap_or_default(),
        client_id: r.get(4)?,
        scope: r.get(5)?,
        iat: from_unix(r.get(6)?),
        exp: from_unix(r.get(7)?),
        issued_by: r.get(8)?,
        family: r.get(9)?,
    })
}

/// Issued tokens matching `q` at `now`, newest first, with each row's cursor.
pub fn list(conn: &Conn<'_>, q: &TokenQuery, now: Instant) -> Result<Vec<(i64, TokenRecord)>> {
    let unexpired_at = (q.lifetime == Some(Lifetime::Unexpired)).then_some(to_unix(now));
    let expired_at = (q.lifetime == Some(Lifetime::Expired)).then_some(to_unix(now));
    let rows = conn.query(
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM issued_tokens
             WHERE (CAST(?1 AS TEXT) IS NULL OR sub = ?1) AND (CAST(?2 AS TEXT) IS NULL OR client_id = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR kid = ?3) AND (CAST(?4 AS BIGINT) IS NULL OR exp > ?4)
               AND (CAST(?5 AS BIGINT) IS NULL OR exp <= ?5) AND (CAST(?6 AS BIGINT) IS NULL OR rowid < ?6)
             ORDER BY rowid DESC LIMIT ?7"
        ),
        args![q.sub, q.client_id, q.kid, unexpired_at, expired_at, q.before, q.limit],
    )?;
    rows.iter().map(|r| Ok((r.get::<i64>(10)?, token_from_row(r)?))).collect()
}

/// The latest `exp` of tokens matching a subject, client or key (for pruning revocations).
pub fn last_exp_of(conn: &Conn<'_>, column: &str, value: &str) -> Result<Option<Instant>> {
    let column = match column {
        "sub" => "sub",
        "client_id" => "client_id",
        _ => "kid",
    };
    let v: Option<i64> =
        conn.query_one(&format!("SELECT max(exp) FROM issued_tokens WHERE {column} = ?1"), args![value])?.get(0)?;
    Ok(v.map(from_unix))
}

/// The jtis and exps of a refresh family's access tokens still unexpired at `now`.
pub fn live_of_family(conn: &Conn<'_>, family: &str, now: Instant) -> Result<Vec<(String, Instant)>> {
    conn.query("SELECT jti, exp FROM issued_tokens WHERE family = ?1 AND exp > ?2", args![family, to_unix(now)])?
        .iter()
        .map(|r| Ok((r.get(0)?, from_unix(r.get(1)?))))
        .collect()
}

/// How many tokens were issued at or after `since`.
pub fn issued_since(conn: &Conn<'_>, since: Instant) -> Result<u64> {
    Ok(conn.query_one("SELECT count(*) FROM issued_tokens WHERE iat >= ?1", args![to_unix(since)])?.get::<i64>(0)?
        as u64)
}
