//! Reading the audit log. Records are written by the store inside each change's own
//! transaction (DESIGN.md invariant 7); this module only lists and searches them.

use super::Keyturn;
use crate::error::Result;
use crate::records::{AuditEntry, AuditQuery};
use crate::store;

impl Keyturn {
    /// Audit records, newest first, at most `limit`, older than `before` when given.
    pub fn audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        self.audit_search(&AuditQuery { before, limit, ..AuditQuery::default() })
    }

    /// Audit records matching `query`, newest first.
    pub fn audit_search(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        Ok(self.store.read_blocking(|c| store::audit::search(c, query))?)
    }
}
