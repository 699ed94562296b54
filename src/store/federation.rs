//! SQL for `trusted_issuers` and `federated_subjects`: workload identity federation.

use super::{args, Conn, Result, Row, Tx};
use crate::clock::{from_unix, to_unix, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerRow {
    pub issuer: String,
    pub jwks_uri: String,
    /// The audience its tokens must name to be exchanged here.
    pub audience: String,
    pub created_at: Instant,
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectRow {
    pub issuer: String,
    pub subject: String,
    pub client_id: String,
    pub created_at: Instant,
    pub created_by: String,
}

fn issuer_row(r: &Row) -> Result<IssuerRow> {
    Ok(IssuerRow {
        issuer: r.get(0)?,
        jwks_uri: r.get(1)?,
        audience: r.get(2)?,
        created_at: from_unix(r.get(3)?),
        created_by: r.get(4)?,
    })
}

fn subject_row(r: &Row) -> Result<SubjectRow> {
    Ok(SubjectRow {
        issuer: r.get(0)?,
        subject: r.get(1)?,
        client_id: r.get(2)?,
        created_at: from_unix(r.get(3)?),
        created_by: r.get(4)?,
    })
}

/// Trusts an issuer, or replaces what is known of one (its keys' URL, its audience);
/// `true` when it was new.
pub async fn put_issuer(tx: &Tx<'_>, row: &IssuerRow) -> Result<bool> {
    let known = tx.query_opt("SELECT 1 FROM trusted_issuers WHERE issuer = ?1", args![row.issuer]).await?.is_some();
    if known {
        tx.execute(
            "UPDATE trusted_issuers SET jwks_uri = ?2, audience = ?3 WHERE issuer = ?1",
            args![row.issuer, row.jwks_uri, row.audience],
        )
        .await?;
    } else {
        tx.execute(
            "INSERT INTO trusted_issuers (issuer, jwks_uri, audience, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![row.issuer, row.jwks_uri, row.audience, to_unix(row.created_at), row.created_by],
        )
        .await?;
    }
    Ok(!known)
}

/// Stops trusting an issuer, and forgets its subjects; `false` if it was not trusted.
pub async fn remove_issuer(tx: &Tx<'_>, issuer: &str) -> Result<bool> {
    tx.execute("DELETE FROM federated_subjects WHERE issuer = ?1", args![issuer]).await?;
    Ok(tx.execute("DELETE FROM trusted_issuers WHERE issuer = ?1", args![issuer]).await? == 1)
}

pub async fn issuers(conn: &Conn<'_>) -> Result<Vec<IssuerRow>> {
    conn.query(
        "SELECT issuer, jwks_uri, audience, created_at, created_by FROM trusted_issuers ORDER BY issuer",
        args![],
    )
    .await?
    .iter()
    .map(issuer_row)
    .collect()
}

/// Whether any issuer is trusted (the metadata then offers the federation grants).
pub async fn any_issuer(conn: &Conn<'_>) -> Result<bool> {
    conn.query_one("SELECT EXISTS (SELECT 1 FROM trusted_issuers)", args![]).await?.get::<bool>(0)
}

/// Maps a subject of a trusted issuer to a client, or re-maps it.
pub async fn put_subject(tx: &Tx<'_>, row: &SubjectRow) -> Result<()> {
    tx.execute("DELETE FROM federated_subjects WHERE issuer = ?1 AND subject = ?2", args![row.issuer, row.subject])
        .await?;
    tx.execute(
        "INSERT INTO federated_subjects (issuer, subject, client_id, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![row.issuer, row.subject, row.client_id, to_unix(row.created_at), row.created_by],
    )
    .await?;
    Ok(())
}

/// Forgets a subject's mapping; `false` if there was none.
pub async fn remove_subject(tx: &Tx<'_>, issuer: &str, subject: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM federated_subjects WHERE issuer = ?1 AND subject = ?2", args![issuer, subject]).await?
        == 1)
}

pub async fn subjects(conn: &Conn<'_>) -> Result<Vec<SubjectRow>> {
    conn.query(
        "SELECT issuer, subject, client_id, created_at, created_by FROM federated_subjects ORDER BY issuer, subject",
        args![],
    )
    .await?
    .iter()
    .map(subject_row)
    .collect()
}
