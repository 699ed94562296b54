//! The one place that reads configuration.
//!
//! Layers, each overriding the one before: built-in defaults → a TOML file (`--config PATH`,
//! or `keyturn.toml` in the working directory when present) → environment variables named
//! `KEYTURN_<SETTING>`. A secret setting can also be read from a file named by
//! `KEYTURN_<SETTING>_FILE` (or `<setting>_file` in TOML). Unknown settings are reported as
//! warnings naming them; invalid values are errors that name the setting and its source.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::duration::{format_duration, parse_duration};
use crate::keys::{Algorithm, RsaBits};
use crate::schedule::Schedule;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
        }
    }
}

/// One known setting.
struct Setting {
    name: &'static str,
    secret: bool,
    help: &'static str,
}

/// Every setting keyturn knows, in the order `config check` prints them.
const SETTINGS: &[Setting] = &[
    Setting { name: "address", secret: false, help: "IP address to listen on" },
    Setting { name: "port", secret: false, help: "TCP port to listen on" },
    Setting { name: "data_dir", secret: false, help: "directory holding the database and generated secrets" },
    Setting { name: "kek_file", secret: false, help: "key-encryption key file (32 bytes); default <data_dir>/kek" },
    Setting {
        name: "issuer",
        secret: false,
        help: "the `iss` of every token and the discovery issuer; default http://<address>:<port>",
    },
    Setting {
        name: "algorithms",
        secret: false,
        help: "signing algorithms, comma-separated: ES256, ES384, EdDSA, RS256, PS256",
    },
    Setting { name: "rsa_bits", secret: false, help: "RSA key size for RS256/PS256: 2048, 3072 or 4096" },
    Setting { name: "jwks_max_age", secret: false, help: "Cache-Control max-age of the JWKS and discovery documents" },
    Setting {
        name: "rotation_schedule",
        secret: false,
        help: "cron expression for rotation; pins it (otherwise stored and editable)",
    },
    Setting { name: "publish_lead", secret: false, help: "how long a key is published before it signs; pins it" },
    Setting { name: "clock_skew", secret: false, help: "clock skew allowed between keyturn and verifiers; pins it" },
    Setting { name: "max_token_ttl", secret: false, help: "longest lifetime of an issued token; pins it" },
    Setting { name: "leeway", secret: false, help: "how long a retired key outlives its last token's exp; pins it" },
    Setting {
        name: "tls_cert_file",
        secret: false,
        help: "PEM certificate chain for HTTPS (with tls_key_file); unset serves plain HTTP",
    },
    Setting { name: "tls_key_file", secret: false, help: "PEM private key for HTTPS (with tls_cert_file)" },
    Setting { name: "refresh_ttl", secret: false, help: "lifetime of a refresh token (each use issues a new one)" },
    Setting {
        name: "lease_ttl",
        secret: false,
        help:
            "how long the rotator lease lasts unrenewed: a stand-by daemon takes over this long after the rotator stops",
    },
    Setting { name: "log_level", secret: false, help: "off, error, warn, info, debug or trace" },
    Setting { name: "log_format", secret: false, help: "text or json" },
    Setting {
        name: "secret_key",
        secret: true,
        help: "cookie secret (base64, 32 or 64 bytes); default generated into the data dir",
    },
];

/// Environment variables keyturn reads that are not settings of the file.
const ENV_NOT_SETTINGS: &[&str] = &["KEYTURN_CONFIG"];

/// Defaults for the timing policy (DESIGN.md, timing rules).
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
pub const DEFAULT_PUBLISH_LEAD: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(14 * 86_400);

/// Logging verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret value. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Timing values pinned by configuration. `None` means not pinned: the value stored in the
/// database (editable through the API) applies, or its default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pins {
    pub rotation_schedule: Option<Schedule>,
    pub jwks_max_age: Option<Duration>,
    pub publish_lead: Option<Duration>,
    pub clock_skew: Option<Duration>,
    pub max_token_ttl: Option<Duration>,
    pub leeway: Option<Duration>,
}

/// The effective configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub address: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub kek_file: PathBuf,
    pub issuer: String,
    pub algorithms: Vec<Algorithm>,
    pub rsa_bits: RsaBits,
    pub jwks_max_age: Duration,
    pub pins: Pins,
    pub lease_ttl: Duration,
    pub refresh_ttl: Duration,
    /// HTTPS certificate chain and key (PEM files), when TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub secret_key: Option<Secret>,
    /// Where each setting came from, for `config check`.
    pub sources: BTreeMap<&'static str, Source>,
    /// Unknown settings and other things worth a warning.
    pub warnings: Vec<String>,
}

/// Configuration could not be read or is invalid. Each problem names its setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// What the loader reads, passed in so tests need not touch the process environment.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `--config PATH`, when given.
    pub config_path: Option<PathBuf>,
    /// The working directory, where `keyturn.toml` is looked for.
    pub cwd: PathBuf,
    /// The process environment (all of it; only `KEYTURN_*` is read).
    pub env: Vec<(String, String)>,
}

impl Inputs {
    /// The real process inputs.
    pub fn from_process(config_path: Option<PathBuf>) -> Self {
        Inputs {
            config_path,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }
}

/// Loads and validates the configuration from defaults, file and environment.
pub fn load(inputs: &Inputs) -> Result<Config, ConfigError> {
    let mut raw: BTreeMap<&'static str, (String, Source)> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    // Layer 2: the TOML file.
    let file = match &inputs.config_path {
        Some(p) => Some(p.clone()),
        None => Some(inputs.cwd.join("keyturn.toml")).filter(|p| p.is_file()),
    };
    if let Some(path) = &file {
        match std::fs::read_to_string(path) {
            Err(e) => problems.push(format!("cannot read config file {}: {e}", path.display())),
            Ok(text) => match text.parse::<toml::Table>() {
                Err(e) => problems.push(format!("config file {} is not valid TOML: {e}", path.display())),
                Ok(table) => {
                    for (key, value) in table {
                        let src = Source::File(path.clone());
                        let Some((setting, from_file)) = lookup(&key) else {
                            warnings.push(format!("unknown setting '{key}' in {} (ignored)", path.display()));
                            continue;
                        };
                        match toml_value(&value) {
                            Some(v) => set(&mut raw, &mut problems, setting, from_file, v, src),
                            None => problems.push(format!(
                                "{key} in {}: expected a string, number or list of strings",
                                path.display()
                            )),
                        }
                    }
                }
            },
        }
    }

    // Layer 3: the environment.
    let mut env: Vec<_> = inputs.env.iter().filter(|(k, _)| k.starts_with("KEYTURN_")).collect();
    env.sort();
    for (name, value) in env {
        if ENV_NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let key = name["KEYTURN_".len()..].to_ascii_lowercase();
        match lookup(&key) {
            Some((setting, from_file)) => {
                set(&mut raw, &mut problems, setting, from_file, value.clone(), Source::Env(name.clone()))
            }
            None => warnings.push(format!("unknown setting in environment variable {name} (ignored)")),
        }
    }

    let config = build(raw, &mut problems, warnings.clone());
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ConfigError { problems, warnings }),
    }
}

/// Finds a setting by name; `<secret>_file` finds the secret, read from that file.
fn lookup(key: &str) -> Option<(&'static Setting, bool)> {
    if let Some(s) = SETTINGS.iter().find(|s| s.name == key) {
        return Some((s, false));
    }
    let base = key.strip_suffix("_file")?;
    SETTINGS.iter().find(|s| s.name == base && s.secret).map(|s| (s, true))
}

fn set(
    raw: &mut BTreeMap<&'static str, (String, Source)>,
    problems: &mut Vec<String>,
    setting: &'static Setting,
    from_file: bool,
    value: String,
    source: Source,
) {
    if !from_file {
        raw.insert(setting.name, (value, source));
        return;
    }
    match std::fs::read_to_string(&value) {
        // A trailing newline from `echo … > file` is not part of the secret.
        Ok(content) => {
            raw.insert(setting.name, (content.trim_end_matches(['\r', '\n']).to_owned(), source));
        }
        Err(e) => problems.push(format!("{} ({source}): cannot read file {value}: {e}", setting.name)),
    }
}

fn toml_value(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => {
            items.iter().map(|i| i.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().map(|v| v.join(","))
        }
        _ => None,
    }
}

/// Turns raw strings into typed values, collecting every problem instead of stopping at one.
fn build(
    raw: BTreeMap<&'static str, (String, Source)>,
    problems: &mut Vec<String>,
    mut warnings: Vec<String>,
) -> Option<Config> {
    let mut sources = BTreeMap::new();
    for s in SETTINGS {
        sources.insert(s.name, raw.get(s.name).map(|(_, src)| src.clone()).unwrap_or(Source::Default));
    }
    let get = |name: &str| raw.get(name).map(|(v, src)| (v.as_str(), src));
    let mut field = |name: &str, parsed: Result<(), String>| {
        if let Err(e) = parsed {
            let src = raw.get(name).map(|(_, s)| s.to_string()).unwrap_or_else(|| "default".into());
            problems.push(format!("{name} ({src}): {e}"));
        }
    };

    let mut address: IpAddr = IpAddr::from([127, 0, 0, 1]);
    if let Some((v, _)) = get("address") {
        field("address", v.trim().parse().map(|a| address = a).map_err(|_| format!("'{v}' is not an IP address")));
    }
    let mut port: u16 = 8080;
    if let Some((v, _)) = get("port") {
        field("port", v.trim().parse().map(|p| port = p).map_err(|_| format!("'{v}' is not a port number (0–65535)")));
    }
    let data_dir = get("data_dir").map(|(v, _)| PathBuf::from(v)).unwrap_or_else(|| PathBuf::from("./keyturn-data"));
    let kek_file = get("kek_file").map(|(v, _)| PathBuf::from(v)).unwrap_or_else(|| data_dir.join("kek"));

    let scheme = if get("tls_cert_file").is_some() { "https" } else { "http" };
    let mut issuer = format!("{scheme}://{}", socket_text(address, port));
    if let Some((v, _)) = get("issuer") {
        field("issuer", validate_issuer(v).map(|i| issuer = i));
    }
    let mut algorithms = vec![Algorithm::ES256];
    if let Some((v, _)) = get("algorithms") {
        field("algorithms", parse_algorithms(v).map(|a| algorithms = a));
    }
    let mut rsa_bits = RsaBits::B2048;
    if let Some((v, _)) = get("rsa_bits") {
        let parsed =
            v.trim().parse::<u32>().map_err(|_| format!("'{v}' is not a number of bits")).and_then(RsaBits::try_from);
        field("rsa_bits", parsed.map(|b| rsa_bits = b));
    }
    let mut duration = |name: &str| -> Option<Duration> {
        let (v, _) = get(name)?;
        let parsed = parse_duration(v);
        let out = parsed.as_ref().ok().copied();
        field(name, parsed.map(|_| ()));
        out
    };
    let jwks_max_age_pin = duration("jwks_max_age");
    let jwks_max_age = jwks_max_age_pin.unwrap_or(DEFAULT_JWKS_MAX_AGE);
    let lease_ttl = duration("lease_ttl").unwrap_or(DEFAULT_LEASE_TTL);
    let refresh_ttl = duration("refresh_ttl").unwrap_or(DEFAULT_REFRESH_TTL);
    let mut pins = Pins {
        rotation_schedule: None,
        jwks_max_age: jwks_max_age_pin,
        publish_lead: duration("publish_lead"),
        clock_skew: duration("clock_skew"),
        max_token_ttl: duration("max_token_ttl"),
        leeway: duration("leeway"),
    };
    if let Some((v, _)) = get("rotation_schedule") {
        field("rotation_schedule", Schedule::parse(v).map(|s| pins.rotation_schedule = Some(s)));
    }
    let tls = match (get("tls_cert_file"), get("tls_key_file")) {
        (Some((c, _)), Some((k, _))) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => {
            field(
                "tls_cert_file",
                Err("tls_cert_file and tls_key_file go together: set both for HTTPS, or neither".into()),
            );
            None
        }
    };
    for (name, path) in tls.iter().flat_map(|(c, k)| [("tls_cert_file", c), ("tls_key_file", k)]) {
        if !path.is_file() {
            field(name, Err(format!("{} is not a readable file", path.display())));
        }
    }
    let mut log_level = LogLevel::Info;
    if let Some((v, _)) = get("log_level") {
        let parsed = match v.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(LogLevel::Off),
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!("'{v}' is not a log level: use off, error, warn, info, debug or trace")),
        };
        field("log_level", parsed.map(|l| log_level = l));
    }
    let mut log_format = LogFormat::Text;
    if let Some((v, _)) = get("log_format") {
        let parsed = match v.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("'{v}' is not a log format: use text or json")),
        };
        field("log_format", parsed.map(|f| log_format = f));
    }
    let mut secret_key = None;
    if let Some((v, _)) = get("secret_key") {
        field(
            "secret_key",
            validate_secret_key(v).map(|()| secret_key = Some(Secret(Zeroizing::new(v.trim().to_owned())))),
        );
    }

    // Not an error, but worth knowing: a schedule that fires more often than the lead can
    // only rotate as fast as each pending key's lead allows.
    if let Some(schedule) = &pins.rotation_schedule {
        let shortest = schedule.shortest_interval(crate::clock::from_unix(0));
        if !shortest.is_zero() && shortest < lead_for_warning(&pins) {
            warnings.push(format!(
                "rotation_schedule fires every {} at its most frequent, more often than publish_lead ({}): keys will rotate about every {} instead",
                format_duration(shortest),
                format_duration(lead_for_warning(&pins)),
                format_duration(lead_for_warning(&pins))
            ));
        }
    }
    if lease_ttl < Duration::from_secs(2) {
        problems.push("lease_ttl must be at least 2s: the rotator renews it every second".into());
    }
    // Cross-setting rule (DESIGN.md): a verifier holding a cached JWKS must learn a key before
    // it signs, so the lead must cover the cache lifetime plus the clock skew allowed.
    let lead = pins.publish_lead.unwrap_or(DEFAULT_PUBLISH_LEAD);
    let skew = pins.clock_skew.unwrap_or(DEFAULT_CLOCK_SKEW);
    if lead < jwks_max_age + skew {
        problems.push(format!(
            "publish_lead ({}) must be at least jwks_max_age ({}) plus clock_skew ({}) = {}, or verifiers with a cached JWKS could meet a token signed by a key they have not fetched",
            format_duration(lead),
            format_duration(jwks_max_age),
            format_duration(skew),
            format_duration(jwks_max_age + skew)
        ));
    }

    Some(Config {
        address,
        port,
        data_dir,
        kek_file,
        issuer,
        algorithms,
        rsa_bits,
        jwks_max_age,
        pins,
        lease_ttl,
        refresh_ttl,
        tls,
        log_level,
        log_format,
        secret_key,
        sources,
        warnings,
    })
}

fn lead_for_warning(pins: &Pins) -> Duration {
    pins.publish_lead.unwrap_or(DEFAULT_PUBLISH_LEAD)
}

fn socket_text(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

fn validate_issuer(v: &str) -> Result<String, String> {
    let v = v.trim();
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(|| format!("'{v}' must be an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || v.contains(['?', '#', ' ']) {
        return Err(format!("'{v}' must be a URL with a host and no query or fragment"));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

fn parse_algorithms(v: &str) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let alg: Algorithm = name.parse().map_err(|e: crate::keys::UnknownAlgorithm| e.to_string())?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    if out.is_empty() {
        return Err("at least one algorithm is needed".into());
    }
    Ok(out)
}

fn validate_secret_key(v: &str) -> Result<(), String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v.trim()).map_err(|_| "must be base64".to_owned())?;
    if bytes.len() != 32 && bytes.len() != 64 {
        return Err(format!("must be 32 or 64 bytes, found {}", bytes.len()));
    }
    Ok(())
}

impl Config {
    /// The configuration as TOML-like text with each value's source; secrets redacted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let pinned = |d: Option<Duration>, default: Duration| match d {
            Some(d) => format!("\"{}\"", format_duration(d)),
            None => format!("\"{}\"  # not pinned: stored value applies (default)", format_duration(default)),
        };
        let algorithms: Vec<_> = self.algorithms.iter().map(|a| format!("\"{a}\"")).collect();
        let values: Vec<(&str, String)> = vec![
            ("address", format!("\"{}\"", self.address)),
            ("port", self.port.to_string()),
            ("data_dir", format!("{:?}", self.data_dir.display().to_string())),
            ("kek_file", format!("{:?}", self.kek_file.display().to_string())),
            ("issuer", format!("\"{}\"", self.issuer)),
            ("algorithms", format!("[{}]", algorithms.join(", "))),
            ("rsa_bits", self.rsa_bits.bits().to_string()),
            ("jwks_max_age", pinned(self.pins.jwks_max_age, DEFAULT_JWKS_MAX_AGE)),
            (
                "rotation_schedule",
                match &self.pins.rotation_schedule {
                    Some(s) => format!("\"{}\"", s.as_str()),
                    None => format!(
                        "\"{}\"  # not pinned: stored value applies (default)",
                        crate::schedule::DEFAULT_SCHEDULE
                    ),
                },
            ),
            ("publish_lead", pinned(self.pins.publish_lead, DEFAULT_PUBLISH_LEAD)),
            ("clock_skew", pinned(self.pins.clock_skew, DEFAULT_CLOCK_SKEW)),
            ("max_token_ttl", pinned(self.pins.max_token_ttl, DEFAULT_MAX_TOKEN_TTL)),
            ("leeway", pinned(self.pins.leeway, DEFAULT_LEEWAY)),
            ("lease_ttl", format!("\"{}\"", format_duration(self.lease_ttl))),
            ("refresh_ttl", format!("\"{}\"", format_duration(self.refresh_ttl))),
            (
                "tls_cert_file",
                self.tls
                    .as_ref()
                    .map(|(c, _)| format!("{:?}", c.display().to_string()))
                    .unwrap_or_else(|| "\"\"  # plain HTTP".into()),
            ),
            (
                "tls_key_file",
                self.tls
                    .as_ref()
                    .map(|(_, k)| format!("{:?}", k.display().to_string()))
                    .unwrap_or_else(|| "\"\"".into()),
            ),
            ("log_level", format!("\"{}\"", self.log_level.as_str())),
            ("log_format", format!("\"{}\"", if self.log_format == LogFormat::Json { "json" } else { "text" })),
            (
                "secret_key",
                if self.secret_key.is_some() { "\"<redacted>\"".into() } else { "\"<generated in data_dir>\"".into() },
            ),
        ];
        for (name, value) in values {
            let source = self.sources.get(name).cloned().unwrap_or(Source::Default);
            let _ = writeln!(out, "{name} = {value}  # {source}");
        }
        out
    }

    /// The `host:port` text of the listening address.
    pub fn socket_text(&self) -> String {
        socket_text(self.address, self.port)
    }

    /// The help line of each setting, for `--help` texts and the README.
    pub fn settings_help() -> Vec<(&'static str, String, &'static str)> {
        SETTINGS.iter().map(|s| (s.name, format!("KEYTURN_{}", s.name.to_ascii_uppercase()), s.help)).collect()
    }

    /// Whether `path` is the default key-encryption key location inside the data dir.
    pub fn kek_in_data_dir(&self) -> bool {
        self.kek_file.parent() == Some(Path::new(&self.data_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(env: &[(&str, &str)]) -> Inputs {
        Inputs {
            config_path: None,
            cwd: PathBuf::from("/nonexistent-keyturn-test"),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn defaults() {
        let c = load(&inputs(&[])).expect("defaults are valid");
        assert_eq!(c.address.to_string(), "127.0.0.1");
        assert_eq!(c.port, 8080);
        assert_eq!(c.data_dir, PathBuf::from("./keyturn-data"));
        assert_eq!(c.algorithms, vec![Algorithm::ES256]);
        assert_eq!(c.jwks_max_age, Duration::from_secs(300));
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.kek_file, PathBuf::from("./keyturn-data/kek"));
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "port = 9000\nalgorithms = [\"EdDSA\"]\nissuer = \"https://a.example\"\nbogus = 1\n")
            .expect("write");
        let mut i = inputs(&[("KEYTURN_PORT", "9100"), ("KEYTURN_ALGORITHMS", "ES256,eddsa"), ("KEYTURN_NOPE", "x")]);
        i.config_path = Some(file.clone());
        let c = load(&i).expect("valid");
        assert_eq!(c.port, 9100, "env beats file");
        assert_eq!(c.issuer, "https://a.example", "file beats default");
        assert_eq!(c.algorithms, vec![Algorithm::ES256, Algorithm::EdDSA]);
        assert_eq!(c.sources["port"], Source::Env("KEYTURN_PORT".into()));
        assert_eq!(c.sources["issuer"], Source::File(file));
        assert!(c.warnings.iter().any(|w| w.contains("'bogus'")), "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("KEYTURN_NOPE")), "{:?}", c.warnings);
    }

    #[test]
    fn keyturn_toml_in_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keyturn.toml"), "port = 7000\n").expect("write");
        let mut i = inputs(&[]);
        i.cwd = dir.path().to_path_buf();
        assert_eq!(load(&i).expect("valid").port, 7000);
    }

    #[test]
    fn secret_from_file_and_redacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        use base64::Engine as _;
        let secret = &base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let path = dir.path().join("sk");
        std::fs::write(&path, format!("{secret}\n")).expect("write");
        let c = load(&inputs(&[("KEYTURN_SECRET_KEY_FILE", path.to_str().expect("utf8"))])).expect("valid");
        assert_eq!(c.secret_key.as_ref().map(Secret::expose), Some(secret.as_str()));
        assert!(!c.render().contains(secret));
        assert!(!format!("{c:?}").contains(secret));
    }

    #[test]
    fn every_problem_is_named() {
        let e = load(&inputs(&[
            ("KEYTURN_ALGORITHMS", "ES256,HS256"),
            ("KEYTURN_RSA_BITS", "1024"),
            ("KEYTURN_PORT", "99999"),
            ("KEYTURN_JWKS_MAX_AGE", "300"),
            ("KEYTURN_ROTATION_SCHEDULE", "every tuesday"),
        ]))
        .expect_err("invalid");
        let text = e.to_string();
        for needle in ["unknown algorithm 'HS256'", "1024 bits", "99999", "needs a unit", "rotation_schedule"] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn publish_lead_must_cover_cache_and_skew() {
        let e = load(&inputs(&[("KEYTURN_PUBLISH_LEAD", "5m"), ("KEYTURN_CLOCK_SKEW", "1m")])).expect_err("too short");
        assert!(e.to_string().contains("publish_lead (5m) must be at least"), "{e}");
        assert!(load(&inputs(&[("KEYTURN_PUBLISH_LEAD", "6m"), ("KEYTURN_CLOCK_SKEW", "1m")])).is_ok());
    }

    #[test]
    fn schedule_faster_than_the_lead_is_a_warning() {
        let c = load(&inputs(&[("KEYTURN_ROTATION_SCHEDULE", "*/5 * * * *")])).expect("valid, with a warning");
        assert!(c.warnings.iter().any(|w| w.contains("more often than publish_lead (15m)")), "{:?}", c.warnings);
        let c = load(&inputs(&[("KEYTURN_ROTATION_SCHEDULE", "0 * * * *")])).expect("valid");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn every_setting_is_rendered() {
        let text = load(&inputs(&[])).expect("defaults").render();
        for s in SETTINGS {
            assert!(
                text.contains(&format!("\n{} = ", s.name)) || text.starts_with(&format!("{} = ", s.name)),
                "{} missing from:\n{text}",
                s.name
            );
        }
    }

    #[test]
    fn tls_files_go_together_and_must_exist() {
        let e = load(&inputs(&[("KEYTURN_TLS_CERT_FILE", "/nonexistent/cert.pem")])).expect_err("half");
        assert!(e.to_string().contains("go together"), "{e}");
        let e =
            load(&inputs(&[("KEYTURN_TLS_CERT_FILE", "/nonexistent/c"), ("KEYTURN_TLS_KEY_FILE", "/nonexistent/k")]))
                .expect_err("missing files");
        assert!(e.to_string().contains("not a readable file"), "{e}");
    }

    #[test]
    fn lease_ttl_is_a_setting() {
        let c = load(&inputs(&[("KEYTURN_LEASE_TTL", "3s")])).expect("valid");
        assert_eq!(c.lease_ttl, Duration::from_secs(3));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(load(&inputs(&[("KEYTURN_LEASE_TTL", "1s")])).is_err(), "under 2s is refused");
    }
}
