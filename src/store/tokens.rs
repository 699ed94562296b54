//! SQL for `issued_tokens`: the record of every token signed, never the token itself.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::Result;
use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::KeyId;
use crate::records::{Lifetime, TokenQuery, TokenRecord};

pub fn insert(tx: &Connection, t: &TokenRecord) -> Result<()> {
    let aud = serde_json::to_string(&t.aud).unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(
        "INSERT INTO issued_tokens (jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
        t.issued_by,
        t.family
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
    let rows = stmt.query_map([], |r| Ok((KeyId::new(r.get::<_, String>(0)?), r.get::<_, Option<i64>>(1)?)))?;
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
    let v: Option<i64> =
        conn.query_row("SELECT max(exp) FROM issued_tokens WHERE kid = ?1", [kid.as_str()], |r| r.get(0))?;
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

/// One issued token by jti.
pub fn get(conn: &Connection, jti: &str) -> Result<Option<TokenRecord>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM issued_tokens WHERE jti = ?1"))?;
    Ok(rusqlite::OptionalExtension::optional(stmt.query_row([jti], token_from_row))?)
}

const TOKEN_COLUMNS: &str = "jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family, rowid";

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        jti: r.get(0)?,
        sub: r.get(1)?,
        kid: KeyId::new(r.get::<_, String>(2)?),
        aud: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
        client_id: r.get(4)?,
        scope: r.get(5)?,
        iat: from_unix(r.get(6)?),
        exp: from_unix(r.get(7)?),
        issued_by: r.get(8)?,
        family: r.get(9)?,
    })
}

/// Issued tokens matching `q` at `now`, newest first, with each row's cursor.
pub fn list(conn: &Connection, q: &TokenQuery, now: Instant) -> Result<Vec<(i64, TokenRecord)>> {
    let unexpired_at = (q.lifetime == Some(Lifetime::Unexpired)).then_some(to_unix(now));
    let expired_at = (q.lifetime == Some(Lifetime::Expired)).then_some(to_unix(now));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM issued_tokens
         WHERE (?1 IS NULL OR sub = ?1) AND (?2 IS NULL OR client_id = ?2) AND (?3 IS NULL OR kid = ?3)
           AND (?4 IS NULL OR exp > ?4) AND (?5 IS NULL OR exp <= ?5) AND (?6 IS NULL OR rowid < ?6)
         ORDER BY rowid DESC LIMIT ?7"
    ))?;
    let rows = stmt
        .query_map(params![q.sub, q.client_id, q.kid, unexpired_at, expired_at, q.before, q.limit], |r| {
            Ok((r.get::<_, i64>(10)?, token_from_row(r)?))
        })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The latest `exp` of tokens matching a subject, client or key (for pruning revocations).
pub fn last_exp_of(conn: &Connection, column: &str, value: &str) -> Result<Option<Instant>> {
    let column = match column {
        "sub" => "sub",
        "client_id" => "client_id",
        _ => "kid",
    };
    let v: Option<i64> =
        conn.query_row(&format!("SELECT max(exp) FROM issued_tokens WHERE {column} = ?1"), [value], |r| r.get(0))?;
    Ok(v.map(from_unix))
}

/// The jtis and exps of a refresh family's access tokens still unexpired at `now`.
pub fn live_of_family(conn: &Connection, family: &str, now: Instant) -> Result<Vec<(String, Instant)>> {
    let mut stmt = conn.prepare_cached("SELECT jti, exp FROM issued_tokens WHERE family = ?1 AND exp > ?2")?;
    let rows = stmt.query_map(params![family, to_unix(now)], |r| Ok((r.get(0)?, from_unix(r.get(1)?))))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many tokens were issued at or after `since`.
pub fn issued_since(conn: &Connection, since: Instant) -> Result<u64> {
    Ok(conn.query_row("SELECT count(*) FROM issued_tokens WHERE iat >= ?1", [to_unix(since)], |r| r.get::<_, i64>(0))?
        as u64)
}
