//! Public key sets kept by others: a client's `jwks_uri`, a trusted issuer's JWKS. Fetched
//! over HTTPS (plain HTTP only from a loopback address), bounded in size and time, kept for
//! [`FRESH_FOR`], and fetched again when an assertion names a key the copy lacks — at most
//! once per [`REFETCH_AFTER`] per URL, so a flood of unknown `kid`s costs whoever sends it
//! and never the owner of the URL. A set that cannot be fetched is served from the last copy
//! for [`STALE_FOR`], so a client's web server restarting does not lock the client out.
//! The URLs are the administrators' (registered clients and issuers), so the cache holds at
//! most one entry per registered URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use crate::clock::{Clock, Instant};

/// How long a fetched set is used without asking again.
pub const FRESH_FOR: Duration = Duration::from_secs(300);
/// The shortest time between two fetches of one URL.
pub const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// How long the last copy stands in when the URL cannot be fetched.
pub const STALE_FOR: Duration = Duration::from_secs(24 * 3600);
/// The largest key set accepted.
pub const MAX_SET_BYTES: usize = 64 * 1024;
/// The longest a fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a key set is to be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Any copy fresher than [`FRESH_FOR`].
    Fresh,
    /// The copy lacked the key an assertion names: fetch again unless one was fetched less
    /// than [`REFETCH_AFTER`] ago.
    Newer,
}

pub struct RemoteKeySets {
    http: reqwest::Client,
    clock: Clock,
    sets: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

#[derive(Default)]
struct Entry {
    keys: Option<(Arc<JwkSet>, Instant)>,
    /// When a fetch last failed: not tried again for [`REFETCH_AFTER`].
    failed_at: Option<Instant>,
    /// When an unknown key last made it fetch: not again for [`REFETCH_AFTER`].
    newer_at: Option<Instant>,
}

/// Whether `url` may be fetched from: `https`, or `http` to a loopback address (a sidecar, a
/// test); no credentials, no fragment.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        return Err("a key set URL carries no credentials and no fragment".into());
    }
    let host = parsed.host_str().ok_or("a key set URL names a host")?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("a key set URL must use https (http only on a loopback address)".into()),
    }
}

impl RemoteKeySets {
    /// `private_cas`: a PEM file of certificate authorities trusted besides the public ones
    /// (`trusted_ca_file`).
    pub fn new(clock: Clock, private_cas: Option<&std::path::Path>) -> Result<RemoteKeySets, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyturn/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = private_cas {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| format!("trusted_ca_file {shown}: {e}"))?;
            let cas = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("trusted_ca_file {shown}: not PEM certificates: {e}"))?;
            if cas.is_empty() {
                return Err(format!("trusted_ca_file {shown}: holds no certificate"));
            }
            for ca in cas {
                builder = builder.add_root_certificate(ca);
            }
        }
        let http = builder.build().map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(RemoteKeySets { http, clock, sets: Mutex::default() })
    }

    /// The key set at `url`, fetched or from the copy as `want` allows.
    pub async fn get(&self, url: &str, want: Want) -> Result<Arc<JwkSet>, String> {
        let entry = self.sets.lock().unwrap_or_else(PoisonError::into_inner).entry(url.to_owned()).or_default().clone();
        // One fetch per URL at a time: callers that wanted it together share its answer.
        let mut entry = entry.lock().await;
        let now = self.clock.now();
        let age = |at: Instant| (now - at).try_into().unwrap_or(Duration::ZERO);
        let lately = |at: Option<Instant>| at.is_some_and(|t| age(t) < REFETCH_AFTER);
        let held = entry.keys.as_ref().map(|(keys, fetched)| (keys.clone(), age(*fetched)));
        match (&held, want) {
            (Some((keys, age)), Want::Fresh) if *age < FRESH_FOR => return Ok(keys.clone()),
            (Some((keys, _)), Want::Newer) if lately(entry.newer_at) => return Ok(keys.clone()),
            _ if lately(entry.failed_at) => {
                return match held {
                    Some((keys, age)) if age < STALE_FOR => Ok(keys),
                    _ => Err(format!("the key set at {url} could not be fetched lately; not asking again yet")),
                }
            }
            _ => {}
        }
        if want == Want::Newer {
            entry.newer_at = Some(now);
        }
        match self.fetch(url).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                entry.keys = Some((keys.clone(), now));
                entry.failed_at = None;
                Ok(keys)
            }
            Err(why) => {
                entry.failed_at = Some(now);
                match held {
                    Some((keys, age)) if age < STALE_FOR => {
                        tracing::warn!("using the last copy of the key set at {url}: {why}");
                        Ok(keys)
                    }
                    _ => {
                        tracing::warn!("no key set from {url}: {why}");
                        Err(format!("the key set at {url} could not be fetched: {why}"))
                    }
                }
            }
        }
    }

    /// The `jwks_uri` of `issuer`, from its OpenID Connect discovery document (or else its
    /// RFC 8414 metadata), which must name `issuer` as its issuer.
    pub async fn discover(&self, issuer: &str) -> Result<String, String> {
        check_url(issuer)?;
        let base = issuer.trim_end_matches('/');
        let mut why = Vec::new();
        for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
            let url = format!("{base}{path}");
            match self.fetch_bytes(&url).await.and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| format!("it is not JSON: {e}"))
            }) {
                Ok(doc) if doc["issuer"].as_str() != Some(issuer) => {
                    why.push(format!("{url} names another issuer ({})", doc["issuer"]))
                }
                Ok(doc) => match doc["jwks_uri"].as_str() {
                    Some(jwks_uri) => {
                        check_url(jwks_uri).map_err(|e| format!("{url}: its jwks_uri: {e}"))?;
                        return Ok(jwks_uri.to_owned());
                    }
                    None => why.push(format!("{url} names no jwks_uri")),
                },
                Err(e) => why.push(format!("{url}: {e}")),
            }
        }
        Err(format!("cannot discover the keys of {issuer}: {}", why.join("; ")))
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, String> {
        let body = self.fetch_bytes(url).await?;
        serde_json::from_slice(&body).map_err(|e| format!("it is not a JWKS: {e}"))
    }

    /// The body at `url`: 200 only, at most [`MAX_SET_BYTES`], within [`FETCH_TIMEOUT`].
    async fn fetch_bytes(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut res = self.http.get(url).header("Accept", "application/json").send().await.map_err(describe)?;
        if !res.status().is_success() {
            return Err(format!("it answered {}", res.status()));
        }
        if res.content_length().is_some_and(|n| n > MAX_SET_BYTES as u64) {
            return Err(format!("it is larger than {MAX_SET_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_SET_BYTES {
                return Err(format!("it is larger than {MAX_SET_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A fetch error without the URL (the caller names it) and with its cause.
fn describe(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "it did not answer in time"
    } else if e.is_connect() {
        "no connection"
    } else {
        "the request failed"
    };
    let cause = std::error::Error::source(&e).map(|s| format!(" ({s})")).unwrap_or_default();
    format!("{what}{cause}")
}
