//! Where a request comes from. The peer's address, unless the peer is one of the configured
//! `trusted_proxies`: then the client address that proxy reports in `X-Forwarded-For` (the
//! rightmost entry that is not itself a trusted proxy) or `X-Real-IP`. Anyone else's
//! forwarding headers are ignored, so a client cannot choose the address the audit log
//! records or the sign-in limiter counts.

use std::net::IpAddr;
use std::sync::Arc;

use rocket::request::{FromRequest, Outcome};
use rocket::Request;

/// The address a request comes from, as keyturn counts and audits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

impl ClientAddress {
    /// The address of `req`'s client.
    pub fn of(req: &Request<'_>) -> ClientAddress {
        let Some(peer) = req.remote().map(|r| r.ip()) else { return ClientAddress(None) };
        let proxies = req.rocket().state::<Arc<crate::config::Config>>().map(|c| c.trusted_proxies.as_slice());
        let headers = req.headers();
        ClientAddress(Some(resolve(
            peer,
            proxies.unwrap_or_default(),
            headers.get_one("X-Forwarded-For"),
            headers.get_one("X-Real-IP"),
        )))
    }

    /// The address as text, for audit records and limiter keys.
    pub fn text(self) -> String {
        self.0.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into())
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ClientAddress {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(ClientAddress::of(req))
    }
}

/// The client's address given the peer, the trusted proxies and the forwarding headers.
fn resolve(peer: IpAddr, proxies: &[IpAddr], forwarded_for: Option<&str>, real_ip: Option<&str>) -> IpAddr {
    if !proxies.contains(&peer) {
        return peer;
    }
    if let Some(chain) = forwarded_for {
        // Each proxy appends the address it received the request from: walk back from the
        // nearest hop, past our own proxies, to the first address they did not add.
        let mut nearest = peer;
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if proxies.contains(&ip) => nearest = ip,
                Ok(ip) => return ip,
                Err(_) => return nearest,
            }
        }
        return nearest;
    }
    real_ip.and_then(|v| v.trim().parse().ok()).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::resolve;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        let cases: &[(&str, Option<&str>, Option<&str>, &str)] = &[
            ("192.0.2.9", Some("203.0.113.7"), Some("203.0.113.8"), "192.0.2.9"),
            ("10.0.0.1", Some("203.0.113.7"), None, "203.0.113.7"),
            ("10.0.0.1", Some("198.51.100.1, 203.0.113.7, 10.0.0.2"), None, "203.0.113.7"),
            ("10.0.0.1", Some("10.0.0.2"), None, "10.0.0.2"),
            ("10.0.0.1", Some("garbage"), Some("203.0.113.8"), "10.0.0.1"),
            ("10.0.0.1", Some("203.0.113.7, garbage, 10.0.0.2"), None, "10.0.0.2"),
            ("10.0.0.1", None, Some("203.0.113.8"), "203.0.113.8"),
            ("10.0.0.1", None, Some("nonsense"), "10.0.0.1"),
            ("10.0.0.1", None, None, "10.0.0.1"),
            ("10.0.0.1", Some("2001:db8::5"), None, "2001:db8::5"),
        ];
        for (peer, xff, real, want) in cases {
            assert_eq!(resolve(ip(peer), &proxies, *xff, *real), ip(want), "{peer} {xff:?} {real:?}");
        }
    }
}
