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
use crate::keys::lifecycle;
use crate::keys::{Algorithm, Custody, RsaBits};
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

/// One known setting, as [`settings!`] declares it.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    /// A secret: also read from a file (`<name>_file`, `KEYTURN_<NAME>_FILE`), and redacted
    /// wherever it is shown.
    pub secret: bool,
    /// The default, as documentation says it.
    pub default: &'static str,
    /// What it means, as the README's settings table says it.
    pub help: &'static str,
}

impl Setting {
    /// The environment variable that sets it.
    pub fn env(&self) -> String {
        format!("KEYTURN_{}", self.name.to_ascii_uppercase())
    }
}

/// The raw text of each given setting, with where it came from.
type Raw = BTreeMap<&'static str, (String, Source)>;

/// A setting's value when it is not given: `doc` parses the documented default with the
/// setting's own parser (so the two cannot differ); `(expr)` computes it, from the settings
/// declared before it.
macro_rules! setting_default {
    (doc, $name:ident, $parse:ident, $doc:expr) => {
        $parse($doc).unwrap_or_else(|e| panic!("the default of {} does not parse: {e}", stringify!($name)))
    };
    (($value:expr), $name:ident, $parse:ident, $doc:expr) => {
        $value
    };
}

/// Declares every setting once: its field in [`Config`], how its text is parsed and checked,
/// its default (and how documentation says it), how `config check` shows it, whether it is a
/// secret, and its help. From this one table come the parser of file and environment, the
/// `_FILE` secrets, the unknown-setting warnings, `config check`'s rendering with sources and
/// redaction, and the README check (`tests/it/docs.rs`).
macro_rules! settings {
    ($(
        $name:ident: $ty:ty {
            parse: $parse:expr,
            default: $default:tt,
            documented: $doc:expr,
            show: $show:expr,
            $(secret: $secret:literal,)?
            help: $help:literal $(,)?
        }
    )+) => {
        /// Every setting keyturn knows, in the order `config check` prints them.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            name: stringify!($name),
            secret: false $(|| $secret)?,
            default: $doc,
            help: $help,
        }),+];

        /// The effective configuration: one field per setting (see [`SETTINGS`]).
        #[derive(Clone, Debug)]
        pub struct Config {
            $( #[doc = $help] pub $name: $ty, )+
            /// Where each setting came from, for `config check`.
            pub sources: BTreeMap<&'static str, Source>,
            /// Unknown settings and other things worth a warning.
            pub warnings: Vec<String>,
        }

        /// Parses every given setting and fills in the defaults, in declaration order,
        /// collecting every problem instead of stopping at the first.
        fn parse_settings(raw: &Raw, problems: &mut Vec<String>) -> Config {
            $(
                let $name: $ty = {
                    let parse: fn(&str) -> Result<$ty, String> = $parse;
                    match raw.get(stringify!($name)) {
                        Some((text, source)) => parse(text).unwrap_or_else(|e| {
                            problems.push(format!("{} ({source}): {e}", stringify!($name)));
                            setting_default!($default, $name, parse, $doc)
                        }),
                        None => setting_default!($default, $name, parse, $doc),
                    }
                };
            )+
            let sources = SETTINGS
                .iter()
                .map(|s| (s.name, raw.get(s.name).map(|(_, src)| src.clone()).unwrap_or(Source::Default)))
                .collect();
            Config { $($name,)+ sources, warnings: Vec::new() }
        }

        impl Config {
            /// Each setting's effective value as `config check` shows it, secrets redacted.
            fn shown(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($name), {
                    let show: fn(&Config) -> String = $show;
                    show(self)
                })),+]
            }
        }
    };
}

settings! {
    address: IpAddr {
        parse: |v| v.trim().parse().map_err(|_| format!("'{v}' is not an IP address")),
        default: doc,
        documented: "127.0.0.1",
        show: |c| quoted(c.address),
        help: "IP address to listen on",
    }
    port: u16 {
        parse: |v| v.trim().parse().map_err(|_| format!("'{v}' is not a port number (0–65535)")),
        default: doc,
        documented: "8080",
        show: |c| c.port.to_string(),
        help: "TCP port (0 picks a free one)",
    }
    data_dir: PathBuf {
        parse: |v| Ok(PathBuf::from(v)),
        default: doc,
        documented: "./keyturn-data",
        show: |c| path_text(&c.data_dir),
        help: "database, cookie secret, default KEK location",
    }
    database_url: Option<DatabaseUrl> {
        parse: |v| DatabaseUrl::parse(v.trim()).map(Some),
        default: (None),
        documented: "unset",
        show: |c| c.database_url.as_ref().map_or_else(|| quoted("<SQLite in data_dir>"), |t| quoted(&t.shown)),
        secret: true,
        help: "`postgres://…` or `postgresql://…`: keep all state in PostgreSQL, shared by a cluster of nodes (see Running a cluster); unset: SQLite in the data dir",
    }
    kek_file: PathBuf {
        parse: |v| Ok(PathBuf::from(v)),
        default: (data_dir.join("kek")),
        documented: "<data_dir>/kek",
        show: |c| path_text(&c.kek_file),
        help: "key-encryption key: 32 bytes, raw or base64; created 0600 on first start",
    }
    key_custody: Custody {
        parse: |v| v.trim().parse::<Custody>(),
        default: doc,
        documented: "software",
        show: |c| quoted(c.key_custody.as_str()),
        help: "where new signing keys are made and kept: `software` (generated here, sealed under the key-encryption key in the database) or `pkcs11` (generated inside a PKCS#11 token and never leaving it; set `pkcs11_module`, `pkcs11_token_label` and `pkcs11_pin_file`)",
    }
    pkcs11_module: Option<PathBuf> {
        parse: |v| readable_file(v).map(Some),
        default: (None),
        documented: "unset",
        show: |c| c.pkcs11_module.as_deref().map(path_text).unwrap_or_else(|| "\"\"".into()),
        help: "the PKCS#11 module (a shared library, e.g. SoftHSM2's `/usr/lib/softhsm/libsofthsm2.so`), with `key_custody = \"pkcs11\"`",
    }
    pkcs11_token_label: Option<String> {
        parse: |v| Ok(Some(v.trim().to_owned()).filter(|l| !l.is_empty())),
        default: (None),
        documented: "unset",
        show: |c| quoted(c.pkcs11_token_label.as_deref().unwrap_or("")),
        help: "the label of the token that holds the keys, with `key_custody = \"pkcs11\"`",
    }
    pkcs11_pin_file: Option<PathBuf> {
        parse: |v| readable_file(v).map(Some),
        default: (None),
        documented: "unset",
        show: |c| c.pkcs11_pin_file.as_deref().map(path_text).unwrap_or_else(|| "\"\"".into()),
        help: "a file whose first line is the token's user PIN, with `key_custody = \"pkcs11\"` (the PIN itself is never shown or logged)",
    }
    tls_cert_file: Option<PathBuf> {
        parse: |v| readable_file(v).map(Some),
        default: (None),
        documented: "unset",
        show: |c| c.tls_cert_file.as_deref().map(path_text).unwrap_or_else(|| "\"\"  # plain HTTP".into()),
        help: "PEM certificate chain, with `tls_key_file`: serve HTTPS (then the default issuer is `https://…` and the session cookie is `__Host-` prefixed and Secure)",
    }
    tls_key_file: Option<PathBuf> {
        parse: |v| readable_file(v).map(Some),
        default: (None),
        documented: "unset",
        show: |c| c.tls_key_file.as_deref().map(path_text).unwrap_or_else(|| "\"\"".into()),
        help: "PEM private key, with `tls_cert_file`",
    }
    trusted_ca_file: Option<PathBuf> {
        parse: |v| readable_file(v).map(Some),
        default: (None),
        documented: "unset",
        show: |c| c.trusted_ca_file.as_deref().map(path_text).unwrap_or_else(|| "\"\"  # the public CAs only".into()),
        help: "PEM certificates of private certificate authorities to trust, besides the public ones, when fetching the key sets and discovery documents of clients (`jwks_uri`) and trusted issuers: a self-managed Kubernetes cluster's API server, an internal CA",
    }
    trusted_proxies: Vec<IpAddr> {
        parse: parse_addresses,
        default: (Vec::new()),
        documented: "unset",
        show: |c| format!("[{}]", c.trusted_proxies.iter().map(quoted).collect::<Vec<_>>().join(", ")),
        help: "comma-separated IP addresses of reverse proxies whose `X-Forwarded-For` (or `X-Real-IP`) names the client; every other request is known by its peer address (audit records, sign-in limits)",
    }
    max_connections: usize {
        parse: |v| positive_count(v, 1_000_000),
        default: doc,
        documented: "4096",
        show: |c| c.max_connections.to_string(),
        help: "open connections at most; a connection over it is closed as it arrives (keep it below the process's file-descriptor limit, `LimitNOFILE` in deploy/keyturn.service)",
    }
    max_connections_per_address: usize {
        parse: |v| positive_count(v, 1_000_000),
        default: doc,
        documented: "256",
        show: |c| c.max_connections_per_address.to_string(),
        help: "open connections at most from one client address (the peer; `trusted_proxies` are exempt), so one client cannot take them all",
    }
    client_header_timeout: Duration {
        parse: timeout,
        default: doc,
        documented: "10s",
        show: |c| quoted(format_duration(c.client_header_timeout)),
        help: "time for a request's headers to arrive, from the connection's start or its previous answer: also how long a connection with no request (HTTP/1 keep-alive, or HTTP/2 answering only PINGs) stays open",
    }
    client_body_timeout: Duration {
        parse: timeout,
        default: doc,
        documented: "10s",
        show: |c| quoted(format_duration(c.client_body_timeout)),
        help: "time for a request's body to arrive once its headers have; then 408 and the connection closes",
    }
    issuer: String {
        parse: validate_issuer,
        default: (format!("{}://{}", if tls_cert_file.is_some() { "https" } else { "http" }, socket_text(address, port))),
        documented: "http://<address>:<port>",
        show: |c| quoted(&c.issuer),
        help: "`iss` of tokens and issuer of the discovery documents",
    }
    algorithms: Vec<Algorithm> {
        parse: parse_algorithms,
        default: doc,
        documented: "ES256",
        show: |c| format!("[{}]", c.algorithms.iter().map(quoted).collect::<Vec<_>>().join(", ")),
        help: "comma-separated: `ES256`, `ES384`, `EdDSA`, `RS256`, `PS256`",
    }
    rsa_bits: RsaBits {
        parse: |v| v.trim().parse::<u32>().map_err(|_| format!("'{v}' is not a number of bits")).and_then(RsaBits::try_from),
        default: doc,
        documented: "2048",
        show: |c| c.rsa_bits.bits().to_string(),
        help: "RSA key size: 2048, 3072 or 4096",
    }
    jwks_max_age: Option<Duration> {
        parse: |v| parse_duration(v).map(Some),
        default: (None),
        documented: "300s",
        show: |c| pinned_duration(c.jwks_max_age, "jwks_max_age"),
        help: "`Cache-Control: max-age` of the JWKS and discovery; setting it pins it",
    }
    jwks_x5c: bool {
        parse: parse_bool,
        default: doc,
        documented: "true",
        show: |c| c.jwks_x5c.to_string(),
        help: "publish each key's self-signed certificate (`x5c`, `x5t#S256`) in the JWKS; `false` drops them and keeps the JWKS small (about 0.2 KB a key instead of 0.7–2 KB) for gateways that cache only small documents",
    }
    rotation_schedule: Option<Schedule> {
        parse: |v| Schedule::parse(v).map(Some),
        default: (None),
        documented: crate::schedule::DEFAULT_SCHEDULE,
        show: |c| match &c.rotation_schedule {
            Some(s) => quoted(s.as_str()),
            None => not_pinned(crate::schedule::DEFAULT_SCHEDULE),
        },
        help: "cron (UTC): five fields, `minute hour day-of-month month day-of-week` (`MON`–`SUN` or `0`–`7`), or six with **seconds first** (for demos that rotate every few seconds), or `@weekly`, `@daily`, …; an invalid field is refused by name; setting it pins it; `cron` (`KEYTURN_CRON`) is accepted as its alias, with a warning",
    }
    publish_lead: Option<Duration> {
        parse: |v| parse_duration(v).map(Some),
        default: (None),
        documented: "15m",
        show: |c| pinned_duration(c.publish_lead, "publish_lead"),
        help: "how long a key is published before it signs; must be ≥ `jwks_max_age` + `clock_skew`",
    }
    clock_skew: Option<Duration> {
        parse: |v| parse_duration(v).map(Some),
        default: (None),
        documented: "60s",
        show: |c| pinned_duration(c.clock_skew, "clock_skew"),
        help: "clock skew allowed between keyturn and verifiers",
    }
    max_token_ttl: Option<Duration> {
        parse: |v| parse_duration(v).map(Some),
        default: (None),
        documented: "1h",
        show: |c| pinned_duration(c.max_token_ttl, "max_token_ttl"),
        help: "longest token lifetime",
    }
    leeway: Option<Duration> {
        parse: |v| parse_duration(v).map(Some),
        default: (None),
        documented: "60s",
        show: |c| pinned_duration(c.leeway, "leeway"),
        help: "how long a retired key outlives its last token",
    }
    refresh_ttl: Duration {
        parse: parse_duration,
        default: doc,
        documented: "14d",
        show: |c| quoted(format_duration(c.refresh_ttl)),
        help: "lifetime of a refresh token (each use issues a new one): a session not refreshed for this long ends (its idle end)",
    }
    session_lifetime: Duration {
        parse: |v| parse_duration(v).and_then(|d| {
            if d.is_zero() {
                Err("must be longer than 0s".into())
            } else {
                Ok(d)
            }
        }),
        default: doc,
        documented: "30d",
        show: |c| quoted(format_duration(c.session_lifetime)),
        help: "absolute lifetime of a session (the tokens minted with one refresh token and its successors): after it the refresh token stops, however recently it was used; the idle end is `refresh_ttl` without a refresh",
    }
    forward_auth_cookie: Option<String> {
        parse: |v| {
            let v = v.trim();
            if v.is_empty() {
                Ok(None)
            } else if v.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)) {
                Ok(Some(v.to_owned()))
            } else {
                Err(format!("'{v}' is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"))
            }
        },
        default: (None),
        documented: "unset",
        show: |c| quoted(c.forward_auth_cookie.as_deref().unwrap_or("")),
        help: "a cookie `/auth/verify` reads the access token from when the request has no `Authorization` header (for a gateway in front of an app that keeps its tokens in cookies, e.g. `__Host-access`); unset: the header only",
    }
    refresh_grace: Duration {
        parse: parse_duration,
        default: doc,
        documented: "10s",
        show: |c| quoted(format_duration(c.refresh_grace)),
        help: "how long after a refresh token was spent presenting it again (a retry whose answer was lost) gets the same new refresh token instead of revoking the family as reuse; `0s` turns it off",
    }
    lease_ttl: Duration {
        parse: |v| parse_duration(v).and_then(|d| {
            if d < Duration::from_secs(2) {
                Err("must be at least 2s: the rotator renews it every second".into())
            } else {
                Ok(d)
            }
        }),
        default: doc,
        documented: "15s",
        show: |c| quoted(format_duration(c.lease_ttl)),
        help: "how long the rotator lease lasts unrenewed; a stand-by daemon takes over rotation this long after the rotator stops",
    }
    database_timeout: Duration {
        parse: timeout,
        default: doc,
        documented: "2s",
        show: |c| quoted(format_duration(c.database_timeout)),
        help: "how long one PostgreSQL call may take, connecting included (also the server's `statement_timeout` and `lock_timeout`): past it the request answers 503 with `Retry-After`; a stalled or unreachable database never holds a request longer (the migrations and `db copy` are not bound by it)",
    }
    max_revocation_lag: Duration {
        parse: |v| parse_duration(v).and_then(|d| {
            if d < Duration::from_secs(2) {
                Err("must be at least 2s: a node checks the database for changes every second".into())
            } else {
                Ok(d)
            }
        }),
        default: doc,
        documented: "5s",
        show: |c| quoted(format_duration(c.max_revocation_lag)),
        help: "on PostgreSQL, how long a node may go without hearing from the database and still answer introspection and `/auth/verify` from the revocations it holds; past it those answer 503 with `Retry-After` (never `active: true` from state that old) and `/readyz` says why, until the database answers again",
    }
    auth_failure_limit: u32 {
        parse: |v| positive_count(v, 100_000).map(|n| n as u32),
        default: doc,
        documented: "10",
        show: |c| c.auth_failure_limit.to_string(),
        help: "failed client or API-key authentications one address (the peer, or the client behind `trusted_proxies`) may make in a burst; past it that address gets 429 with `Retry-After`, while the same credentials keep working from every other address",
    }
    auth_failure_window: Duration {
        parse: timeout,
        default: doc,
        documented: "1m",
        show: |c| quoted(format_duration(c.auth_failure_window)),
        help: "how fast the burst of failed authentications refills: `auth_failure_limit` failures per this long",
    }
    use_dpop_nonce: bool {
        parse: parse_bool,
        default: doc,
        documented: "false",
        show: |c| c.use_dpop_nonce.to_string(),
        help: "DPoP proofs at the token endpoint and at `/auth/verify` must carry a nonce keyturn handed out (RFC 9449 §8, sent as `DPoP-Nonce`, good for one to two minutes on every node): a proof made in advance by a stolen key's thief is useless",
    }
    log_level: LogLevel {
        parse: LogLevel::parse,
        default: doc,
        documented: "info",
        show: |c| quoted(c.log_level.as_str()),
        help: "`off`, `error`, `warn`, `info`, `debug`, `trace`",
    }
    log_format: LogFormat {
        parse: LogFormat::parse,
        default: doc,
        documented: "text",
        show: |c| quoted(c.log_format.as_str()),
        help: "`text` or `json`",
    }
    secret_key: Option<Secret> {
        parse: |v| validate_secret_key(v).map(|()| Some(Secret(Zeroizing::new(v.trim().to_owned())))),
        default: (None),
        documented: "generated into the data dir",
        show: |c| if c.secret_key.is_some() { "\"<redacted>\"".into() } else { "\"<generated in data_dir>\"".into() },
        secret: true,
        help: "cookie secret, base64 of 32 or 64 bytes",
    }
}

/// A PostgreSQL URL (`database_url`): it may carry a password, so it is shown redacted and
/// never printed whole.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: Secret,
    /// The URL with its password replaced, for logs and `config check`.
    pub shown: String,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown)
    }
}

impl DatabaseUrl {
    /// Checks that `url` names PostgreSQL.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        let shown = redact_url(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "'{shown}' is not a PostgreSQL URL (postgres://user:password@host:port/database); leave it unset for SQLite in the data dir"
            ));
        }
        Ok(DatabaseUrl { url: Secret(Zeroizing::new(url.to_owned())), shown })
    }

    /// The whole URL, password included: for the database driver only.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }
}

/// `url` with the password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut shown = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => format!("{scheme}://{userinfo}@{host}{tail}"),
        },
        None => format!("{scheme}://{rest}"),
    };
    // A password can also travel as a query parameter.
    if let Some(q) = shown.find("password=") {
        let end = shown[q..].find('&').map_or(shown.len(), |e| q + e);
        shown.replace_range(q..end, "password=***");
    }
    shown
}

/// The default of a timing setting, from its declaration: the value in force when it is
/// neither pinned by configuration nor stored through the API.
pub fn default_duration(name: &str) -> Duration {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| parse_duration(s.default).ok())
        .unwrap_or_else(|| panic!("{name} is not a setting with a duration default"))
}

fn quoted(v: impl fmt::Display) -> String {
    format!("\"{v}\"")
}

fn path_text(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn not_pinned(default: &str) -> String {
    format!("\"{default}\"  # not pinned: stored value applies (default)")
}

fn pinned_duration(v: Option<Duration>, name: &str) -> String {
    match v {
        Some(d) => quoted(format_duration(d)),
        None => not_pinned(&format_duration(default_duration(name))),
    }
}

fn readable_file(v: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(v);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} is not a readable file", path.display()))
    }
}

/// Rules between settings, checked once every setting is parsed.
fn check_across(c: &Config, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
    let given = |name: &str| c.sources.get(name).is_some_and(|s| *s != Source::Default);
    if given("tls_cert_file") != given("tls_key_file") {
        let name = if given("tls_cert_file") { "tls_cert_file" } else { "tls_key_file" };
        let source = c.sources.get(name).map(Source::to_string).unwrap_or_default();
        problems.push(format!(
            "tls_cert_file ({source}): tls_cert_file and tls_key_file go together: set both for HTTPS, or neither"
        ));
    }
    if c.key_custody == Custody::Pkcs11 {
        let source = c.sources.get("key_custody").map(Source::to_string).unwrap_or_default();
        let missing: Vec<&str> = [
            ("pkcs11_module", c.pkcs11_module.is_none()),
            ("pkcs11_token_label", c.pkcs11_token_label.is_none()),
            ("pkcs11_pin_file", c.pkcs11_pin_file.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, unset)| unset.then_some(name))
        .collect();
        if !missing.is_empty() {
            problems.push(format!("key_custody ({source}): pkcs11 keys need {} set too", missing.join(", ")));
        }
    }
    let lead = c.publish_lead.unwrap_or_else(|| default_duration("publish_lead"));
    let skew = c.clock_skew.unwrap_or_else(|| default_duration("clock_skew"));
    let max_age = c.jwks_max_age.unwrap_or_else(|| default_duration("jwks_max_age"));
    problems.extend(lifecycle::lead_problem(lead, max_age, skew));
    if let Some(schedule) = &c.rotation_schedule {
        warnings.extend(lifecycle::pace_warning(schedule.shortest_interval(crate::clock::from_unix(0)), lead));
    }
}

/// Environment variables keyturn reads that are not settings of the file.
const ENV_NOT_SETTINGS: &[&str] = &["KEYTURN_CONFIG"];

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
    fn parse(v: &str) -> Result<LogLevel, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(LogLevel::Off),
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!("'{v}' is not a log level: use off, error, warn, info, debug or trace")),
        }
    }

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

impl LogFormat {
    fn parse(v: &str) -> Result<LogFormat, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("'{v}' is not a log format: use text or json")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
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
    let mut raw = Raw::new();
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
                            // A misspelt setting would silently leave the default in force.
                            problems.push(format!(
                                "unknown setting '{key}' in {}{}",
                                path.display(),
                                did_you_mean(closest(&key))
                            ));
                            continue;
                        };
                        warnings.extend(alias_used(&key, &format!("in {}", path.display())));
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
                warnings.extend(alias_used(&key, name));
                set(&mut raw, &mut problems, setting, from_file, value.clone(), Source::Env(name.clone()))
            }
            // The environment is shared with other programs (deploy/'s Apache file reads
            // KEYTURN_URL): a name far from every setting is only a warning, a near miss
            // is the typo it looks like.
            None => match closest(&key) {
                Some(meant) => problems
                    .push(format!("unknown setting in environment variable {name}{}", did_you_mean(Some(meant)))),
                None => warnings.push(format!("unknown setting in environment variable {name} (ignored)")),
            },
        }
    }

    let mut config = parse_settings(&raw, &mut problems);
    check_across(&config, &mut problems, &mut warnings);
    config.warnings = warnings;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems, warnings: config.warnings })
    }
}

/// The known setting closest to a misspelt `key`, when one is close enough to be meant.
fn closest(key: &str) -> Option<&'static str> {
    let names = SETTINGS.iter().flat_map(|s| {
        let file = s.secret.then(|| format!("{}_file", s.name));
        std::iter::once((s.name, s.name.to_owned())).chain(file.map(|f| (s.name, f)))
    });
    names
        .map(|(name, spelled)| (strsim::damerau_levenshtein(key, &spelled), name, spelled))
        .filter(|(distance, _, spelled)| *distance <= (spelled.len() / 4).clamp(1, 3))
        .min_by_key(|(distance, _, _)| *distance)
        .map(|(_, name, _)| name)
}

/// ": did you mean 'x'?" for a misspelt setting (its [`closest`] known one), or where the list
/// of settings is.
fn did_you_mean(closest: Option<&str>) -> String {
    match closest {
        Some(name) => format!(": did you mean '{name}'?"),
        None => ": not a keyturn setting (the README's \"Configuration\" section lists them all)".to_owned(),
    }
}

/// Finds a setting by name; `<secret>_file` finds the secret, read from that file.
/// Other names settings are known by: accepted, and reported as aliases.
const ALIASES: &[(&str, &str)] = &[("cron", "rotation_schedule")];

/// The warning for a setting given by its alias, if `key` is one.
fn alias_used(key: &str, source: &str) -> Option<String> {
    let (alias, name) = ALIASES.iter().find(|(alias, _)| *alias == key)?;
    Some(format!("{alias} ({source}) is an alias of {name}: {name} is its name"))
}

fn lookup(key: &str) -> Option<(&'static Setting, bool)> {
    let key = ALIASES.iter().find(|(alias, _)| *alias == key).map_or(key, |(_, name)| *name);
    if let Some(s) = SETTINGS.iter().find(|s| s.name == key) {
        return Some((s, false));
    }
    let base = key.strip_suffix("_file")?;
    SETTINGS.iter().find(|s| s.name == base && s.secret).map(|s| (s, true))
}

fn set(
    raw: &mut Raw,
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

/// A whole number from 1 to `max`.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

fn positive_count(v: &str, max: usize) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{v}' is not a whole number from 1 to {max}")),
    }
}

/// A network time-out: from 1 s to 1 h.
fn timeout(v: &str) -> Result<Duration, String> {
    parse_duration(v).and_then(|d| {
        if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
            Ok(d)
        } else {
            Err("must be from 1s to 1h".into())
        }
    })
}

fn parse_addresses(v: &str) -> Result<Vec<IpAddr>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| a.parse().map_err(|_| format!("'{a}' is not an IP address")))
        .collect()
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

/// A cookie secret is base64 of 32 or 64 bytes (Rocket's rule), from configuration or from
/// the data dir's file.
pub fn validate_secret_key(v: &str) -> Result<(), String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v.trim()).map_err(|_| "must be base64".to_owned())?;
    if bytes.len() != 32 && bytes.len() != 64 {
        return Err(format!("must be 32 or 64 bytes, found {}", bytes.len()));
    }
    Ok(())
}

impl Config {
    /// The configuration as TOML with each value's source, as `config check` prints it;
    /// secrets redacted.
    pub fn render(&self) -> String {
        self.render_with(|_| None)
    }

    /// [`Config::render`], with the value and the source comment of the settings `in_force`
    /// names replaced (`config check` shows the timing settings as they are in force, stored
    /// values included, which the configuration alone cannot know).
    pub fn render_with(&self, in_force: impl Fn(&str) -> Option<(String, String)>) -> String {
        let mut out = String::new();
        for (name, value) in self.shown() {
            let (value, source) = in_force(name)
                .unwrap_or_else(|| (value, self.sources.get(name).cloned().unwrap_or(Source::Default).to_string()));
            let _ = writeln!(out, "{name} = {value}  # {source}");
        }
        out
    }

    /// The `host:port` text of the listening address.
    pub fn socket_text(&self) -> String {
        socket_text(self.address, self.port)
    }

    /// The HTTPS certificate chain and key files, when TLS is on.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert_file.as_deref()?, self.tls_key_file.as_deref()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(redact_url("postgres://kt:s3cret@db:5432/keyturn"), "postgres://kt:***@db:5432/keyturn");
        assert_eq!(redact_url("postgresql://kt@db/keyturn"), "postgresql://kt@db/keyturn");
        assert_eq!(
            redact_url("postgresql://db/keyturn?user=kt&password=s3cret&sslmode=disable"),
            "postgresql://db/keyturn?user=kt&password=***&sslmode=disable"
        );
        assert_eq!(redact_url("postgres://kt:p@ss:w@rd@db/k"), "postgres://kt:***@db/k");
        let url = DatabaseUrl::parse("postgres://kt:s3cret@db/k").expect("a PostgreSQL URL");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(DatabaseUrl::parse("mysql://db/k").is_err());
    }

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
        assert_eq!(c.jwks_max_age, None, "not pinned");
        assert_eq!(default_duration("jwks_max_age"), Duration::from_secs(300));
        for (name, secs) in
            [("publish_lead", 900), ("clock_skew", 60), ("max_token_ttl", 3600), ("leeway", 60), ("lease_ttl", 15)]
        {
            assert_eq!(default_duration(name), Duration::from_secs(secs), "{name}");
        }
        assert_eq!(c.lease_ttl, Duration::from_secs(15));
        assert_eq!(c.refresh_ttl, Duration::from_secs(14 * 86_400));
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.kek_file, PathBuf::from("./keyturn-data/kek"));
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "port = 9000\nalgorithms = [\"EdDSA\"]\nissuer = \"https://a.example\"\n")
            .expect("write");
        let mut i = inputs(&[("KEYTURN_PORT", "9100"), ("KEYTURN_ALGORITHMS", "ES256,eddsa"), ("KEYTURN_NOPE", "x")]);
        i.config_path = Some(file.clone());
        let c = load(&i).expect("valid");
        assert_eq!(c.port, 9100, "env beats file");
        assert_eq!(c.issuer, "https://a.example", "file beats default");
        assert_eq!(c.algorithms, vec![Algorithm::ES256, Algorithm::EdDSA]);
        assert_eq!(c.sources["port"], Source::Env("KEYTURN_PORT".into()));
        assert_eq!(c.sources["issuer"], Source::File(file));
        assert!(c.warnings.iter().any(|w| w.contains("KEYTURN_NOPE")), "{:?}", c.warnings);
    }

    /// The schedule's other name sets it, in the environment or a file, and is reported as
    /// an alias.
    #[test]
    fn cron_is_an_alias_of_rotation_schedule() {
        let c = load(&inputs(&[("KEYTURN_CRON", "0 3 * * *")])).expect("the alias is accepted");
        assert_eq!(c.rotation_schedule.as_ref().map(|s| s.as_str()), Some("0 3 * * *"));
        assert!(c.warnings.iter().any(|w| w.contains("is an alias of rotation_schedule")), "{:?}", c.warnings);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "cron = \"0 4 * * *\"\n").expect("write");
        let mut i = inputs(&[]);
        i.config_path = Some(file);
        let c = load(&i).expect("the alias is accepted in a file");
        assert_eq!(c.rotation_schedule.as_ref().map(|s| s.as_str()), Some("0 4 * * *"));
    }

    /// The reported case: `rotation_scheduel` was a warning and then "valid", leaving the
    /// default schedule in force.
    #[test]
    fn an_unknown_setting_is_an_error_that_names_the_closest_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "rotation_scheduel = \"0 3 * * 1\"\nbogus = 1\n").expect("write");
        let mut i = inputs(&[]);
        i.config_path = Some(file);
        let e = load(&i).expect_err("unknown settings refuse");
        let text = e.to_string();
        assert!(text.contains("'rotation_scheduel'") && text.contains("did you mean 'rotation_schedule'?"), "{text}");
        assert!(text.contains("'bogus'") && text.contains("not a keyturn setting"), "{text}");
        // In the environment, a near miss is an error; a far one (another program's) a warning.
        let e = load(&inputs(&[("KEYTURN_PUBLISH_LAED", "20m")])).expect_err("a near miss refuses");
        assert!(e.to_string().contains("did you mean 'publish_lead'?"), "{e}");
        let c = load(&inputs(&[("KEYTURN_URL", "https://x")])).expect("another program's variable");
        assert!(c.warnings.iter().any(|w| w.contains("KEYTURN_URL")), "{:?}", c.warnings);
        let e = load(&inputs(&[("KEYTURN_KEK_FIEL", "/k")])).expect_err("a secret's _file spelling too");
        assert!(e.to_string().contains("did you mean 'kek_file'?"), "{e}");
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
        assert!(c.warnings.iter().any(|w| w.contains("more often than the publish lead (15m)")), "{:?}", c.warnings);
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
