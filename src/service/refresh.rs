//! Refresh tokens: opaque, stored as hashes, single use and rotated on every use; a spent
//! one presented again revokes its family (and ends its session), except for a client
//! retrying a refresh whose answer it lost.

use std::time::Duration;

use zeroize::Zeroizing;

use super::clients::AuthenticatedClient;
use super::tokens::{IssueRequest, IssuedToken, RefreshPlan, DEFAULT_TTL, REFRESH_PREFIX};
use super::{audited, secret_digest, Actor, Tokens};
use crate::clock::Instant;
use crate::error::{Error, Result};
use crate::store::{self, refresh::RefreshRow};

impl Tokens {
    /// OAuth `refresh_token`: spends the presented refresh token and issues a new access
    /// token and refresh token in the same family. A spent token revokes the family — except
    /// within `refresh_grace` of its spending while its successor is unused, when the client
    /// is retrying a refresh whose answer it lost (or raced itself): it gets the same
    /// successor again, with a new access token.
    /// `proof`: the request's DPoP proof, checked but not yet spent; the new access token is
    /// bound to its key. It is spent once the refresh token is found good, so a refused
    /// refresh records nothing.
    pub async fn redeem_refresh(
        &self,
        presented: &str,
        client: Option<&AuthenticatedClient>,
        proof: Option<&crate::dpop::Proof>,
    ) -> Result<IssuedToken> {
        let grant = |why: &str| Error::InvalidGrant(why.to_owned());
        let bound_to = proof.map(|p| p.jkt.as_str());
        let mut spent_proof = false;
        if !presented.starts_with(REFRESH_PREFIX) || presented.len() > 128 {
            return Err(grant("the refresh token is not valid"));
        }
        let hash = secret_digest(presented);
        let successor = self.refresh_successor(presented);
        // A second pass only after losing a race to spend it: then it is spent, and the
        // winner's successor is what this request gets.
        for _ in 0..2 {
            let looked_up = hash.clone();
            let row = self
                .store
                .read(move |c| Box::pin(async move { store::refresh::get(c, &looked_up).await }))
                .await?
                .ok_or_else(|| grant("the refresh token is not valid"))?;
            let now = self.clock.now();
            // A client's refresh token is redeemed with that client's authentication only; one
            // minted through the Admin API belongs to no client and is redeemed without any.
            // Checked before anything is spent, so a refusal changes nothing.
            match (row.client_id.as_deref().filter(|o| o.starts_with("kc_")), client) {
                (Some(owner), Some(c)) if c.client_id == owner => {}
                (Some(_), Some(_)) => return Err(grant("the refresh token was issued to another client")),
                (Some(_), None) => {
                    return Err(grant("the refresh token was issued to a client: authenticate as that client"))
                }
                (None, Some(_)) => {
                    return Err(grant(
                        "the refresh token was minted through the Admin API and belongs to no client: redeem it without client authentication",
                    ))
                }
                (None, None) => {}
            }
            // The session the family forms (families from before sessions have none): an
            // ended session or one past its absolute end redeems nothing, and its tokens keep
            // the lifetime first asked for, within today's policy.
            let family = row.family.clone();
            let session =
                self.store.read(move |c| Box::pin(async move { store::sessions::get(c, &family).await })).await?;
            if let Some(s) = &session {
                if s.ended_at.is_some() {
                    return Err(grant("the session has ended"));
                }
                if s.ends_at <= now {
                    return Err(grant("the session reached its absolute lifetime: sign in again"));
                }
            }
            let max_ttl = self.shared.policy().max_token_ttl;
            let ttl = session
                .as_ref()
                .and_then(|s| s.ttl)
                .map(|secs| Duration::from_secs(secs.max(1) as u64))
                .unwrap_or(DEFAULT_TTL)
                .min(max_ttl);
            let ends_at = session.as_ref().map(|s| s.ends_at);
            // A refresh token bound to a DPoP key takes a proof of that key (RFC 9449 §5).
            if let Some(jkt) = &row.jkt {
                if bound_to != Some(jkt.as_str()) {
                    return Err(Error::InvalidDpopProof(
                        "the refresh token is bound to a DPoP key: present a proof of that key".into(),
                    ));
                }
            }
            if let Some(used) = row.used_at {
                if !self.config.refresh_grace.is_zero()
                    && now - used <= self.config.refresh_grace
                    && self.successor_unused(&successor).await?
                {
                    if let (Some(p), false) = (proof, spent_proof) {
                        self.spend_proof(p).await?;
                    }
                    let (mut req, actor) = refresh_grant(&row);
                    super::tokens::bind(&mut req, bound_to);
                    let plan = RefreshPlan::Retry { family: row.family.clone(), successor: successor.clone(), ends_at };
                    return self.mint(&req, ttl, plan, &actor).await;
                }
                self.revoke_family(&row, now, "refresh token reuse detected", "refresh.reuse").await?;
                return Err(grant("the refresh token was already used; every token of its family is now revoked"));
            }
            if row.revoked_at.is_some() || row.expires_at <= now {
                return Err(grant("the refresh token is revoked or expired"));
            }
            if self.shared.revoked().grant_revoked(&row.sub, row.client_id.as_deref(), row.issued_at) {
                return Err(grant("the subject's or client's tokens have been revoked"));
            }
            if let (Some(p), false) = (proof, spent_proof) {
                self.spend_proof(p).await?;
                spent_proof = true;
            }
            let (mut req, actor) = refresh_grant(&row);
            super::tokens::bind(&mut req, bound_to);
            let plan = RefreshPlan::Continue {
                family: row.family.clone(),
                spent: hash.clone(),
                successor: successor.clone(),
                ends_at,
                // A public holder's successor is bound to its proof's key; a client's
                // refresh tokens are bound to its credentials instead.
                jkt: if client.is_none() { bound_to.map(str::to_owned) } else { None },
            };
            match self.mint(&req, ttl, plan, &actor).await {
                // Another request spent it first: look again.
                Err(Error::InvalidGrant(_)) => continue,
                other => return other,
            }
        }
        Err(grant("the refresh token was already used"))
    }

    /// The refresh token that succeeds `presented`: derived from it under a key from the KEK,
    /// so every retry, on any node, names the same successor.
    fn refresh_successor(&self, presented: &str) -> Zeroizing<String> {
        use base64::Engine as _;
        let mac = self.keys.mac("refresh-successor", presented.as_bytes());
        Zeroizing::new(format!("{REFRESH_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)))
    }

    /// Whether `successor` was recorded and is neither spent nor revoked.
    async fn successor_unused(&self, successor: &str) -> Result<bool> {
        let hash = secret_digest(successor);
        let row = self.store.read(move |c| Box::pin(async move { store::refresh::get(c, &hash).await })).await?;
        Ok(row.is_some_and(|r| r.used_at.is_none() && r.revoked_at.is_none()))
    }

    /// Revokes a refresh token and its family, if it exists and (when `owner` is given)
    /// belongs to that client. Unknown tokens are ignored.
    pub async fn revoke_refresh_token(&self, presented: &str, owner: Option<&str>, reason: &str) -> Result<()> {
        let hash = secret_digest(presented);
        let Some(row) = self.store.read(move |c| Box::pin(async move { store::refresh::get(c, &hash).await })).await?
        else {
            return Ok(());
        };
        if owner.is_some() && row.client_id.as_deref() != owner {
            return Ok(());
        }
        self.revoke_family(&row, self.clock.now(), reason, "refresh.revoke").await
    }

    /// Revokes a refresh family, which ends its session: see [`super::sessions::end_family`].
    async fn revoke_family(&self, row: &RefreshRow, now: Instant, reason: &str, action: &str) -> Result<()> {
        let actor = Actor::system();
        let (family, why, action) = (row.family.clone(), reason.to_owned(), action.to_owned());
        let added = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let added = super::sessions::end_family(tx, &family, now, &why, &actor).await?;
                    audited(tx, now, &actor, &action, Some(&family), Some(&why)).await?;
                    Ok(added)
                })
            })
            .await?;
        self.shared.apply_revocations(&added);
        tracing::warn!(family = %row.family, %reason, "refresh family revoked");
        Ok(())
    }
}

/// What redeeming the refresh token `row` issues (the grant its family was started with),
/// and who issues it.
fn refresh_grant(row: &RefreshRow) -> (IssueRequest, Actor) {
    let req = IssueRequest {
        sub: row.sub.clone(),
        aud: row.aud.clone(),
        alg: row.alg.as_deref().and_then(|a| a.parse().ok()),
        scope: row.scope.clone(),
        client_id: row.client_id.clone(),
        claims: row.claims.as_deref().and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default(),
        refresh: true,
        ttl: None,
        session_label: None,
        session_owner: None,
        // Each refresh binds anew to its own proof's key (checked against the row's).
        dpop_jkt: None,
    };
    let actor = Actor { name: format!("refresh:{}", row.client_id.as_deref().unwrap_or("-")), source: None };
    (req, actor)
}
