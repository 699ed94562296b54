//! SQL for `issued_tokens`: the record of every token signed, never the token itself.

use std::collections::HashMap;

use super::refresh::RefreshRow;
use super::{args, Conn, Dialect, Result, Row, StoreError};
use crate::clock::{from_unix, to_unix, Instant};
use crate::keys::{KeyId, KeyState};
use crate::records::{Lifetime, TokenQuery, TokenRecord};

/// What recording one answered token writes, as data, so that a batch of them is written in
/// a few statements: the refresh token it spends, its record, the refresh token it hands out.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The hash of the refresh token this answer spends (a refresh grant).
    pub spends: Option<Vec<u8>>,
    pub token: TokenRecord,
    /// The refresh token it hands out, when that is new.
    pub refresh: Option<RefreshRow>,
    /// What it writes of its session: the start, or a refresh.
    pub session: Option<SessionWrite>,
}

/// A session's row as a recording changes it.
#[derive(Clone, Debug)]
pub enum SessionWrite {
    Start(Box<super::sessions::SessionRow>),
    Refreshed { id: String, at: Instant },
}

/// The one statement of a batch of access tokens on PostgreSQL (see [`one_statement`]).
pub(super) const RECORD_ACCESS_TOKENS: &str =
    "INSERT INTO issued_tokens (jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family)
     SELECT r.jti, r.sub, r.kid, r.aud, r.client_id, r.scope, r.iat, r.exp, r.issued_by, r.family
     FROM json_populate_recordset(NULL::issued_tokens, ?1::text::json) r
     WHERE EXISTS (SELECT 1 FROM signing_keys k WHERE k.kid = r.kid AND k.state = 'active')
     RETURNING jti";

/// Whether [`record_batch`] writes `batch` in one statement, [`RECORD_ACCESS_TOKENS`]: on
/// PostgreSQL, a batch of access tokens alone (no refresh token spent or handed out, no
/// session written).
pub(super) fn one_statement(dialect: Dialect, batch: &[&Recording]) -> bool {
    dialect == Dialect::Postgres
        && !batch.is_empty()
        && batch.iter().all(|r| r.spends.is_none() && r.refresh.is_none() && r.session.is_none())
}

/// Writes a batch of recordings in one transaction and says, for each, whether it stands:
/// one refused because its key no longer signs (`KeyStoppedSigning`) or its refresh token
/// was already spent (`RefreshSpent`, also when an earlier recording of the batch spent it)
/// writes nothing, and the others stand. The key states are read once per key, before any
/// write, and the token records go in one statement on PostgreSQL. An `Err` of the whole is
/// a failed statement: the caller rolls the transaction back.
pub async fn record_batch(tx: &Conn<'_>, batch: &[&Recording]) -> Result<Vec<Result<()>>> {
    if one_statement(tx.dialect(), batch) {
        // The common case (no refresh token spent or handed out) in one statement: the
        // key-state check is part of the insert, and the records it did not write are the
        // ones whose key no longer signs.
        let written = tx
            .query(RECORD_ACCESS_TOKENS, args![json_rows(batch)])
            .await?
            .iter()
            .map(|row| row.get::<String>(0))
            .collect::<Result<std::collections::HashSet<String>>>()?;
        return Ok(batch
            .iter()
            .map(|r| match written.contains(&r.token.jti) {
                true => Ok(()),
                false => Err(StoreError::KeyStoppedSigning(r.token.kid.clone())),
            })
            .collect());
    }
    let mut signing: HashMap<&KeyId, bool> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for r in batch {
        let kid = &r.token.kid;
        let signs = match signing.get(kid) {
            Some(signs) => *signs,
            None => {
                let signs = super::keys::state(tx, kid).await? == Some(KeyState::Active);
                signing.insert(kid, signs);
                signs
            }
        };
        outcomes.push(if !signs {
            Err(StoreError::KeyStoppedSigning(kid.clone()))
        } else if let Some(hash) = &r.spends {
            if super::refresh::spend(tx, hash, r.token.iat).await? {
                Ok(())
            } else {
                Err(StoreError::RefreshSpent)
            }
        } else {
            Ok(())
        });
    }
    let standing: Vec<&Recording> =
        batch.iter().zip(&outcomes).filter(|(_, outcome)| outcome.is_ok()).map(|(r, _)| *r).collect();
    insert_many(tx, &standing).await?;
    for row in standing.iter().filter_map(|r| r.refresh.as_ref()) {
        super::refresh::insert(tx, row).await?;
    }
    for write in standing.iter().filter_map(|r| r.session.as_ref()) {
        match write {
            SessionWrite::Start(row) => super::sessions::insert(tx, row).await?,
            SessionWrite::Refreshed { id, at } => super::sessions::refreshed(tx, id, *at).await?,
        }
    }
    Ok(outcomes)
}

/// Inserts the token records of `batch`: on PostgreSQL in one statement (a JSON array of
/// rows, so the statement is the same whatever the batch's size and stays prepared); on
/// SQLite row by row, since its statements run in this process anyway.
async fn insert_many(tx: &Conn<'_>, batch: &[&Recording]) -> Result<()> {
    match tx.dialect() {
        Dialect::Sqlite => {
            for r in batch {
                insert(tx, &r.token).await?;
            }
            Ok(())
        }
        Dialect::Postgres if batch.is_empty() => Ok(()),
        Dialect::Postgres => {
            tx.execute(
                "INSERT INTO issued_tokens (jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family)
                 SELECT jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family
                 FROM json_populate_recordset(NULL::issued_tokens, ?1::text::json)",
                args![json_rows(batch)],
            )
            .await?;
            Ok(())
        }
    }
}

/// The token records of `batch` as one JSON array (PostgreSQL's `json_populate_recordset`
/// reads it), so the statement is the same whatever the batch's size.
fn json_rows(batch: &[&Recording]) -> String {
    let rows: Vec<serde_json::Value> = batch
        .iter()
        .map(|r| {
            let t = &r.token;
            serde_json::json!({
                "jti": t.jti,
                "sub": t.sub,
                "kid": t.kid.as_str(),
                "aud": serde_json::to_string(&t.aud).unwrap_or_else(|_| "[]".into()),
                "client_id": t.client_id,
                "scope": t.scope,
                "iat": to_unix(t.iat),
                "exp": to_unix(t.exp),
                "issued_by": t.issued_by,
                "family": t.family,
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

pub async fn insert(tx: &Conn<'_>, t: &TokenRecord) -> Result<()> {
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
    )
    .await?;
    Ok(())
}

/// The latest `exp` of the tokens signed by each live (not expired, not revoked) key.
pub async fn last_exp_by_live_key(conn: &Conn<'_>) -> Result<HashMap<KeyId, Instant>> {
    // One index probe per live key (issued_tokens_kid_exp), whatever the history's size.
    let rows = conn
        .query(
            "SELECT k.kid, (SELECT max(t.exp) FROM issued_tokens t WHERE t.kid = k.kid) AS last
         FROM signing_keys k WHERE k.state IN ('pending', 'active', 'retired')",
            args![],
        )
        .await?;
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
pub async fn last_exp(conn: &Conn<'_>, kid: &KeyId) -> Result<Option<Instant>> {
    let v: Option<i64> =
        conn.query_one("SELECT max(exp) FROM issued_tokens WHERE kid = ?1", args![kid.as_str()]).await?.get(0)?;
    Ok(v.map(from_unix))
}

/// An unexpired token's revocation handles: (jti, sub, client_id, refresh family = its
/// session, iat).
pub type LiveToken = (String, String, Option<String>, Option<String>, Instant);

/// The unexpired tokens `kid` signed, for counting those not already revoked.
pub async fn live_of_key(conn: &Conn<'_>, kid: &KeyId, now: Instant) -> Result<Vec<LiveToken>> {
    conn.query(
        "SELECT jti, sub, client_id, family, iat FROM issued_tokens WHERE kid = ?1 AND exp > ?2",
        args![kid.as_str(), to_unix(now)],
    )
    .await?
    .iter()
    .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, from_unix(r.get(4)?))))
    .collect()
}

/// One issued token by jti.
pub async fn get(conn: &Conn<'_>, jti: &str) -> Result<Option<TokenRecord>> {
    conn.query_opt(&format!("SELECT {TOKEN_COLUMNS} FROM issued_tokens WHERE jti = ?1"), args![jti])
        .await?
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
pub async fn list(conn: &Conn<'_>, q: &TokenQuery, now: Instant) -> Result<Vec<(i64, TokenRecord)>> {
    let unexpired_at = (q.lifetime == Some(Lifetime::Unexpired)).then_some(to_unix(now));
    let expired_at = (q.lifetime == Some(Lifetime::Expired)).then_some(to_unix(now));
    let rows = conn
        .query(
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM issued_tokens
             WHERE (CAST(?1 AS TEXT) IS NULL OR sub = ?1) AND (CAST(?2 AS TEXT) IS NULL OR client_id = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR kid = ?3) AND (CAST(?4 AS BIGINT) IS NULL OR exp > ?4)
               AND (CAST(?5 AS BIGINT) IS NULL OR exp <= ?5) AND (CAST(?6 AS BIGINT) IS NULL OR rowid < ?6)
             ORDER BY rowid DESC LIMIT ?7"
            ),
            args![q.sub, q.client_id, q.kid, unexpired_at, expired_at, q.before, q.limit],
        )
        .await?;
    rows.iter().map(|r| Ok((r.get::<i64>(10)?, token_from_row(r)?))).collect()
}

/// The latest `exp` of tokens matching a subject, client or key (for pruning revocations).
pub async fn last_exp_of(conn: &Conn<'_>, column: &str, value: &str) -> Result<Option<Instant>> {
    let column = match column {
        "sub" => "sub",
        "client_id" => "client_id",
        _ => "kid",
    };
    let v: Option<i64> = conn
        .query_one(&format!("SELECT max(exp) FROM issued_tokens WHERE {column} = ?1"), args![value])
        .await?
        .get(0)?;
    Ok(v.map(from_unix))
}

/// The jtis and exps of a refresh family's access tokens still unexpired at `now`.
pub async fn live_of_family(conn: &Conn<'_>, family: &str, now: Instant) -> Result<Vec<(String, Instant)>> {
    conn.query("SELECT jti, exp FROM issued_tokens WHERE family = ?1 AND exp > ?2", args![family, to_unix(now)])
        .await?
        .iter()
        .map(|r| Ok((r.get(0)?, from_unix(r.get(1)?))))
        .collect()
}

/// Tokens issued per `bucket` seconds from `since` on: (bucket index, count), empty buckets
/// left out.
pub async fn issued_per(conn: &Conn<'_>, since: Instant, bucket: i64) -> Result<Vec<(i64, u64)>> {
    conn.query(
        "SELECT (iat - ?1) / ?2 AS b, count(*) FROM issued_tokens WHERE iat >= ?1 GROUP BY b ORDER BY b",
        args![to_unix(since), bucket],
    )
    .await?
    .iter()
    .map(|r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)? as u64)))
    .collect()
}

/// How many tokens were issued at or after `since`.
pub async fn issued_since(conn: &Conn<'_>, since: Instant) -> Result<u64> {
    Ok(conn
        .query_one("SELECT count(*) FROM issued_tokens WHERE iat >= ?1", args![to_unix(since)])
        .await?
        .get::<i64>(0)? as u64)
}
