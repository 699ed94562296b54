//! Revocation by every handle an incident needs (jti, subject, client, key), the feed
//! resource servers poll, and pruning of entries whose tokens have all expired.

use serde::Serialize;

use std::sync::Arc;

use super::sessions::Viewer;
use super::shared::Shared;
use super::{audited, Actor, Keys, Tokens};
use crate::clock::{self, Clock, Instant};
use crate::error::{Error, Result};
use crate::revocation::{Revocation, RevocationIndex};
use crate::store::{self, revocations::RevocationRow, Store};

/// What to revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeTarget {
    Jti(String),
    Sub(String),
    Client(String),
    Kid(String),
}

/// A feed entry.
#[derive(Clone, Debug, Serialize)]
pub struct RevocationView {
    /// The feed cursor of this entry.
    pub id: i64,
    /// `jti`, `sub`, `client_id`, `kid` or `sid` (a session ended).
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    /// For `sub` and `client_id`: tokens issued at or before this time are revoked.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "clock::serialize_rfc3339_opt")]
    pub issued_before: Option<Instant>,
    /// After this time (plus leeway) every token the entry covers has expired, and the
    /// entry leaves the feed.
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub until: Instant,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub revoked_at: Instant,
    pub reason: String,
}

impl From<&RevocationRow> for RevocationView {
    fn from(r: &RevocationRow) -> Self {
        RevocationView {
            id: r.id,
            kind: r.kind.clone(),
            value: r.value.clone(),
            issued_before: matches!(r.kind.as_str(), "sub" | "client_id").then_some(r.cutoff),
            until: r.covers_until,
            revoked_at: r.created_at,
            reason: r.reason.clone(),
        }
    }
}

/// Adds stored rows to an index.
fn apply_rows(idx: &mut RevocationIndex, rows: &[RevocationRow]) {
    for r in rows {
        if let Some(rev) = Revocation::from_parts(&r.kind, r.value.clone(), r.cutoff) {
            idx.insert(r.id, &rev);
        }
    }
}

/// Loads every stored revocation into a fresh index.
pub async fn load_index(store: &Store) -> Result<RevocationIndex> {
    let mut idx = RevocationIndex::default();
    let mut after = 0;
    loop {
        let rows =
            store.read(move |c| Box::pin(async move { store::revocations::after(c, after, 50_000).await })).await?;
        let Some(last) = rows.last().map(|r| r.id) else { break };
        apply_rows(&mut idx, &rows);
        after = last;
    }
    Ok(idx)
}

/// Adds `r` inside the caller's transaction, covering tokens until `covers_until`.
pub(super) async fn insert(
    tx: &store::Tx<'_>,
    r: &Revocation,
    covers_until: Instant,
    reason: &str,
    now: Instant,
    actor: &Actor,
) -> store::Result<RevocationRow> {
    let cutoff = match r {
        Revocation::Subject { cutoff, .. } | Revocation::Client { cutoff, .. } => *cutoff,
        _ => now,
    };
    let value = match r {
        Revocation::Jti(v) | Revocation::Key(v) | Revocation::Session(v) => v.clone(),
        Revocation::Subject { sub, .. } => sub.clone(),
        Revocation::Client { client_id, .. } => client_id.clone(),
    };
    let mut row = RevocationRow {
        id: 0,
        kind: r.kind().to_owned(),
        value,
        cutoff,
        covers_until: covers_until.max(now),
        reason: reason.to_owned(),
        created_at: now,
        created_by: actor.name.clone(),
    };
    row.id = store::revocations::insert(tx, &row).await?;
    audited(tx, now, actor, "revocation.create", Some(&format!("{}:{}", row.kind, row.value)), Some(reason)).await?;
    Ok(row)
}

/// Revocations: by every handle an incident needs, the feed and the in-memory index kept
/// in step with the database.
pub struct Revocations {
    pub(super) clock: Clock,
    pub(super) store: Store,
    pub(super) shared: Arc<Shared>,
    pub(super) keys: Arc<Keys>,
    pub(super) tokens: Arc<Tokens>,
}

impl Revocations {
    pub(super) fn new(
        clock: &Clock,
        store: &Store,
        shared: &Arc<Shared>,
        keys: &Arc<Keys>,
        tokens: &Arc<Tokens>,
    ) -> Revocations {
        Revocations {
            clock: clock.clone(),
            store: store.clone(),
            shared: shared.clone(),
            keys: keys.clone(),
            tokens: tokens.clone(),
        }
    }

    /// Revokes tokens by `target`. Subjects and clients: every token issued until now (and
    /// their refresh tokens). A jti must name a token keyturn issued.
    pub async fn revoke(&self, target: &RevokeTarget, reason: &str, actor: &Actor) -> Result<RevocationView> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
            return Err(Error::Invalid(vec!["reason: give a reason of 1 to 500 printable characters".into()]));
        }
        let value = match target {
            RevokeTarget::Jti(v) | RevokeTarget::Sub(v) | RevokeTarget::Client(v) | RevokeTarget::Kid(v) => v,
        };
        if value.is_empty() || value.chars().count() > 255 || value.chars().any(char::is_control) {
            return Err(Error::Invalid(vec!["the value to revoke must be 1 to 255 printable characters".into()]));
        }
        // A key is revoked as a compromise: it leaves the JWKS, its private key is erased and
        // a replacement signs, so no new token is born revoked.
        if let RevokeTarget::Kid(kid) = target {
            let outcome = self.keys.revoke_key(&crate::keys::KeyId::new(kid.as_str()), reason, actor).await?;
            let rows = self
                .store
                .read(move |c| {
                    Box::pin(async move { store::revocations::after(c, outcome.revocation_id - 1, 1).await })
                })
                .await?;
            return rows
                .first()
                .map(RevocationView::from)
                .ok_or_else(|| Error::NotFound(format!("no revocation for {kid}")));
        }
        let now = self.clock.now();
        let max_ttl = self.shared.policy().max_token_ttl;
        let (target, reason_owned, by) = (target.clone(), reason.to_owned(), actor.clone());
        let row = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let (rev, covers_until) = match &target {
                        RevokeTarget::Jti(jti) => {
                            // An unknown jti revokes nothing: answered "not found" below.
                            let Some(t) = store::tokens::get(tx, jti).await? else { return Ok(None) };
                            (Revocation::Jti(jti.clone()), t.exp)
                        }
                        RevokeTarget::Sub(v) | RevokeTarget::Client(v) => {
                            let (column, rev) = match &target {
                                RevokeTarget::Sub(_) => ("sub", Revocation::Subject { sub: v.clone(), cutoff: now }),
                                _ => ("client_id", Revocation::Client { client_id: v.clone(), cutoff: now }),
                            };
                            // Their refresh tokens stop working too, so the entry need only outlive
                            // the access tokens (at most max_token_ttl from now).
                            store::refresh::revoke_all_of(tx, column, v, now).await?;
                            let last = store::tokens::last_exp_of(tx, column, v).await?.unwrap_or(now);
                            (rev, last.max(now + max_ttl))
                        }
                        // Revoked through revoke_key, above.
                        RevokeTarget::Kid(_) => return Ok(None),
                    };
                    let row = insert(tx, &rev, covers_until, &reason_owned, now, &by).await?;
                    Ok(Some((rev, row)))
                })
            })
            .await?;
        let Some((rev, row)) = row else { return Err(Error::NotFound(format!("no token with jti {value}"))) };
        self.shared.revoked_mut().insert(row.id, &rev);
        tracing::info!(kind = %row.kind, actor = %actor.name, "revocation recorded");
        Ok(RevocationView::from(&row))
    }

    /// Feed entries after `since`, at most `limit`, and the cursor to ask with next.
    pub async fn revocation_feed(&self, since: i64, limit: u32) -> Result<(Vec<RevocationView>, i64)> {
        let rows =
            self.store.read(move |c| Box::pin(async move { store::revocations::after(c, since, limit).await })).await?;
        let next = rows.last().map(|r| r.id).unwrap_or(since);
        Ok((rows.iter().map(RevocationView::from).collect(), next))
    }

    /// Deletes revocations (and refresh tokens) that can no longer matter, and rebuilds the
    /// index if anything went. Returns how many revocations were pruned.
    pub(super) async fn prune(&self, now: Instant) -> Result<usize> {
        let leeway = self.shared.policy().leeway;
        let before = now - leeway;
        let pruned = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let n = store::revocations::prune(tx, before).await?;
                    store::refresh::prune(tx, before).await?;
                    if n > 0 {
                        audited(
                            tx,
                            now,
                            &Actor::system(),
                            "revocation.prune",
                            None,
                            Some(&format!("{n} revocations whose tokens have all expired")),
                        )
                        .await?;
                    }
                    Ok(n)
                })
            })
            .await?;
        if pruned > 0 {
            let idx = load_index(&self.store).await?;
            *self.shared.revoked_mut() = idx;
        }
        Ok(pruned)
    }

    /// Picks up revocations other processes committed.
    pub(super) async fn load_new_revocations(&self) -> Result<()> {
        let after = self.shared.revoked().last_id;
        let rows = self
            .store
            .read(move |c| Box::pin(async move { store::revocations::after(c, after, 1_000_000).await }))
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        apply_rows(&mut self.shared.revoked_mut(), &rows);
        Ok(())
    }

    /// RFC 7009 for a client: revokes one of its access tokens (by jti) or one of its
    /// refresh tokens (with its family). Tokens that are not the client's, or not valid,
    /// are ignored, so the answer reveals nothing.
    pub async fn revoke_for_client(&self, token: &str, client: &super::clients::AuthenticatedClient) -> Result<()> {
        let actor = Actor { name: format!("client:{}", client.client_id), source: None };
        if token.starts_with(super::tokens::REFRESH_PREFIX) {
            return self
                .tokens
                .revoke_refresh_token(token, Some(&client.client_id), "revoked by its client (RFC 7009)")
                .await;
        }
        let answer = self.tokens.introspect(token);
        let owned =
            answer.claims.get("client_id").and_then(serde_json::Value::as_str) == Some(client.client_id.as_str());
        if answer.active && owned {
            let why = "revoked by its client (RFC 7009)";
            if let Some(sid) = answer.claims.get("sid").and_then(serde_json::Value::as_str) {
                // A token of a session ends the session.
                let owner = Viewer::Owner(actor.name.clone());
                if self.tokens.end_session(sid, &owner, why, &actor).await? {
                    return Ok(());
                }
            }
            if let Some(jti) = answer.claims.get("jti").and_then(serde_json::Value::as_str) {
                self.revoke(&RevokeTarget::Jti(jti.to_owned()), why, &actor).await?;
            }
        }
        Ok(())
    }

    /// RFC 7009 for an API key: an access or refresh token of a session the key may end
    /// ends that whole session; an access token minted outside a session by this key is
    /// revoked alone. Anything else (unknown, invalid, another key's) changes nothing.
    pub async fn revoke_for_api_key(&self, token: &str, viewer: &Viewer, actor: &Actor) -> Result<()> {
        const WHY: &str = "revoked by the app that minted it (RFC 7009)";
        if token.starts_with(super::tokens::REFRESH_PREFIX) {
            let hash = super::secret_digest(token);
            let Some(row) =
                self.store.read(move |c| Box::pin(async move { store::refresh::get(c, &hash).await })).await?
            else {
                return Ok(());
            };
            self.tokens.end_session(&row.family, viewer, WHY, actor).await?;
            return Ok(());
        }
        let answer = self.tokens.introspect(token);
        if !answer.active {
            return Ok(());
        }
        let text = |name: &str| answer.claims.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
        match (text("sid"), text("jti")) {
            (Some(sid), _) => {
                self.tokens.end_session(&sid, viewer, WHY, actor).await?;
            }
            (None, Some(jti)) => {
                let minted_by_caller = self
                    .store
                    .read({
                        let jti = jti.clone();
                        move |c| Box::pin(async move { store::tokens::get(c, &jti).await })
                    })
                    .await?
                    .is_some_and(|t| matches!(viewer, Viewer::Admin) || t.issued_by == actor.name);
                if minted_by_caller {
                    self.revoke(&RevokeTarget::Jti(jti), WHY, actor).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// How many revocations are in force.
    pub fn revocation_count(&self) -> usize {
        self.shared.revoked().len()
    }
}
