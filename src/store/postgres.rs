//! The PostgreSQL backend: a pool of `tokio-postgres` connections (deadpool), each with its
//! own prepared-statement cache, and the listener that hears other nodes' changes. Every
//! call is async on the caller's task: no thread of its own, no runtime of its own.
//!
//! Every keyturn write transaction takes one cluster-wide advisory lock, so writes commit
//! one at a time in every node together, exactly as SQLite's `BEGIN IMMEDIATE` makes them
//! commit one at a time in one file: a decision read inside a transaction still holds when
//! it commits, on any number of nodes, and ids handed out by identity columns commit in
//! order (the revocation feed's cursor relies on it). Token records (the group committer)
//! take the same lock shared: they only add rows, and run side by side with each other but
//! never beside a key-state change.

use std::error::Error as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, PoolError, RecyclingMethod, Runtime};
use futures_util::StreamExt as _;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{AsyncMessage, NoTls};

use super::sql::{postgres_placeholders, Value};
use super::{Result, StoreError};
use crate::config::redact_url;

/// The advisory lock every write transaction takes (the bytes of "keyturn").
pub(super) const WRITE_LOCK: i64 = 0x006b_6579_7475_726e;

/// The channel a committed change to shared state is announced on (see the triggers in the
/// migrations).
pub(super) const CHANNEL: &str = "keyturn_changes";

/// How long a database call may take, unless the settings say (`database_timeout`).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);

/// How many connections one node's shared pool keeps.
pub(super) const POOL_SIZE: usize = 8;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // No SQLSTATE: the connection itself failed (refused, closed, timed out). And the
        // server's own "try again": lost connection (08), shutting down (57), out of
        // resources (53), a lock not had in time (55P03), a serialization failure or
        // deadlock (40001, 40P01).
        if e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION) {
            return StoreError::ReadOnly(e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned()));
        }
        let transient = match e.code().map(tokio_postgres::error::SqlState::code) {
            None => true,
            Some(code) => matches!(&code[..2], "08" | "57" | "53") || matches!(code, "55P03" | "40001" | "40P01"),
        };
        if transient {
            let why = e.source().map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
            return StoreError::Unavailable(why);
        }
        StoreError::Database(Box::new(e))
    }
}

/// Runs `sql` (with SQLite's placeholders) on `client`, prepared once per connection.
pub(super) async fn query(client: &ClientWrapper, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>> {
    let stmt = client.prepare_cached(&postgres_placeholders(sql)).await?;
    let args: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let rows = client.query(&stmt, &args).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            values.push(row.try_get::<_, Value>(i)?);
        }
        out.push(values);
    }
    Ok(out)
}

/// Runs `sql` (with SQLite's placeholders) on `client`; returns the rows it changed.
/// Prepares `sql` (with `?N` placeholders) into the connection's statement cache.
pub(super) async fn prepare(client: &ClientWrapper, sql: &str) -> Result<()> {
    client.prepare_cached(&postgres_placeholders(sql)).await?;
    Ok(())
}

pub(super) async fn execute(client: &ClientWrapper, sql: &str, values: &[Value]) -> Result<u64> {
    let stmt = client.prepare_cached(&postgres_placeholders(sql)).await?;
    let args: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    Ok(client.execute(&stmt, &args).await?)
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Value::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::BYTEA => Value::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The parsed `database_url`, with what to show of it.
#[derive(Clone)]
pub struct Target {
    /// The URL as given.
    parsed: tokio_postgres::Config,
    /// What connections are made with: the URL and keyturn's session settings.
    config: tokio_postgres::Config,
    /// The URL with its password replaced, for logs and `config check`.
    pub shown: String,
    /// How long one database call may take, connection included: past it the caller hears
    /// "unavailable" (and the server ends the statement: `statement_timeout`).
    deadline: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.shown)
    }
}

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> std::result::Result<Target, String> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| format!("database_url {}: {e}", redact_url(url)))?;
        // A partitioned database is noticed within seconds, not the kernel's minutes.
        config.keepalives(true).keepalives_idle(Duration::from_secs(5)).tcp_user_timeout(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("keyturn");
        }
        let target = Target { parsed: config.clone(), config, shown: redact_url(url), deadline: DEFAULT_DEADLINE };
        Ok(target.with_deadline(DEFAULT_DEADLINE))
    }

    /// The same database, each call given at most `deadline` (`database_timeout`).
    pub fn with_deadline(mut self, deadline: Duration) -> Target {
        self.deadline = deadline;
        let mut config = self.parsed.clone();
        // Connecting counts against the call's deadline, unless the URL says otherwise.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(deadline);
        }
        // The server ends what the caller stopped waiting for: a statement at the deadline;
        // a node paused (or cut off) inside a transaction does not hold the cluster's write
        // lock for long (5 s, then the server ends the transaction); a writer waits for the
        // lock no longer than its deadline. A setting the URL names itself is kept.
        let ms = format!("{}ms", deadline.as_millis());
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, value) in [
            ("statement_timeout", ms.as_str()),
            ("lock_timeout", ms.as_str()),
            ("idle_in_transaction_session_timeout", "5s"),
        ] {
            if !options.contains(&format!("-c {name}=")) {
                options.push_str(&format!(" -c {name}={value}"));
            }
        }
        config.options(options.trim());
        self.config = config;
        self
    }

    /// How long one database call may take.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

/// The pool of one node.
pub(super) struct Pool {
    pool: deadpool_postgres::Pool,
    target: Target,
    /// When the last checkout failed: for a moment after, callers hear "unavailable" at once
    /// instead of each waiting out the checkout timeout (an outage answers 503s quickly),
    /// but one at a time tries, and the first that connects ends the moment.
    failed: std::sync::Mutex<Option<String>>,
    since_failure: crate::clock::Watchdog,
    /// Whether a caller is trying to connect meanwhile: one at a time does, so that the
    /// database is found again as soon as it answers (a promoted standby, say).
    probing: std::sync::atomic::AtomicBool,
}

/// Lets the next caller probe once this one is done.
struct Probe<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// How long after a failed checkout the next ones fail at once.
const FAIL_FAST_FOR: Duration = Duration::from_millis(500);

impl Pool {
    /// A pool of at most `size` connections, made when first asked for: each connection's
    /// task runs on the runtime of the caller that made it.
    pub(super) fn open(target: &Target, size: usize) -> Result<Pool> {
        // Recycled connections are not tested (a round trip per operation): a connection the
        // server dropped fails its next statement, is found closed, and replaced.
        let manager = Manager::from_config(
            target.config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(target.deadline))
            .create_timeout(Some(target.deadline))
            .build()
            .map_err(|e| StoreError::Task(format!("cannot build the PostgreSQL pool: {e}")))?;
        Ok(Pool {
            pool,
            target: target.clone(),
            failed: std::sync::Mutex::new(None),
            since_failure: crate::clock::Watchdog::default(),
            probing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A connection, or "unavailable" with the reason when none can be had.
    pub(super) async fn get(&self) -> Result<Object> {
        let recent = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let _probe = match recent.filter(|_| self.since_failure.elapsed() < FAIL_FAST_FOR) {
            Some(why) if self.probing.swap(true, std::sync::atomic::Ordering::AcqRel) => {
                return Err(StoreError::Unavailable(why));
            }
            Some(_) => Some(Probe(&self.probing)),
            None => None,
        };
        let got = self.pool.get().await;
        if got.is_ok() {
            *self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        got.map_err(|e| {
            let why = match e {
                PoolError::Backend(e) => {
                    let detail = e.source().map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                    format!("cannot reach PostgreSQL at {}: {detail}", self.target.shown)
                }
                e => format!("cannot reach PostgreSQL at {}: {e}", self.target.shown),
            };
            *self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
            self.since_failure.reset();
            StoreError::Unavailable(why)
        })
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }

    /// After a connection found its server read-only: closes every idle connection too (they
    /// are likely on the same server), so the next callers connect anew, and the URL's
    /// `target_session_attrs=read-write` finds the server that takes writes.
    pub(super) fn forget_idle(&self) {
        self.pool.retain(|_, _| false);
    }
}

/// Listens for other nodes' changes and wakes `wake` for each, until `alive` is gone.
/// Reconnects by itself after the database went away.
pub(super) async fn listen(target: Target, wake: Arc<tokio::sync::Notify>, alive: Weak<()>) {
    while alive.strong_count() > 0 {
        let (client, mut connection) = match target.config.connect(NoTls).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("change listener cannot connect: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // The connection's messages (notifications among them) arrive only while it is
        // polled: a task of its own drives it and hands the notifications over.
        let (heard, mut notes) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if heard.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("change listener lost its connection: {e}");
                        break;
                    }
                }
            }
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::debug!("change listener: {e}");
            driver.abort();
            continue;
        }
        // A change may have been missed while not listening.
        wake.notify_one();
        while alive.strong_count() > 0 && !client.is_closed() {
            match tokio::time::timeout(Duration::from_secs(1), notes.recv()).await {
                Ok(Some(())) => wake.notify_one(),
                Ok(None) => break,
                Err(_elapsed) => {}
            }
        }
        driver.abort();
    }
}
