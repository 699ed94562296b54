//! Sessions: the tokens a web app's user holds after signing in once. An app checks the
//! password itself and mints tokens with `"refresh": true`; the refresh family that starts
//! is the session, `sid` in each of its access tokens. It ends at its absolute lifetime
//! (`session_lifetime`), after `refresh_ttl` without a refresh, or when it is ended — by the
//! app that minted it (RFC 7009 revocation of any of its tokens, or the sessions API: one
//! session, or every session of a subject), by an administrator, or by refresh-token reuse.
//! An end is a revocation like any other: the `sid` entry reaches introspection and
//! `/auth/verify` on every node at once and the feed for APIs that verify locally, and it
//! is audited with who and why.

use serde::Serialize;

use super::{audited, Actor, Tokens};
use crate::clock::{self, Instant};
use crate::error::{Error, Result};
use crate::revocation::Revocation;
use crate::store::{self, sessions::SessionRow};

/// How long an ended session stays listed (for the dashboard and the app's own listing).
pub const ENDED_KEPT: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// The most sessions one listing returns.
pub const LIST_LIMIT: u32 = 500;

/// A session as the API and the dashboard show it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub sub: String,
    /// Who minted it: `apikey:<name>`, `client:<client_id>`, `admin:<name>` or `cli:<user>`.
    pub minted_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub started_at: Instant,
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub last_refreshed_at: Instant,
    /// When it ends if nothing else ends it first: its absolute end, or sooner the idle end
    /// (`refresh_ttl` after the last refresh).
    #[serde(serialize_with = "clock::serialize_rfc3339")]
    pub ends_at: Instant,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "clock::serialize_rfc3339_opt")]
    pub ended_at: Option<Instant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    pub active: bool,
}

impl SessionView {
    fn of(row: SessionRow, now: Instant, idle: std::time::Duration) -> SessionView {
        let ends_at = row.ends_at.min(row.refreshed_at + idle);
        // A session past its idle or absolute end has ended by itself.
        let (ended_at, end_reason) = match (row.ended_at, ends_at <= now) {
            (Some(at), _) => (Some(at), row.end_reason),
            (None, true) if row.ends_at <= ends_at => (Some(ends_at), Some("absolute lifetime reached".to_owned())),
            (None, true) => (Some(ends_at), Some("idle: not refreshed within refresh_ttl".to_owned())),
            (None, false) => (None, None),
        };
        SessionView {
            session_id: row.id,
            sub: row.sub,
            minted_by: row.minted_by,
            label: row.label,
            started_at: row.started_at,
            last_refreshed_at: row.refreshed_at,
            ends_at,
            active: ended_at.is_none(),
            ended_at,
            end_reason,
        }
    }
}

/// Who may see and end sessions: an administrator (every session) or an owner (theirs only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Viewer {
    Admin,
    Owner(String),
}

impl Viewer {
    /// The owner an issuer API key's sessions are recorded under.
    pub fn api_key(id: &str) -> Viewer {
        Viewer::Owner(api_key_owner(id))
    }

    fn owner(&self) -> Option<&str> {
        match self {
            Viewer::Admin => None,
            Viewer::Owner(o) => Some(o),
        }
    }
}

/// The owner string of sessions an API key mints.
pub fn api_key_owner(id: &str) -> String {
    format!("apikey:{id}")
}

/// Checks an end's reason: 1 to 500 printable characters.
fn checked_reason(reason: &str) -> Result<&str> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(Error::Invalid(vec!["reason: give a reason of 1 to 500 printable characters".into()]));
    }
    Ok(reason)
}

/// Inside a write transaction: ends the refresh family `family`. Its refresh tokens are
/// revoked; a session still running is marked ended, with one `sid` entry covering every
/// token of it (each carries the `sid`), and audited; a family from before sessions (no
/// session row, tokens without `sid`) has its unexpired access tokens revoked by jti. Returns
/// the revocations added, for the in-memory index.
pub(super) async fn end_family(
    tx: &store::Tx<'_>,
    family: &str,
    now: Instant,
    reason: &str,
    by: &Actor,
) -> store::Result<Vec<(i64, Revocation)>> {
    store::refresh::revoke_family(tx, family, now).await?;
    let live = store::tokens::live_of_family(tx, family, now).await?;
    let mut added = Vec::new();
    match store::sessions::get(tx, family).await? {
        // Already ended: its `sid` entry covers its tokens.
        Some(session) if session.ended_at.is_some() => {}
        Some(_) => {
            store::sessions::end(tx, family, now, reason, &by.name).await?;
            let last_exp = live.iter().map(|(_, exp)| *exp).max().unwrap_or(now);
            let rev = Revocation::Session(family.to_owned());
            let r = super::revocations::insert(tx, &rev, last_exp, reason, now, by).await?;
            added.push((r.id, rev));
            audited(tx, now, by, "session.end", Some(family), Some(reason)).await?;
        }
        None => {
            for (jti, exp) in live {
                let rev = Revocation::Jti(jti);
                let r = super::revocations::insert(tx, &rev, exp, reason, now, by).await?;
                added.push((r.id, rev));
            }
        }
    }
    Ok(added)
}

impl Tokens {
    /// Sessions `viewer` may see, newest first: of `sub` when given, running ones only when
    /// `active_only`.
    pub async fn list_sessions(
        &self,
        viewer: &Viewer,
        sub: Option<&str>,
        active_only: bool,
    ) -> Result<Vec<SessionView>> {
        let now = self.clock.now();
        let idle = self.config.refresh_ttl;
        let (sub, viewer) = (sub.map(str::to_owned), viewer.clone());
        let rows = self
            .store
            .read(move |c| {
                Box::pin(async move {
                    let active = active_only.then_some(now);
                    store::sessions::list(c, sub.as_deref(), viewer.owner(), active, LIST_LIMIT).await
                })
            })
            .await?;
        Ok(rows.into_iter().map(|r| SessionView::of(r, now, idle)).filter(|v| !active_only || v.active).collect())
    }

    /// Ends one session `viewer` may end. An unknown session, one already ended, or one
    /// another owner minted changes nothing and answers the same (RFC 7009's rule: the
    /// answer reveals nothing). Returns whether this call ended it.
    pub async fn end_session(&self, id: &str, viewer: &Viewer, reason: &str, actor: &Actor) -> Result<bool> {
        let reason = checked_reason(reason)?;
        if id.is_empty() || id.len() > 64 {
            return Ok(false);
        }
        let now = self.clock.now();
        let (ending, viewer, reason, by) = (id.to_owned(), viewer.clone(), reason.to_owned(), actor.clone());
        let added = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let Some(row) = store::sessions::get(tx, &ending).await? else { return Ok(Vec::new()) };
                    if viewer.owner().is_some_and(|o| o != row.owner) || row.ended_at.is_some() {
                        return Ok(Vec::new());
                    }
                    end_family(tx, &ending, now, &reason, &by).await
                })
            })
            .await?;
        self.shared.apply_revocations(&added);
        let ended = added.iter().any(|(_, r)| matches!(r, Revocation::Session(_)));
        if ended {
            tracing::info!(session = %id, actor = %actor.name, "session ended");
        }
        Ok(ended)
    }

    /// Ends every running session of `sub` that `viewer` may end ("log out everywhere").
    /// Returns how many it ended.
    pub async fn end_sessions_of(&self, sub: &str, viewer: &Viewer, reason: &str, actor: &Actor) -> Result<usize> {
        let reason = checked_reason(reason)?;
        let now = self.clock.now();
        let (of, viewer, reason, by) = (sub.to_owned(), viewer.clone(), reason.to_owned(), actor.clone());
        let added = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let mut added = Vec::new();
                    for row in store::sessions::list(tx, Some(&of), viewer.owner(), Some(now), u32::MAX).await? {
                        added.extend(end_family(tx, &row.id, now, &reason, &by).await?);
                    }
                    Ok(added)
                })
            })
            .await?;
        self.shared.apply_revocations(&added);
        let ended = added.iter().filter(|(_, r)| matches!(r, Revocation::Session(_))).count();
        tracing::info!(%sub, ended, actor = %actor.name, "sessions of a subject ended");
        Ok(ended)
    }

    /// Forgets sessions ended more than [`ENDED_KEPT`] ago.
    pub(super) async fn prune_sessions(&self, now: Instant) -> Result<usize> {
        let before = now - ENDED_KEPT;
        Ok(self.store.write(move |tx| Box::pin(async move { store::sessions::prune(tx, before).await })).await?)
    }
}
