//! The timing policy: configured pins over values stored through the API over defaults, and
//! the validation every change passes before it is stored.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::{audited, Actor, Keyturn};
use crate::clock::{self, Instant};
use crate::config::{self, Config};
use crate::duration::{format_duration, parse_duration};
use crate::error::{Error, Result};
use crate::keys::lifecycle::{self, Policy};
use crate::schedule::{Schedule, DEFAULT_SCHEDULE};
use crate::store::{self};

/// Names of the editable policy values, as the API and the settings table spell them.
pub const CRON: &str = "cron";
pub const PUBLISH_LEAD: &str = "publish_lead";
pub const CLOCK_SKEW: &str = "clock_skew";
pub const MAX_TOKEN_TTL: &str = "max_token_ttl";
pub const LEEWAY: &str = "leeway";
pub const JWKS_MAX_AGE: &str = "jwks_max_age";

/// Builds the policy in force from the configuration and the stored settings. A stored
/// value that no longer parses is ignored with a warning (it was validated when stored).
/// The parsed schedule of `previous` is kept when its expression is unchanged, so its
/// memoized interval statistics survive snapshot rebuilds.
pub fn effective(config: &Config, stored: &HashMap<String, String>, previous: Option<&Policy>) -> Policy {
    let dur = |name: &str, pin: Option<Duration>, default: Duration| {
        pin.or_else(|| {
            let v = stored.get(name)?;
            parse_duration(v).map_err(|e| tracing::warn!(setting = name, "ignoring stored value: {e}")).ok()
        })
        .unwrap_or(default)
    };
    let schedule = config.rotation_schedule.clone().unwrap_or_else(|| {
        let text = stored.get(CRON).map(String::as_str).unwrap_or(DEFAULT_SCHEDULE);
        if let Some(prev) = previous.filter(|p| p.schedule.as_str() == text.trim()) {
            return prev.schedule.clone();
        }
        Schedule::parse(text)
            .map_err(|e| tracing::warn!("ignoring stored schedule: {e}"))
            .unwrap_or_else(|_| default_schedule())
    });
    Policy {
        schedule,
        publish_lead: dur(PUBLISH_LEAD, config.publish_lead, config::default_duration("publish_lead")),
        clock_skew: dur(CLOCK_SKEW, config.clock_skew, config::default_duration("clock_skew")),
        max_token_ttl: dur(MAX_TOKEN_TTL, config.max_token_ttl, config::default_duration("max_token_ttl")),
        leeway: dur(LEEWAY, config.leeway, config::default_duration("leeway")),
        jwks_max_age: dur(JWKS_MAX_AGE, config.jwks_max_age, config::default_duration("jwks_max_age")),
    }
}

/// Where a timing setting's value in force comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InForce {
    /// Pinned by the configuration (file or environment).
    Configuration,
    /// Stored in the database by the dashboard or `PUT /api/v1/schedule`.
    Stored,
    Default,
}

/// The timing settings as they are in force: `(setting, value, where it comes from)`, given
/// the stored settings (`None`: no database yet, so nothing stored).
pub fn in_force(config: &Config, stored: Option<&HashMap<String, String>>) -> Vec<(&'static str, String, InForce)> {
    let empty = HashMap::new();
    let stored = stored.unwrap_or(&empty);
    let policy = effective(config, stored, None);
    let source = |pinned: bool, key: &str| {
        if pinned {
            InForce::Configuration
        } else if stored.contains_key(key) {
            InForce::Stored
        } else {
            InForce::Default
        }
    };
    let d = |v: Duration| format_duration(v);
    vec![
        ("rotation_schedule", policy.schedule.as_str().to_owned(), source(config.rotation_schedule.is_some(), CRON)),
        ("publish_lead", d(policy.publish_lead), source(config.publish_lead.is_some(), PUBLISH_LEAD)),
        ("clock_skew", d(policy.clock_skew), source(config.clock_skew.is_some(), CLOCK_SKEW)),
        ("max_token_ttl", d(policy.max_token_ttl), source(config.max_token_ttl.is_some(), MAX_TOKEN_TTL)),
        ("leeway", d(policy.leeway), source(config.leeway.is_some(), LEEWAY)),
        ("jwks_max_age", d(policy.jwks_max_age), source(config.jwks_max_age.is_some(), JWKS_MAX_AGE)),
    ]
}

/// The settings stored in the database `config` names, without creating anything: `None`
/// when there is no database yet.
pub async fn stored_settings(config: &Config) -> Result<Option<HashMap<String, String>>> {
    let location = super::database_location(config)?;
    if let store::Location::File(path) = &location {
        if !path.exists() {
            return Ok(None);
        }
    }
    let db = store::Store::open_at(&location)?;
    Ok(Some(db.read(|c| Box::pin(store::settings::all(c))).await?))
}

pub fn default_schedule() -> Schedule {
    // A constant the schedule tests parse; failing here is a programming error.
    Schedule::parse(DEFAULT_SCHEDULE).unwrap_or_else(|e| panic!("default schedule: {e}"))
}

/// Which policy values the configuration pins (read-only through the API).
pub fn pinned(config: &Config) -> Vec<&'static str> {
    let p = config;
    [
        (CRON, p.rotation_schedule.is_some()),
        (PUBLISH_LEAD, p.publish_lead.is_some()),
        (CLOCK_SKEW, p.clock_skew.is_some()),
        (MAX_TOKEN_TTL, p.max_token_ttl.is_some()),
        (LEEWAY, p.leeway.is_some()),
        (JWKS_MAX_AGE, p.jwks_max_age.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, pinned)| pinned.then_some(n))
    .collect()
}

/// Hard rules a policy must satisfy; each violation is a sentence naming the values.
pub fn problems(p: &Policy) -> Vec<String> {
    let mut out: Vec<String> =
        lifecycle::lead_problem(p.publish_lead, p.jwks_max_age, p.clock_skew).into_iter().collect();
    if p.max_token_ttl.is_zero() {
        out.push("max_token_ttl must be longer than 0s".into());
    }
    out
}

/// Things worth saying that do not make a policy invalid.
pub fn warnings(p: &Policy, now: Instant) -> Vec<String> {
    lifecycle::pace_warning(p.schedule.shortest_interval(now), p.publish_lead).into_iter().collect()
}

/// The policy as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyView {
    pub cron: String,
    pub publish_lead: String,
    pub clock_skew: String,
    pub max_token_ttl: String,
    pub leeway: String,
    pub jwks_max_age: String,
    /// Values the configuration pins: read-only here.
    pub pinned: Vec<&'static str>,
    /// The next five fire times (RFC 3339, UTC).
    pub next_fires: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn view(config: &Config, p: &Policy, now: Instant) -> PolicyView {
    PolicyView {
        cron: p.schedule.as_str().to_owned(),
        publish_lead: format_duration(p.publish_lead),
        clock_skew: format_duration(p.clock_skew),
        max_token_ttl: format_duration(p.max_token_ttl),
        leeway: format_duration(p.leeway),
        jwks_max_age: format_duration(p.jwks_max_age),
        pinned: pinned(config),
        next_fires: p.schedule.preview(now, 5).into_iter().map(clock::rfc3339).collect(),
        warnings: warnings(p, now),
    }
}

/// Normalized (name, value) pairs to store.
pub type StoredValues = Vec<(&'static str, String)>;

/// A requested change: any subset of the editable values, as text.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    pub cron: Option<String>,
    pub publish_lead: Option<String>,
    pub clock_skew: Option<String>,
    pub max_token_ttl: Option<String>,
    pub leeway: Option<String>,
    pub jwks_max_age: Option<String>,
}

impl PolicyChange {
    /// The (name, value) pairs present.
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        [
            (CRON, &self.cron),
            (PUBLISH_LEAD, &self.publish_lead),
            (CLOCK_SKEW, &self.clock_skew),
            (MAX_TOKEN_TTL, &self.max_token_ttl),
            (LEEWAY, &self.leeway),
            (JWKS_MAX_AGE, &self.jwks_max_age),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.as_deref().map(|v| (n, v.trim())))
        .collect()
    }

    /// Applies the change to `current`, checking each value and then the whole. Returns the
    /// new policy and the normalized values to store, or every problem found.
    pub fn apply(&self, config: &Config, current: &Policy) -> Result<(Policy, StoredValues), Vec<String>> {
        let pinned = pinned(config);
        let mut next = current.clone();
        let mut store = Vec::new();
        let mut errors = Vec::new();
        if self.entries().is_empty() {
            errors.push(
                "nothing to change: give at least one of cron, publish_lead, clock_skew, max_token_ttl, leeway".into(),
            );
        }
        for (name, value) in self.entries() {
            if pinned.contains(&name) {
                errors.push(format!("{name} is pinned by the configuration and read-only here"));
                continue;
            }
            if name == CRON {
                match Schedule::parse(value) {
                    Ok(s) => {
                        store.push((name, s.as_str().to_owned()));
                        next.schedule = s;
                    }
                    Err(e) => errors.push(format!("cron: {e}")),
                }
                continue;
            }
            match parse_duration(value) {
                Ok(d) => {
                    store.push((name, format_duration(d)));
                    match name {
                        PUBLISH_LEAD => next.publish_lead = d,
                        CLOCK_SKEW => next.clock_skew = d,
                        MAX_TOKEN_TTL => next.max_token_ttl = d,
                        JWKS_MAX_AGE => next.jwks_max_age = d,
                        _ => next.leeway = d,
                    }
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        if errors.is_empty() {
            errors.extend(problems(&next));
        }
        if errors.is_empty() {
            Ok((next, store))
        } else {
            Err(errors)
        }
    }
}

impl Keyturn {
    /// The policy as the API shows it.
    pub fn policy_view(&self) -> PolicyView {
        view(&self.config, &self.policy(), self.clock.now())
    }

    /// Changes stored policy values; nothing changes unless every value is valid.
    pub async fn update_policy(&self, change: &PolicyChange, actor: &Actor) -> Result<PolicyView> {
        let now = self.clock.now();
        let (_, values) = change.apply(&self.config, &self.policy()).map_err(Error::Invalid)?;
        let by = actor.clone();
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    for (name, value) in &values {
                        store::settings::set(tx, name, value).await?;
                    }
                    let detail: Vec<String> = values.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    audited(tx, now, &by, "policy.update", Some("schedule"), Some(&detail.join(", "))).await
                })
            })
            .await?;
        self.reload().await?;
        Ok(self.policy_view())
    }
}
