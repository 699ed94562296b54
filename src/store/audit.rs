//! SQL for the audit log. Records are written in the same transaction as the change they
//! describe (DESIGN.md invariant 7).

use super::{args, Conn, Result, Tx};
use crate::clock::{from_unix, to_unix, Instant};
use crate::records::{AuditEntry, AuditQuery};

/// Appends a record. The caller's transaction commits it together with the change.
pub async fn record(
    tx: &Tx<'_>,
    at: Instant,
    actor: &str,
    action: &str,
    target: Option<&str>,
    source: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![to_unix(at), actor, action, target, source, detail],
    )
    .await?;
    Ok(())
}

/// When `action` was last recorded on `target`, if ever.
pub async fn last(conn: &Conn<'_>, action: &str, target: &str) -> Result<Option<Instant>> {
    let rows =
        conn.query("SELECT max(at) FROM audit_log WHERE action = ?1 AND target = ?2", args![action, target]).await?;
    Ok(rows.first().map(|r| r.get::<Option<i64>>(0)).transpose()?.flatten().map(from_unix))
}

/// Records matching `f`, newest first.
pub async fn search(conn: &Conn<'_>, f: &AuditQuery) -> Result<Vec<AuditEntry>> {
    // Each filter is "absent, or matches"; the casts tell PostgreSQL each argument's type
    // where NULL alone would not.
    let rows = conn
        .query(
            "SELECT id, at, actor, action, target, source, detail FROM audit_log
         WHERE (CAST(?1 AS TEXT) IS NULL OR instr(actor, CAST(?1 AS TEXT)) > 0)
           AND (CAST(?2 AS TEXT) IS NULL OR substr(action, 1, length(CAST(?2 AS TEXT))) = CAST(?2 AS TEXT))
           AND (CAST(?3 AS BIGINT) IS NULL OR at >= ?3) AND (CAST(?4 AS BIGINT) IS NULL OR at <= ?4)
           AND (CAST(?5 AS BIGINT) IS NULL OR id < ?5)
         ORDER BY id DESC LIMIT ?6",
            args![f.actor, f.action, f.from.map(to_unix), f.to.map(to_unix), f.before, f.limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: from_unix(r.get(1)?),
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                source: r.get(5)?,
                detail: r.get(6)?,
            })
        })
        .collect()
}
