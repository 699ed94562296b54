//! SQL for the audit log. Records are written in the same transaction as the change they
//! describe (DESIGN.md invariant 7).

use rusqlite::{params, Connection, Transaction};

use super::Result;
use crate::clock::{from_unix, to_unix, Instant};
use crate::records::{AuditEntry, AuditQuery};

/// Appends a record. The caller's transaction commits it together with the change.
pub fn record(
    tx: &Transaction<'_>,
    at: Instant,
    actor: &str,
    action: &str,
    target: Option<&str>,
    source: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, target, source, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![to_unix(at), actor, action, target, source, detail],
    )?;
    Ok(())
}

/// Records matching `f`, newest first.
pub fn search(conn: &Connection, f: &AuditQuery) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, actor, action, target, source, detail FROM audit_log
         WHERE (?1 IS NULL OR instr(actor, ?1) > 0) AND (?2 IS NULL OR substr(action, 1, length(?2)) = ?2)
           AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at <= ?4) AND (?5 IS NULL OR id < ?5)
         ORDER BY id DESC LIMIT ?6",
    )?;
    let rows =
        stmt.query_map(params![f.actor, f.action, f.from.map(to_unix), f.to.map(to_unix), f.before, f.limit], |r| {
            Ok(AuditEntry {
                id: r.get(0)?,
                at: from_unix(r.get(1)?),
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                source: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
