//! Issued-token records (never the tokens): the listing the API and the dashboard show, and
//! what each record means now.

use serde::Serialize;

use super::shared::Shared;
use super::Tokens;
use crate::error::Result;
use crate::keys::KeyId;
use crate::records::{TokenQuery, TokenRecord};
use crate::revocation::TokenFacts;
use crate::store;

/// Where an issued token stands now. Decided here once, for the API and the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenStatus {
    Active,
    Expired,
    /// Revoked and not yet expired, or revoked and expired: revocation is what an
    /// administrator needs to see.
    Revoked,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
        }
    }
}

/// An issued-token record as the API and the dashboard show it (never the token), with what
/// it means now.
#[derive(Clone, Debug, Serialize)]
pub struct TokenView {
    /// The page cursor of this record.
    #[serde(skip)]
    pub cursor: i64,
    #[serde(flatten)]
    pub record: TokenRecord,
    pub expired: bool,
    pub revoked: bool,
    /// What revoked it: `jti` (the token itself), `sid` (its session ended), `sub` (every
    /// token of its subject), `client_id` or `kid` (its key was revoked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_because: Option<&'static str>,
    pub status: TokenStatus,
}

impl Tokens {
    /// Issued-token records matching `query`, newest first.
    pub async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<TokenView>> {
        let now = self.clock.now();
        let query = query.clone();
        let rows = self.store.read(move |c| Box::pin(async move { store::tokens::list(c, &query, now).await })).await?;
        let revocations = self.shared.revoked();
        Ok(rows
            .into_iter()
            .map(|(cursor, t)| {
                let facts = TokenFacts {
                    jti: &t.jti,
                    sub: &t.sub,
                    client_id: t.client_id.as_deref(),
                    kid: t.kid.as_str(),
                    sid: t.family.as_deref(),
                    iat: t.iat,
                };
                let revoked_because = revocations.check(&facts);
                let revoked = revoked_because.is_some();
                let expired = t.exp <= now;
                let status = match (revoked, expired) {
                    (true, _) => TokenStatus::Revoked,
                    (false, true) => TokenStatus::Expired,
                    (false, false) => TokenStatus::Active,
                };
                TokenView { cursor, record: t, expired, revoked, revoked_because, status }
            })
            .collect())
    }

    /// How many tokens signed by `kid` are unexpired now.
    pub async fn live_tokens_of(&self, kid: &KeyId) -> Result<u64> {
        let now = self.clock.now();
        let of = kid.clone();
        let live =
            self.store.read(move |c| Box::pin(async move { store::tokens::live_of_key(c, &of, now).await })).await?;
        Ok(unrevoked(&self.shared, kid, &live))
    }
}

/// How many of `live` (tokens `kid` signed) no revocation in `index` covers yet: what
/// revoking the key would newly invalidate.
pub(super) fn unrevoked(shared: &Shared, kid: &KeyId, live: &[store::tokens::LiveToken]) -> u64 {
    let index = shared.revoked();
    live.iter()
        .filter(|(jti, sub, client_id, family, iat)| {
            let sid = family.as_deref();
            let facts = TokenFacts { jti, sub, client_id: client_id.as_deref(), kid: kid.as_str(), sid, iat: *iat };
            index.check(&facts).is_none()
        })
        .count() as u64
}
