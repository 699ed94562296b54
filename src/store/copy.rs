//! Copying a whole database into a new, empty one (`keyturn db copy`): moving from one
//! SQLite node up to a PostgreSQL cluster without re-issuing anything. Rows are copied as
//! they are: keys stay sealed under the same key-encryption key (the check value is copied
//! with them), with the same kids, and every record keeps its id.

use super::{args, Conn, Dialect, Result, Store, StoreError, Value};

/// The tables copied, parents before children, with their columns as both schemas have
/// them (`rowid` is SQLite's own row number and PostgreSQL's identity column of that name).
/// Not copied: the rotator lease (it belongs to a running process), and each backend's own
/// bookkeeping (schema version, change generation).
const TABLES: &[(&str, &str)] = &[
    (
        "signing_keys",
        "kid, alg, state, public_jwk, sealed_private, created_at, published_at, activated_at, retired_at, expired_at, revoked_at, revoke_reason, not_after, custody",
    ),
    ("meta", "name, value"),
    ("audit_log", "id, at, actor, action, target, source, detail"),
    ("issued_tokens", "rowid, jti, sub, kid, aud, client_id, scope, iat, exp, issued_by, family"),
    ("api_keys", "id, name, role, secret_hash, created_at, created_by, revoked_at, last_used_at"),
    ("settings", "name, value"),
    ("rotation_requests", "alg, requested_at, requested_by"),
    (
        "clients",
        "client_id, name, secret_hash, scopes, audiences, max_ttl, created_at, created_by, disabled_at, dpop_required, jwks, jwks_uri",
    ),
    (
        "refresh_tokens",
        "token_hash, family, sub, client_id, aud, scope, claims, alg, issued_at, expires_at, used_at, revoked_at, jkt",
    ),
    ("revocations", "id, kind, value, cutoff, covers_until, reason, created_at, created_by"),
    (
        "sessions",
        "id, sub, owner, minted_by, label, ttl, started_at, refreshed_at, ends_at, ended_at, end_reason, ended_by",
    ),
    ("admins", "name, password_hash, created_at, created_by, password_changed_at"),
    ("admin_sessions", "id_hash, admin, csrf, created_at, last_seen, source"),
    ("setup_links", "token_hash, created_at, expires_at, used_at, created_by"),
    ("sign_in_failures", "key, at, attempt"),
    ("seen_jtis", "key, jti, expires_at"),
    ("trusted_issuers", "issuer, jwks_uri, audience, created_at, created_by"),
    ("federated_subjects", "issuer, subject, client_id, created_at, created_by"),
];

/// Identity columns whose sequence must continue after the copied ids (PostgreSQL).
const IDENTITIES: &[(&str, &str)] = &[("audit_log", "id"), ("issued_tokens", "rowid"), ("revocations", "id")];

/// Rows read from the source at a time.
const PAGE: i64 = 5_000;

/// Copies every table of `from` into `to`, which must be migrated and hold nothing, in one
/// transaction of `to` (all or nothing), calling `inside` in it before it commits (the audit
/// record of the copy). Returns how many rows each table had.
pub async fn copy_into<F>(from: &Store, to: &Store, inside: F) -> Result<Vec<(&'static str, u64)>>
where
    F: for<'c> FnOnce(&'c Conn<'c>) -> super::Work<'c, ()> + Send + 'static,
{
    let (from, to_shown) = (from.clone(), to.location());
    to.write_unbounded(move |tx| {
        Box::pin(async move {
        let keys: i64 = tx.query_one("SELECT count(*) FROM signing_keys", args![]).await?.get(0)?;
        let meta: i64 = tx.query_one("SELECT count(*) FROM meta", args![]).await?.get(0)?;
        if keys > 0 || meta > 0 {
            return Err(StoreError::Conflict(format!(
                "{to_shown} already holds a keyturn database; copy only into an empty one"
            )));
        }
        let mut counts = Vec::with_capacity(TABLES.len());
        for (table, columns) in TABLES {
            let n = columns.split(',').count();
            let placeholders: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
            let insert = format!("INSERT INTO {table} ({columns}) VALUES ({})", placeholders.join(", "));
            // Paged by the source's row number, so a large history is never all in memory.
            let select = format!("SELECT rowid, {columns} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2");
            let (mut after, mut copied) = (i64::MIN, 0u64);
            loop {
                let select = select.clone();
                let page = from
                    .read(move |c| {
                        Box::pin(async move {
                            if c.dialect() != Dialect::Sqlite {
                                return Err(StoreError::Unsupported("db copy reads from a SQLite database".into()));
                            }
                            c.query(&select, args![after, PAGE]).await
                        })
                    })
                    .await?;
                let Some(last) = page.last() else { break };
                after = last.get(0)?;
                for row in page {
                    let values: Vec<Value> = row.into_values().into_iter().skip(1).collect();
                    let refs: Vec<&dyn super::sql::ToValue> = values.iter().map(|v| v as &dyn super::sql::ToValue).collect();
                    tx.execute(&insert, &refs).await?;
                    copied += 1;
                }
            }
            counts.push((*table, copied));
        }
        if tx.dialect() == Dialect::Postgres {
            for (table, column) in IDENTITIES {
                tx.query_one(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
                    ),
                    args![],
                ).await?;
            }
        }
        inside(tx).await?;
        Ok(counts)
        })
    })
    .await
}
