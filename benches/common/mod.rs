//! What the benchmarks share: the wrk load generator and its Lua scripts.
//!
//! Each benchmark uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// What wrk measured.
#[derive(Debug, Default)]
pub struct Wrk {
    pub rps: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Non-2xx/3xx answers plus socket errors (connect, read, write, timeout).
    pub errors: u64,
    /// Lines the Lua script printed (`key value`).
    pub script: Vec<(String, f64)>,
}

fn millis(v: &str) -> f64 {
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    if let Some(x) = v.strip_suffix("us") {
        num(x) / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        num(x)
    } else if let Some(x) = v.strip_suffix('s') {
        num(x) * 1000.0
    } else {
        num(v)
    }
}

/// Runs wrk (2 threads) against `url` and parses its report.
pub fn wrk(url: &str, connections: u32, secs: u64, script: Option<&Path>) -> Wrk {
    run_wrk(Command::new("wrk"), "-t2", url, connections, secs, script)
}

/// Runs wrk with one thread pinned to core 0 (`taskset`), for a server pinned to core 1.
pub fn wrk_on(url: &str, connections: u32, secs: u64, script: Option<&Path>) -> Wrk {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "wrk"]);
    run_wrk(cmd, "-t1", url, connections, secs, script)
}

fn run_wrk(mut cmd: Command, threads: &str, url: &str, connections: u32, secs: u64, script: Option<&Path>) -> Wrk {
    cmd.args([threads, &format!("-c{connections}"), &format!("-d{secs}s"), "--latency"]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().expect("wrk (./scripts/bench installs it)");
    assert!(out.status.success(), "wrk: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut w = Wrk::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Latency", _avg, _stdev, max, ..] => w.max_ms = millis(max),
            ["50%", v] => w.p50_ms = millis(v),
            ["99%", v] => w.p99_ms = millis(v),
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest.iter().filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            ["script:", key, v] => w.script.push(((*key).to_owned(), v.parse().unwrap_or(f64::NAN))),
            _ => {}
        }
    }
    w
}

/// How many times a second `f` runs on this thread, over about `secs` seconds.
pub fn raw_rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// A fresh key of `alg`, its signer (parsed once), and the signing input (header and claims)
/// of a real token over `claims`: what a raw signature rate is measured on.
pub fn signer_and_input(
    alg: keyturn::keys::Algorithm,
    issuer: &str,
    claims: &serde_json::Value,
) -> (keyturn::keys::generate::NewKey, keyturn::keys::signer::SigningKey, String) {
    use keyturn::keys;
    let now = keyturn::clock::from_unix(1_800_000_000);
    let day = Duration::from_secs(86_400);
    let key = keys::generate::generate(alg, keys::RsaBits::B2048, issuer, now, Duration::from_secs(60), now + day)
        .expect("key");
    let signer = keys::signer::SigningKey::new(key.kid.clone(), alg, &key.private).expect("signer");
    let token = signer.sign("at+jwt", claims).expect("sign");
    let input = token.rsplit_once('.').expect("jws").0.to_owned();
    (key, signer, input)
}

fn lua_string(s: &str) -> String {
    format!("{s:?}")
}

/// A wrk script that POSTs `body` as JSON with `key` as the bearer.
pub fn issue_script(dir: &Path, alg: &str, key: &str) -> PathBuf {
    let path = dir.join(format!("issue-{alg}.lua"));
    let body = json!({"sub": "bench-user", "aud": "api", "alg": alg}).to_string();
    std::fs::write(
        &path,
        format!(
            "wrk.method = \"POST\"\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = {}\n",
            lua_string(&body),
            lua_string(&format!("Bearer {key}"))
        ),
    )
    .expect("script");
    path
}

/// A wrk script that POSTs `body` of `content_type` to `path` with an `Authorization` header.
pub fn post_script(dir: &Path, name: &str, path: &str, auth: &str, content_type: &str, body: &str) -> PathBuf {
    let file = dir.join(format!("{name}.lua"));
    std::fs::write(
        &file,
        format!(
            "wrk.method = \"POST\"\nwrk.path = {}\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = {}\nwrk.headers[\"Authorization\"] = {}\n",
            lua_string(path),
            lua_string(body),
            lua_string(content_type),
            lua_string(auth)
        ),
    )
    .expect("script");
    file
}

/// A wrk script that sends `tokens` round-robin: `POST path` with `token=…` and `auth` as the
/// `Authorization` header (introspection), or, when `method` is GET, `GET path` with the
/// token as the bearer (forward auth). Counts answers that are not 200 (and, for POST, not
/// `"active":true`) as `not_ok`.
pub fn rotating_script(dir: &Path, name: &str, method: &str, path: &str, auth: &str, tokens: &[String]) -> PathBuf {
    let file = dir.join(format!("{name}.lua"));
    let list: Vec<String> = tokens.iter().map(|t| lua_string(t)).collect();
    let request = if method == "GET" {
        format!(
            r#"return wrk.format("GET", {path}, {{ ["Authorization"] = "Bearer " .. tokens[i] }})"#,
            path = lua_string(path)
        )
    } else {
        format!(
            r#"return wrk.format("POST", {path}, {{ ["Authorization"] = {auth}, ["Content-Type"] = "application/x-www-form-urlencoded" }}, "token=" .. tokens[i])"#,
            path = lua_string(path),
            auth = lua_string(auth)
        )
    };
    let check = if method == "GET" {
        "status ~= 200"
    } else {
        r#"status ~= 200 or not string.find(body, '"active":true', 1, true)"#
    };
    let script = format!(
        r#"local tokens = {{ {list} }}
local i = 0
not_ok = 0
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) i = math.random(#tokens) end
function request()
  i = i % #tokens + 1
  {request}
end
function response(status, headers, body)
  if {check} then not_ok = not_ok + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("not_ok") end
  io.write("script: not_ok " .. n .. "\n")
end
"#,
        list = list.join(", ")
    );
    std::fs::write(&file, script).expect("script");
    file
}

/// A wrk script that POSTs a form to `path` with `auth`, its body `prefix` followed by the
/// next of `values`, each sent once, in order (single-use refresh tokens, sessions to end).
/// For one wrk thread (`wrk_on`): each thread has its own Lua state, so several would send
/// the same values. Counts answers that are not 200 as `not_ok`, and requests past the end
/// of the list (a round that outran it) as `reused`.
pub fn form_list_script(dir: &Path, name: &str, path: &str, auth: &str, prefix: &str, values: &[String]) -> PathBuf {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if !auth.is_empty() {
        headers.push(("Authorization", auth));
    }
    each_once_script(dir, name, "POST", path, &headers, None, prefix, values)
}

/// A wrk script that introspects `tokens` round-robin with a verifier API key, counting
/// answers that are not `{"active": true}` as `not_ok`.
pub fn introspect_script(dir: &Path, key: &str, tokens: &[String]) -> PathBuf {
    rotating_script(dir, "introspect", "POST", "/oauth/introspect", &format!("Bearer {key}"), tokens)
}

/// A `keyturn serve` of a benchmark, stopped (SIGTERM) when dropped.
pub struct Node {
    child: Child,
    pub url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` (a `keyturn serve` with its settings) on a free port of 127.0.0.1 and waits
/// until it is ready.
pub fn serve(mut cmd: Command) -> Node {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child =
        cmd.env("KEYTURN_PORT", port.to_string()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    let started = Instant::now();
    while !http.get(format!("{url}/readyz")).send().is_ok_and(|r| r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(60), "node did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    Node { child, url }
}

/// Runs `cmd` (a `keyturn apikey create …`) and returns the key it printed.
pub fn issuer_key(mut cmd: Command) -> String {
    let out = cmd.output().expect("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").lines().find(|l| l.starts_with("kt_")).expect("key").trim().to_owned()
}

/// A server process pinned to core 1.
pub struct Pinned {
    pub child: Child,
    pub url: String,
}

impl Pinned {
    pub fn spawn(mut cmd: Command, port: u16, ready: &str, log: &Path) -> Pinned {
        let log = std::fs::File::create(log).expect("log");
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn (taskset, from util-linux)");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        let started = Instant::now();
        while !http.get(format!("{url}{ready}")).send().is_ok_and(|r| r.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(60), "{url}{ready} never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        Pinned { child, url }
    }

    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    /// CPU time (user and system) the process has used, or its thread named `thread`.
    pub fn cpu(&self, thread: Option<&str>) -> Duration {
        let pid = self.child.id();
        let stat = match thread {
            None => std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
            Some(name) => std::fs::read_dir(format!("/proc/{pid}/task"))
                .expect("/proc")
                .flatten()
                .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
                .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                .unwrap_or_else(|| panic!("no thread named {name}")),
        };
        // Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_secs_f64(ticks as f64 / clock_ticks())
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), the unit of /proc's CPU times.
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK")
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `program` run on core 1 (`taskset`), for wrk on core 0.
pub fn pinned(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"]).arg(program);
    cmd
}

/// Runs the keyturn CLI on `data` and returns what it printed.
pub fn cli(data: &Path, args: &[&str]) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_keyturn")).args(args).env("KEYTURN_DATA_DIR", data).output().expect("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

pub fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

pub fn show(w: &Wrk) -> String {
    format!("{:.0}/s (p50 {:.2} ms, p99 {:.2} ms, {} errors)", w.rps, w.p50_ms, w.p99_ms, w.errors)
}

/// A wrk script for one thread (`wrk_on`) that sends each of `values` once, in order (read
/// from a file beside it, so the list may be long): as the header `vary_header` when given,
/// else appended to `body`. `headers` go with every request. Counts answers that are not 200
/// as `not_ok`, and requests past the end of the list as `reused`.
#[allow(clippy::too_many_arguments)]
pub fn each_once_script(
    dir: &Path,
    name: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    vary_header: Option<&str>,
    body: &str,
    values: &[String],
) -> PathBuf {
    let list = dir.join(format!("{name}.values"));
    std::fs::write(&list, values.join("\n") + "\n").expect("values");
    let file = dir.join(format!("{name}.lua"));
    let fixed: Vec<String> = headers.iter().map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_string(v))).collect();
    let request = match vary_header {
        Some(h) => format!(
            "headers[{}] = v\n  return wrk.format({}, {}, headers, {})",
            lua_string(h),
            lua_string(method),
            lua_string(path),
            lua_string(body)
        ),
        None => format!(
            "return wrk.format({}, {}, headers, {} .. v)",
            lua_string(method),
            lua_string(path),
            lua_string(body)
        ),
    };
    let script = format!(
        r#"local values = {{}}
for line in io.lines({list}) do values[#values + 1] = line end
local headers = {{ {fixed} }}
local i = 0
not_ok = 0
reused = 0
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function request()
  i = i + 1
  if i > #values then reused = reused + 1 end
  local v = values[(i - 1) % #values + 1]
  {request}
end
function response(status, headers, body)
  if status ~= 200 then not_ok = not_ok + 1 end
end
function done(summary, latency, requests)
  local n, r = 0, 0
  for _, t in ipairs(threads) do n = n + t:get("not_ok"); r = r + t:get("reused") end
  io.write("script: not_ok " .. n .. "\n")
  io.write("script: reused " .. r .. "\n")
end
"#,
        list = lua_string(&list.display().to_string()),
        fixed = fixed.join(", ")
    );
    std::fs::write(&file, script).expect("script");
    file
}
