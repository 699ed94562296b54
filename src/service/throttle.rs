//! Throttled guessing: failed client and API-key authentications are counted per client
//! address (the peer, or the client a trusted proxy names) with governor's GCRA limiter on
//! keyturn's clock. Past `auth_failure_limit` failures in a burst (refilling at that many per
//! `auth_failure_window`), the address is refused with 429 until a failure would be allowed
//! again, before its credentials are even looked at — so a refusal tells a guesser nothing.
//!
//! Only the address is the key, never the client id or API key named: an attacker who knows
//! a client's id can lock out only their own address, never the client using its right
//! secret from anywhere else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference as _};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::Clock;

/// Which credential failed: the label of `keyturn_auth_throttled_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An OAuth client's id and secret (`/oauth/token`, `/oauth/introspect`, `/oauth/revoke`).
    Client,
    /// An API key (`/api/v1`, introspection by a verifier key).
    ApiKey,
}

impl Credential {
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::Client => "client",
            Credential::ApiKey => "api_key",
        }
    }
}

/// keyturn's clock as governor's: time since the Unix epoch, so tests move it.
#[derive(Clone, Debug)]
struct ServiceClock(Clock);

impl GovernorClock for ServiceClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        let nanos = self.0.now().unix_timestamp_nanos().max(0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

type Limiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, ServiceClock, NoOpMiddleware<Duration>>;

/// Counts failed authentications per address and says which addresses must wait.
pub struct Throttle {
    limiter: Limiter,
    clock: ServiceClock,
    /// Addresses over the limit, with when they may try again.
    blocked: Mutex<HashMap<IpAddr, Duration>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").finish_non_exhaustive()
    }
}

impl Throttle {
    /// `limit` failures in a burst, refilling at `limit` per `window`.
    pub fn new(limit: u32, window: Duration, clock: Clock) -> Throttle {
        let burst = NonZeroU32::new(limit.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = (window / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(burst)).allow_burst(burst);
        let clock = ServiceClock(clock);
        Throttle { limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()), clock, blocked: Mutex::default() }
    }

    /// How long `addr` must still wait, if it is refused now. An unknown address is never
    /// refused (there is nothing to count it by).
    pub fn refused(&self, addr: Option<IpAddr>) -> Option<Duration> {
        let addr = addr?;
        let now = self.clock.now();
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match blocked.get(&addr) {
            Some(until) if *until > now => Some(until.duration_since(now).into()),
            Some(_) => {
                blocked.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// Counts one failed authentication from `addr`. Returns how long the address must now
    /// wait when this failure took it over the limit.
    pub fn failed(&self, addr: Option<IpAddr>) -> Option<Duration> {
        let addr = addr?;
        let not_until = self.limiter.check_key(&addr).err()?;
        let now = self.clock.now();
        let wait: Duration = not_until.wait_time_from(now);
        // Whole seconds, at least one: what `Retry-After` can say.
        let wait = Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(Duration::from_secs(1));
        self.blocked.lock().unwrap_or_else(PoisonError::into_inner).insert(addr, now + wait);
        Some(wait)
    }

    /// Forgets addresses whose counts have refilled (housekeeping), so memory stays bounded
    /// by the addresses that failed recently.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = self.clock.now();
        self.blocked.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, until| *until > now);
    }
}

impl super::Clients {
    /// How long `addr` must wait before it may authenticate again, when it failed too often.
    pub fn auth_refused(&self, addr: Option<IpAddr>, credential: Credential) -> Option<Duration> {
        let wait = self.auth_blocked(addr)?;
        self.metrics.auth_throttled(credential.as_str());
        Some(wait)
    }

    /// [`Self::auth_refused`] without counting a refusal (the caller already did).
    pub fn auth_blocked(&self, addr: Option<IpAddr>) -> Option<Duration> {
        self.throttle.refused(addr)
    }

    /// Counts a failed authentication from `addr`; returns how long it must now wait when
    /// this failure took it over `auth_failure_limit`.
    pub fn auth_failed(&self, addr: Option<IpAddr>, credential: Credential) -> Option<Duration> {
        let wait = self.throttle.failed(addr)?;
        self.metrics.auth_throttled(credential.as_str());
        if let Some(a) = addr {
            tracing::warn!(address = %a, credential = credential.as_str(), wait_secs = wait.as_secs(), "too many failed authentications from one address: refused with 429 until it waits");
        }
        Some(wait)
    }

    /// Forgets addresses whose failures no longer count (housekeeping).
    pub(super) fn prune_throttle(&self) {
        self.throttle.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn an_address_is_refused_after_its_burst_and_waits_for_the_refill() {
        let clock = Clock::fake(time::macros::datetime!(2026-01-01 00:00 UTC));
        let t = Throttle::new(3, Duration::from_secs(60), clock.clone());
        for _ in 0..3 {
            assert_eq!(t.failed(addr(2)), None);
            assert_eq!(t.refused(addr(2)), None);
        }
        let wait = t.failed(addr(2)).expect("the fourth failure is over the limit");
        assert_eq!(wait, Duration::from_secs(20), "one failure refills every 60 s / 3");
        assert_eq!(t.refused(addr(2)), Some(Duration::from_secs(20)));
        assert_eq!(t.refused(addr(3)), None, "another address is not slowed");
        assert_eq!(t.failed(addr(3)), None);
        assert_eq!(t.refused(None), None);
        assert_eq!(t.failed(None), None);
        clock.advance(Duration::from_secs(19));
        assert_eq!(t.refused(addr(2)), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.refused(addr(2)), None, "free again once a failure would be allowed");
        assert_eq!(t.failed(addr(2)), None, "one failure has refilled");
        assert!(t.failed(addr(2)).is_some(), "but only one");
        clock.advance(Duration::from_secs(3600));
        t.prune();
        assert_eq!(t.refused(addr(2)), None);
        for _ in 0..3 {
            assert_eq!(t.failed(addr(2)), None, "a whole burst again after a long quiet");
        }
    }
}
