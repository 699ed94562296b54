//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use keyturn::clock::Clock;
use keyturn::config::{self, Config, Inputs};
use keyturn::store::sql::ToValue;
use keyturn::Server;
use time::macros::datetime;

/// A fake clock at a fixed, known instant.
pub fn fake_clock() -> Clock {
    Clock::fake(datetime!(2026-06-01 12:00:00 UTC))
}

/// The PostgreSQL server the suite runs against when it runs on that backend: scripts/test
/// runs the whole suite twice, the second time with `KEYTURN_TEST_POSTGRES` naming a server
/// (`postgresql://user@host:port`) whose user may create databases.
pub fn postgres_server() -> Option<String> {
    std::env::var("KEYTURN_TEST_POSTGRES").ok().filter(|s| !s.is_empty())
}

/// Put in a test's environment, keeps it on SQLite on either run: the few tests that are
/// about the SQLite file itself (its backups, WAL, a full disk under it, a lost file).
pub const SQLITE: (&str, &str) = ("KEYTURN_DATABASE_URL", "");

/// The cookie secret every test node shares on PostgreSQL, where one is required.
pub const CLUSTER_SECRET: &str = "a2V5dHVybi10ZXN0LWNvb2tpZS1zZWNyZXQtMzItYnk=";

/// The URL of a fresh PostgreSQL database on the test server, one per `data_dir` (so a
/// restarted daemon on the same data dir finds its state, as with SQLite), created when
/// first asked for.
pub fn postgres_database(server: &str, data_dir: &Path) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data_dir.display().to_string().as_bytes());
    let name: String = format!("kt_{}", digest.as_ref()[..10].iter().map(|b| format!("{b:02x}")).collect::<String>());
    postgres_database_named(server, &name)
}

/// The URL of database `name` on `server`, created when first asked for.
pub fn postgres_database_named(server: &str, name: &str) -> String {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static CREATED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let name = name.to_owned();
    let mut created = CREATED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if created.get_or_insert_with(HashSet::new).insert(format!("{server}/{name}")) {
        let admin = format!("{server}/postgres");
        // The synchronous client runs its own runtime: keep it off the test's async threads.
        let ddl = format!("CREATE DATABASE {name}");
        std::thread::spawn(move || {
            let mut client =
                postgres::Client::connect(&admin, postgres::NoTls).expect("connect to the test PostgreSQL");
            if let Err(e) = client.batch_execute(&ddl) {
                let duplicate = e.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE);
                assert!(duplicate, "{ddl}: {e}");
            }
        })
        .join()
        .expect("create the test database");
    }
    format!("{server}/{name}")
}

/// `env` with the backend the suite runs on: on the PostgreSQL run, a database for the data
/// dir and the shared cookie secret, unless the test chose its own (or pinned [`SQLITE`]).
pub fn with_backend(env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let given = |vars: &[(String, String)], key: &str| vars.iter().any(|(k, _)| k == key);
    if let Some(server) = postgres_server() {
        let data_dir = vars.iter().rev().find(|(k, _)| k == "KEYTURN_DATA_DIR").map(|(_, v)| v.clone());
        if let (Some(data_dir), false) = (data_dir, given(&vars, SQLITE.0)) {
            let url = postgres_database(&server, Path::new(&data_dir));
            vars.push(("KEYTURN_DATABASE_URL".into(), url));
            if !given(&vars, "KEYTURN_SECRET_KEY") && !given(&vars, "KEYTURN_SECRET_KEY_FILE") {
                vars.push(("KEYTURN_SECRET_KEY".into(), CLUSTER_SECRET.into()));
            }
        }
    }
    vars.retain(|(k, v)| !(k == SQLITE.0 && v.is_empty()));
    vars
}

/// Loads a configuration from `KEYTURN_*` pairs, as the daemon would from its environment.
pub fn config(data_dir: &Path, env: &[(&str, &str)]) -> Config {
    let data_dir_text = data_dir.display().to_string();
    let mut all = vec![("KEYTURN_DATA_DIR", data_dir_text.as_str()), ("KEYTURN_PORT", "0")];
    all.extend_from_slice(env);
    let vars = with_backend(&all);
    config::load(&Inputs { config_path: None, cwd: data_dir.to_owned(), env: vars }).expect("valid test configuration")
}

/// Starts a real server on 127.0.0.1, port 0.
pub async fn start(data_dir: &Path, env: &[(&str, &str)], clock: Clock) -> Server {
    keyturn::start(config(data_dir, env), clock).await.expect("server starts")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

/// GETs a JSON document.
pub async fn get_json(url: &str) -> serde_json::Value {
    let res = http().get(url).send().await.expect("request");
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.json().await.expect("json body")
}

/// The `kid`s of a JWKS, in order.
pub fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_owned()).collect()
}

/// How long a `keyturn` command may take before the test fails: a refusal must come quickly,
/// a hang is a failure.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The real `keyturn` binary, the one way tests run it: the caller's `KEYTURN_*` variables
/// are removed, then `env` is set, so nothing in the test runner's environment decides what
/// it does. Spawn it (a daemon), or hand it to [`finish`].
pub fn keyturn(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyturn"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYTURN_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(with_backend(env));
    cmd
}

/// The database of the daemon whose data dir is `data`, whichever backend the suite runs on,
/// for tests that look at what was stored (or tamper with it).
pub fn database(data: &Path, env: &[(&str, &str)]) -> Db {
    database_of(&config(data, env))
}

/// The database a configuration names.
pub fn database_of(config: &Config) -> Db {
    Db::open(keyturn::service::database_location(config).expect("a database location"))
}

/// A test's own handle on a database, with plain (blocking) calls, so that tests driving
/// daemons with a blocking client read and tamper with the database alike: the store (whose
/// interface is async) lives on a thread of its own, with a runtime of its own.
pub struct Db {
    jobs: Option<std::sync::mpsc::Sender<DbJob>>,
    dialect: keyturn::store::Dialect,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Db {
    /// Waits until the store is closed (SQLite's WAL checkpointed), so that what a test
    /// finds in the data dir next does not depend on a thread still closing.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type DbJob = Box<
    dyn for<'a> FnOnce(&'a keyturn::store::Store) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>
        + Send,
>;

impl Db {
    pub fn open(location: keyturn::store::Location) -> Db {
        let (jobs, queue) = std::sync::mpsc::channel::<DbJob>();
        let (opened, dialect) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let store =
                runtime.block_on(async { keyturn::store::Store::open_at(&location) }).expect("open the database");
            let _ = opened.send(store.dialect());
            while let Ok(job) = queue.recv() {
                runtime.block_on(job(&store));
            }
        });
        let dialect = dialect.recv().expect("the database thread started");
        Db { jobs: Some(jobs), dialect, thread: Some(thread) }
    }

    pub fn dialect(&self) -> keyturn::store::Dialect {
        self.dialect
    }

    /// Runs `work` on the store and waits for its answer.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl for<'a> FnOnce(&'a keyturn::store::Store) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>
            + Send
            + 'static,
    ) -> T {
        let (answer, answered) = std::sync::mpsc::channel();
        self.jobs
            .as_ref()
            .expect("open")
            .send(Box::new(move |store| {
                Box::pin(async move {
                    let _ = answer.send(work(store).await);
                })
            }))
            .expect("the database thread runs");
        answered.recv().expect("the database thread answers")
    }
}

/// The rows `sql` returns.
pub fn rows(db: &Db, sql: &str, args: &[&dyn ToValue]) -> Vec<keyturn::store::Row> {
    let (query, values) = (sql.to_owned(), owned(args));
    db.run(move |store| {
        Box::pin(async move {
            store.read(move |c| Box::pin(async move { c.query(&query, &borrowed(&values)).await })).await
        })
    })
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn owned(args: &[&dyn ToValue]) -> Vec<keyturn::store::Value> {
    args.iter().map(|a| a.to_value()).collect()
}

fn borrowed(values: &[keyturn::store::Value]) -> Vec<&dyn ToValue> {
    values.iter().map(|v| v as &dyn ToValue).collect()
}

/// The one integer `sql` returns.
pub fn scalar(db: &Db, sql: &str, args: &[&dyn ToValue]) -> i64 {
    let rows = rows(db, sql, args);
    rows.first().and_then(|r| r.get::<i64>(0).ok()).unwrap_or_else(|| panic!("{sql}: no integer"))
}

/// Runs a statement that changes the database (tests that tamper with it).
pub fn execute(db: &Db, sql: &str, args: &[&dyn ToValue]) -> u64 {
    let (statement, values) = (sql.to_owned(), owned(args));
    db.run(move |store| {
        Box::pin(async move {
            store.write(move |tx| Box::pin(async move { tx.execute(&statement, &borrowed(&values)).await })).await
        })
    })
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs `cmd` to its end, at most [`COMMAND_LIMIT`] (then it is killed and the test fails),
/// and returns what it printed.
pub fn finish(mut cmd: Command) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn keyturn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_LIMIT) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("keyturn did not exit within {COMMAND_LIMIT:?}");
        }
    }
}

/// Runs `keyturn` with `env` in `cwd` (where it looks for `keyturn.toml`) and returns its
/// output; its exit status is the caller's to check (refusals exit non-zero on purpose).
pub fn run_keyturn(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut cmd = keyturn(args, env);
    cmd.current_dir(cwd);
    finish(cmd)
}

/// Runs `keyturn` on the data dir `data` (from the directory above it) and returns its
/// stdout; the test fails unless it exits 0.
pub fn keyturn_ok(data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let data_dir = data.display().to_string();
    let mut all = vec![("KEYTURN_DATA_DIR", data_dir.as_str())];
    all.extend_from_slice(env);
    let out = run_keyturn(args, &all, data.parent().unwrap_or(data));
    assert!(out.status.success(), "keyturn {args:?} exited {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

/// Waits until `probe` answers `Some`, trying every 20 ms for at most `limit`, and returns
/// the answer; fails the test naming `what` otherwise. The one way tests wait for something.
pub fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`eventually`] for async tests: the probe is awaited, and the wait does not block the
/// runtime.
pub async fn eventually_async<T, F>(what: &str, limit: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir` with a digest of its bytes (and its mode), to prove a refusal
/// changed nothing.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let paths: Vec<PathBuf> = if dir.is_dir() {
        std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect()
    } else {
        vec![dir.to_owned()]
    };
    for path in paths {
        let meta = std::fs::metadata(&path).expect("metadata");
        let digest = if meta.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
            d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
        } else {
            "dir".to_owned()
        };
        out.insert(path, format!("{digest} {:o}", meta.permissions().mode()));
    }
    out
}

/// Creates a data dir with keys for `algorithms` by opening the service once, then closing it.
pub fn populated_data_dir(root: &Path, algorithms: &str) -> PathBuf {
    populated_data_dir_with(root, &[("KEYTURN_ALGORITHMS", algorithms)])
}

/// [`populated_data_dir`] with more settings (such as [`SQLITE`]).
pub fn populated_data_dir_with(root: &Path, env: &[(&str, &str)]) -> PathBuf {
    let data = root.join("data");
    let config = config(&data, env);
    // On a thread and a runtime of its own, so that sync and async tests alike can call it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            keyturn::service::Keyturn::open(config, fake_clock()).await.expect("first start").close().await
        });
    })
    .join()
    .expect("first start");
    data
}

/// The sign-in and setup forms as a browser sends them: GET `page` (which sets the form
/// cookie and puts its token in the form), then POST `fields` with both to `action`. The
/// POST's answer is returned as it came (a redirect is not followed when `client` does not).
pub async fn post_form_as_browser(
    client: &reqwest::Client,
    base: &str,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let res = client.get(format!("{base}{page}")).send().await.expect("GET the form");
    let cookie = form_cookie(res.headers());
    let html = res.text().await.expect("the form page");
    let token = form_token(&html);
    let mut all = vec![("csrf", token.as_str())];
    all.extend_from_slice(fields);
    client.post(format!("{base}{action}")).header("Cookie", cookie).form(&all).send().await.expect("POST the form")
}

/// [`post_form_as_browser`], blocking.
pub fn post_form_as_browser_blocking(
    client: &reqwest::blocking::Client,
    base: &str,
    page: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let res = client.get(format!("{base}{page}")).send().expect("GET the form");
    let cookie = form_cookie(res.headers());
    let html = res.text().expect("the form page");
    let token = form_token(&html);
    let mut all = vec![("csrf", token.as_str())];
    all.extend_from_slice(fields);
    client.post(format!("{base}{action}")).header("Cookie", cookie).form(&all).send().expect("POST the form")
}

/// The `name=value` of the form cookie a sign-in or setup page set.
pub fn form_cookie(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("keyturn-form="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no form cookie in {headers:?}"))
        .to_owned()
}

/// The CSRF token in a page's form.
pub fn form_token(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in:\n{html}"))
        .to_owned()
}

/// A fresh P-256 key pair (aws-lc-rs): what signs with it, and its public JWK.
pub fn p256_key() -> (jsonwebtoken::EncodingKey, serde_json::Value) {
    let (pkcs8, jwk) = p256_key_pkcs8();
    (jsonwebtoken::EncodingKey::from_ec_der(&pkcs8), jwk)
}

/// A fresh P-256 key pair: its private half as PKCS#8 DER, and its public JWK.
pub fn p256_key_pkcs8() -> (Vec<u8>, serde_json::Value) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("pair");
    let point = pair.public_key().as_ref();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
    (pkcs8.as_ref().to_vec(), jwk)
}
