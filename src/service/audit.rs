//! Reading the audit log. Records are written by the store inside each change's own
//! transaction (DESIGN.md invariant 7); this module only lists and searches them.

use serde::Serialize;

use super::Keyturn;
use crate::clock::{self, Instant};
use crate::error::Result;
use crate::store;

/// One audit record: who did what to which target, when, and from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// The page cursor of this record.
    pub id: i64,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub at: Instant,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub detail: Option<String>,
}

/// Which records to list: every field narrows the search.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Part of the actor's name.
    pub actor: Option<String>,
    /// The start of the action (`key.` finds every key action).
    pub action: Option<String>,
    pub from: Option<Instant>,
    pub to: Option<Instant>,
    /// Page cursor: records older than this id.
    pub before: Option<i64>,
    pub limit: u32,
}

impl From<store::audit::AuditRow> for AuditEntry {
    fn from(r: store::audit::AuditRow) -> Self {
        AuditEntry {
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            source: r.source,
            detail: r.detail,
        }
    }
}

impl Keyturn {
    /// Audit records, newest first, at most `limit`, older than `before` when given.
    pub fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        self.audit_search(&AuditQuery { before, limit, ..AuditQuery::default() })
    }

    /// Audit records matching `query`, newest first.
    pub fn audit_search(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let filter = store::audit::AuditFilter {
            actor: query.actor.clone(),
            action: query.action.clone(),
            from: query.from,
            to: query.to,
            before: query.before,
            limit: query.limit,
        };
        let rows = self.store.read_blocking(|c| store::audit::search(c, &filter))?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }
}
