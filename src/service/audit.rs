//! Reading the audit log. Records are written by the store inside each change's own
//! transaction (DESIGN.md invariant 7); this module only lists and searches them.

use crate::error::Result;
use crate::records::{AuditEntry, AuditQuery};
use crate::store::{self, Store};

/// The audit log, for reading: records are written by each change's own transaction.
pub struct Audit {
    store: Store,
}

impl Audit {
    pub(super) fn new(store: Store) -> Audit {
        Audit { store }
    }

    /// Audit records, newest first, at most `limit`, older than `before` when given.
    pub async fn page(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
        self.search(&AuditQuery { before, limit, ..AuditQuery::default() }).await
    }

    /// Audit records matching `query`, newest first.
    pub async fn search(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let query = query.clone();
        Ok(self.store.read(move |c| Box::pin(async move { store::audit::search(c, &query).await })).await?)
    }
}
