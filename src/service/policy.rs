//! The timing policy: configured pins over values stored through the API over defaults, and
//! the validation every change passes before it is stored.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::{audited, Actor, Keys};
use crate::clock::{self, Instant};
use crate::config::{self, Config};
use crate::duration::{format_duration, parse_duration};
use crate::error::{Error, Result};
use crate::keys::lifecycle::{self, Policy};
use crate::schedule::{Schedule, DEFAULT_SCHEDULE};
use crate::store::{self};

/// The rotation schedule's one name: in the configuration, the API, the dashboard and the
/// settings table.
pub const ROTATION_SCHEDULE: &str = "rotation_schedule";

/// The schedule's other name (the API's before): accepted wherever the name is, and answered
/// with a warning that it is an alias.
pub const ROTATION_SCHEDULE_ALIAS: &str = "cron";

/// One timing setting: its name (the same in the configuration, the API, the dashboard and
/// the settings table), the configuration's pin, and its place in the [`Policy`].
pub struct Timing {
    pub name: &'static str,
    /// What it is, in a few words (the schedule page's label).
    pub label: &'static str,
    pub pinned: fn(&Config) -> Option<Duration>,
    pub get: fn(&Policy) -> Duration,
    pub set: fn(&mut Policy, Duration),
}

/// The timing settings, declared once: the policy, `config check`, the API and the schedule
/// page all read this table.
pub const TIMINGS: [Timing; 5] = [
    Timing {
        name: "publish_lead",
        label: "Publish lead (a key is in the JWKS this long before it signs)",
        pinned: |c| c.publish_lead,
        get: |p| p.publish_lead,
        set: |p, d| p.publish_lead = d,
    },
    Timing {
        name: "clock_skew",
        label: "Clock skew allowed",
        pinned: |c| c.clock_skew,
        get: |p| p.clock_skew,
        set: |p, d| p.clock_skew = d,
    },
    Timing {
        name: "max_token_ttl",
        label: "Longest token lifetime",
        pinned: |c| c.max_token_ttl,
        get: |p| p.max_token_ttl,
        set: |p, d| p.max_token_ttl = d,
    },
    Timing {
        name: "leeway",
        label: "Leeway after the last token expires",
        pinned: |c| c.leeway,
        get: |p| p.leeway,
        set: |p, d| p.leeway = d,
    },
    Timing {
        name: "jwks_max_age",
        label: "JWKS max-age (how long verifiers may cache the key set)",
        pinned: |c| c.jwks_max_age,
        get: |p| p.jwks_max_age,
        set: |p, d| p.jwks_max_age = d,
    },
];

/// Every editable name, the schedule first: for messages that list them.
fn editable() -> String {
    let mut names = vec![format!("{ROTATION_SCHEDULE} (or {ROTATION_SCHEDULE_ALIAS})")];
    names.extend(TIMINGS.iter().map(|t| t.name.to_owned()));
    names.join(", ")
}

/// Builds the policy in force from the configuration and the stored settings. A stored
/// value that no longer parses is ignored with a warning (it was validated when stored).
/// The parsed schedule of `previous` is kept when its expression is unchanged, so its
/// memoized interval statistics survive snapshot rebuilds.
pub fn effective(config: &Config, stored: &HashMap<String, String>, previous: Option<&Policy>) -> Policy {
    let schedule = config.rotation_schedule.clone().unwrap_or_else(|| {
        let text = stored.get(ROTATION_SCHEDULE).map(String::as_str).unwrap_or(DEFAULT_SCHEDULE);
        if let Some(prev) = previous.filter(|p| p.schedule.as_str() == text.trim()) {
            return prev.schedule.clone();
        }
        Schedule::parse(text)
            .map_err(|e| tracing::warn!("ignoring stored schedule: {e}"))
            .unwrap_or_else(|_| default_schedule())
    });
    let mut policy = Policy {
        schedule,
        publish_lead: Duration::ZERO,
        clock_skew: Duration::ZERO,
        max_token_ttl: Duration::ZERO,
        leeway: Duration::ZERO,
        jwks_max_age: Duration::ZERO,
    };
    for t in &TIMINGS {
        let stored = || {
            let v = stored.get(t.name)?;
            parse_duration(v).map_err(|e| tracing::warn!(setting = t.name, "ignoring stored value: {e}")).ok()
        };
        (t.set)(&mut policy, (t.pinned)(config).or_else(stored).unwrap_or_else(|| config::default_duration(t.name)));
    }
    policy
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
    let schedule = policy.schedule.as_str().to_owned();
    let mut out = vec![(ROTATION_SCHEDULE, schedule, source(config.rotation_schedule.is_some(), ROTATION_SCHEDULE))];
    for t in &TIMINGS {
        out.push((t.name, format_duration((t.get)(&policy)), source((t.pinned)(config).is_some(), t.name)));
    }
    out
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
    let schedule = config.rotation_schedule.is_some().then_some(ROTATION_SCHEDULE);
    schedule.into_iter().chain(TIMINGS.iter().filter(|t| (t.pinned)(config).is_some()).map(|t| t.name)).collect()
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

/// The policy as the API shows it: `rotation_schedule` and each timing setting by name.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyView {
    pub rotation_schedule: String,
    /// Each of [`TIMINGS`], by name, as text (`"15m"`).
    #[serde(flatten)]
    pub timings: BTreeMap<&'static str, String>,
    /// Values the configuration pins: read-only here.
    pub pinned: Vec<&'static str>,
    /// The next five fire times (RFC 3339, UTC).
    pub next_fires: Vec<String>,
    pub warnings: Vec<String>,
}

impl PolicyView {
    /// A timing setting's value, by name.
    pub fn timing(&self, name: &str) -> &str {
        self.timings.get(name).map_or("", String::as_str)
    }
}

pub fn view(config: &Config, p: &Policy, now: Instant) -> PolicyView {
    PolicyView {
        rotation_schedule: p.schedule.as_str().to_owned(),
        timings: TIMINGS.iter().map(|t| (t.name, format_duration((t.get)(p)))).collect(),
        pinned: pinned(config),
        next_fires: p.schedule.preview(now, 5).into_iter().map(clock::rfc3339).collect(),
        warnings: warnings(p, now),
    }
}

/// Normalized (name, value) pairs to store.
pub type StoredValues = Vec<(&'static str, String)>;

/// A requested change: any of the editable values, by name, as text (the body of `PUT
/// /api/v1/schedule`, the schedule form).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct PolicyChange(BTreeMap<String, String>);

impl<const N: usize> From<[(&str, &str); N]> for PolicyChange {
    fn from(pairs: [(&str, &str); N]) -> Self {
        PolicyChange(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }
}

impl PolicyChange {
    /// Sets `name` to `value` in the change.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_owned(), value.to_owned());
    }

    /// Whether the change names nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether it names the schedule by its alias (answered with a warning).
    pub fn uses_alias(&self) -> bool {
        self.0.contains_key(ROTATION_SCHEDULE_ALIAS)
    }

    /// Applies the change to `current`, checking each value and then the whole. Returns the
    /// new policy and the normalized values to store, or every problem found.
    pub fn apply(&self, config: &Config, current: &Policy) -> Result<(Policy, StoredValues), Vec<String>> {
        let pinned = pinned(config);
        let mut next = current.clone();
        let mut store = Vec::new();
        let mut errors = Vec::new();
        if self.0.is_empty() {
            errors.push(format!("nothing to change: give at least one of {}", editable()));
        }
        if self.0.contains_key(ROTATION_SCHEDULE) && self.uses_alias() {
            errors.push(format!("give {ROTATION_SCHEDULE} or its alias {ROTATION_SCHEDULE_ALIAS}, not both"));
        }
        for (given, value) in &self.0 {
            let value = value.trim();
            let name = if given == ROTATION_SCHEDULE_ALIAS { ROTATION_SCHEDULE } else { given.as_str() };
            if name == ROTATION_SCHEDULE {
                if pinned.contains(&ROTATION_SCHEDULE) {
                    errors.push(format!("{given} is pinned by the configuration and read-only here"));
                    continue;
                }
                match Schedule::parse(value) {
                    Ok(s) => {
                        store.push((ROTATION_SCHEDULE, s.as_str().to_owned()));
                        next.schedule = s;
                    }
                    Err(e) => errors.push(format!("{given}: {e}")),
                }
                continue;
            }
            let Some(timing) = TIMINGS.iter().find(|t| t.name == name) else {
                errors.push(format!("unknown setting {given:?}: the editable ones are {}", editable()));
                continue;
            };
            if pinned.contains(&timing.name) {
                errors.push(format!("{name} is pinned by the configuration and read-only here"));
                continue;
            }
            match parse_duration(value) {
                Ok(d) => {
                    store.push((timing.name, format_duration(d)));
                    (timing.set)(&mut next, d);
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

impl Keys {
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
        let mut view = self.policy_view();
        if change.uses_alias() {
            view.warnings.push(format!("{ROTATION_SCHEDULE_ALIAS} is an alias of {ROTATION_SCHEDULE}"));
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Inputs;

    fn config(env: &[(&str, &str)]) -> Config {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        config::load(&Inputs { config_path: None, cwd: std::env::temp_dir(), env }).expect("configuration")
    }

    fn policy(config: &Config) -> Policy {
        effective(config, &HashMap::new(), None)
    }

    #[test]
    fn every_timing_setting_is_read_stored_and_shown_by_its_one_name() {
        let c = config(&[]);
        let stored: HashMap<String, String> = TIMINGS.iter().map(|t| (t.name.to_owned(), "7m".to_owned())).collect();
        let p = effective(&c, &stored, None);
        for t in &TIMINGS {
            assert_eq!((t.get)(&p), Duration::from_secs(420), "{} is read from the settings table", t.name);
        }
        let shown = view(&c, &p, clock::from_unix(0));
        assert_eq!(shown.timings.len(), TIMINGS.len());
        assert!(TIMINGS.iter().all(|t| shown.timing(t.name) == "7m"));
        let names: Vec<_> = in_force(&c, Some(&stored)).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names[0], ROTATION_SCHEDULE);
        assert!(TIMINGS.iter().all(|t| names.contains(&t.name)), "config check shows every one: {names:?}");
    }

    #[test]
    fn a_change_is_checked_whole_and_names_each_problem() {
        let c = config(&[("KEYTURN_LEEWAY", "2m")]);
        let p = policy(&c);
        let refused = |pairs: &[(&str, &str)]| {
            let mut change = PolicyChange::default();
            for (n, v) in pairs {
                change.set(n, v);
            }
            change.apply(&c, &p).expect_err("refused").join("; ")
        };
        let empty = PolicyChange::default().apply(&c, &p).expect_err("nothing to change").join("; ");
        assert!(TIMINGS.iter().all(|t| empty.contains(t.name)), "the message lists every setting: {empty}");
        assert!(refused(&[("leeway", "5m")]).contains("pinned"));
        assert!(refused(&[("crontab", "x")]).contains("unknown setting \"crontab\""));
        assert!(refused(&[("cron", "0 1 * * *"), ("rotation_schedule", "0 2 * * *")]).contains("not both"));
        assert!(refused(&[("publish_lead", "1m")]).contains("must be at least"));
        assert!(refused(&[("max_token_ttl", "0s")]).contains("longer than 0s"));
    }

    #[test]
    fn the_alias_changes_the_schedule_and_is_stored_under_the_one_name() {
        let c = config(&[]);
        let change = PolicyChange::from([("cron", " 0 3 * * * "), ("publish_lead", "20m")]);
        assert!(change.uses_alias());
        let (next, stored) = change.apply(&c, &policy(&c)).expect("valid");
        assert_eq!(next.schedule.as_str(), "0 3 * * *");
        assert_eq!(next.publish_lead, Duration::from_secs(1200));
        assert!(stored.contains(&(ROTATION_SCHEDULE, "0 3 * * *".to_owned())), "{stored:?}");
        assert!(stored.contains(&("publish_lead", "20m".to_owned())), "{stored:?}");
    }
}
