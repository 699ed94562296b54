//! SQL for `sessions`: the refresh families a web app's users sign in with, one row each.

use super::{args, Conn, Result, Row, Tx};
use crate::clock::{from_unix, to_unix, Instant};

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    /// The refresh family's id: `sid` in every access token of the session.
    pub id: String,
    pub sub: String,
    /// Who may list and end it besides an administrator: `apikey:<key id>` or
    /// `client:<client_id>` (or the actor, for the CLI and the dashboard).
    pub owner: String,
    /// Who minted it, as the audit log names them.
    pub minted_by: String,
    pub label: Option<String>,
    /// The access-token lifetime first asked for, in seconds (`None`: the default).
    pub ttl: Option<i64>,
    pub started_at: Instant,
    pub refreshed_at: Instant,
    /// The absolute end.
    pub ends_at: Instant,
    pub ended_at: Option<Instant>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
}

const COLUMNS: &str =
    "id, sub, owner, minted_by, label, ttl, started_at, refreshed_at, ends_at, ended_at, end_reason, ended_by";

fn from_row(r: &Row) -> Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        sub: r.get(1)?,
        owner: r.get(2)?,
        minted_by: r.get(3)?,
        label: r.get(4)?,
        ttl: r.get(5)?,
        started_at: from_unix(r.get(6)?),
        refreshed_at: from_unix(r.get(7)?),
        ends_at: from_unix(r.get(8)?),
        ended_at: r.get::<Option<i64>>(9)?.map(from_unix),
        end_reason: r.get(10)?,
        ended_by: r.get(11)?,
    })
}

pub async fn insert(tx: &Tx<'_>, s: &SessionRow) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        args![
            s.id,
            s.sub,
            s.owner,
            s.minted_by,
            s.label,
            s.ttl,
            to_unix(s.started_at),
            to_unix(s.refreshed_at),
            to_unix(s.ends_at),
            s.ended_at.map(to_unix),
            s.end_reason,
            s.ended_by
        ],
    )
    .await?;
    Ok(())
}

/// Records a refresh of the session.
pub async fn refreshed(tx: &Tx<'_>, id: &str, at: Instant) -> Result<()> {
    tx.execute("UPDATE sessions SET refreshed_at = ?1 WHERE id = ?2", args![to_unix(at), id]).await?;
    Ok(())
}

pub async fn get(conn: &Conn<'_>, id: &str) -> Result<Option<SessionRow>> {
    conn.query_opt(&format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"), args![id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Sessions, newest first: of `sub` if given, owned by `owner` if given, still running at
/// `live_at` if given (not ended, before their absolute end), at most `limit`.
pub async fn list(
    conn: &Conn<'_>,
    sub: Option<&str>,
    owner: Option<&str>,
    live_at: Option<Instant>,
    limit: u32,
) -> Result<Vec<SessionRow>> {
    conn.query(
        &format!(
            "SELECT {COLUMNS} FROM sessions
             WHERE (CAST(?1 AS TEXT) IS NULL OR sub = CAST(?1 AS TEXT))
               AND (CAST(?2 AS TEXT) IS NULL OR owner = CAST(?2 AS TEXT))
               AND (CAST(?3 AS BIGINT) IS NULL OR (ended_at IS NULL AND ends_at > ?3))
             ORDER BY started_at DESC, id LIMIT ?4"
        ),
        args![sub, owner, live_at.map(to_unix), limit],
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Marks a session ended; false when it already was.
pub async fn end(tx: &Tx<'_>, id: &str, at: Instant, reason: &str, by: &str) -> Result<bool> {
    Ok(tx
        .execute(
            "UPDATE sessions SET ended_at = ?1, end_reason = ?2, ended_by = ?3 WHERE id = ?4 AND ended_at IS NULL",
            args![to_unix(at), reason, by, id],
        )
        .await?
        == 1)
}

/// Forgets sessions that ended (or reached their absolute end) before `before`.
pub async fn prune(tx: &Tx<'_>, before: Instant) -> Result<usize> {
    let t = to_unix(before);
    Ok(tx.execute("DELETE FROM sessions WHERE COALESCE(ended_at, ends_at) < ?1", args![t]).await? as usize)
}
