//! The PostgreSQL backend: a pool of sessions (r2d2), each a synchronous `postgres` client
//! with its own prepared-statement cache, and the listener that hears other nodes' changes.
//!
//! Every keyturn write transaction takes one cluster-wide advisory lock, so writes commit
//! one at a time in every node together, exactly as SQLite's `BEGIN IMMEDIATE` makes them
//! commit one at a time in one file: a decision read inside a transaction still holds when
//! it commits, on any number of nodes, and ids handed out by identity columns commit in
//! order (the revocation feed's cursor relies on it). Token records (the group committer)
//! take the same lock shared: they only add rows, and run side by side with each other but
//! never beside a key-state change.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::sql::{postgres_placeholders, Value};
use super::{Result, StoreError};
use crate::config::redact_url;

/// The advisory lock every write transaction takes (the bytes of "keyturn").
pub(super) const WRITE_LOCK: i64 = 0x006b_6579_7475_726e;

/// The channel a committed change to shared state is announced on (see the triggers in the
/// migrations).
pub(super) const CHANNEL: &str = "keyturn_changes";

/// How long a caller waits for a connection before the store answers "unavailable".
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// How many connections one node keeps.
const POOL_SIZE: u32 = 8;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        // No SQLSTATE: the connection itself failed (refused, closed, timed out). And the
        // server's own "try again": lost connection (08), shutting down (57), out of
        // resources (53), a lock not had in time (55P03), a serialization failure or
        // deadlock (40001, 40P01).
        let transient = match e.code().map(postgres::error::SqlState::code) {
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

/// One pooled connection and the statements prepared on it.
pub struct Session {
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A `postgres::Client` owns a small runtime, which cannot be dropped on an async
        // thread: hand it to a thread of its own when that is where the last handle goes.
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new().name("keyturn-pg-close".into()).spawn(move || drop(client));
            } else {
                drop(client);
            }
        }
    }
}

impl Session {
    fn client(&mut self) -> Result<&mut Client> {
        self.client.as_mut().ok_or_else(|| StoreError::Unavailable("the connection is closed".into()))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.client()?.prepare(&postgres_placeholders(sql))?;
        self.statements.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }

    pub(super) fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>> {
        let stmt = self.statement(sql)?;
        let args: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = self.client()?.query(&stmt, &args)?;
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

    pub(super) fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let args: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(self.client()?.execute(&stmt, &args)?)
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<()> {
        Ok(self.client()?.batch_execute(sql)?)
    }

    fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }
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

/// Opens sessions for the pool.
#[derive(Debug)]
pub(super) struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Session;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Session, postgres::Error> {
        let client = self.config.connect(NoTls)?;
        Ok(Session { client: Some(client), statements: HashMap::new() })
    }

    fn is_valid(&self, session: &mut Session) -> std::result::Result<(), postgres::Error> {
        match session.client.as_mut() {
            Some(c) => c.simple_query("").map(drop),
            None => Ok(()),
        }
    }

    fn has_broken(&self, session: &mut Session) -> bool {
        session.is_closed()
    }
}

/// The parsed `database_url`, with what to show of it.
#[derive(Clone)]
pub struct Target {
    config: postgres::Config,
    /// The URL with its password replaced, for logs and `config check`.
    pub shown: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.shown)
    }
}

impl Target {
    /// Parses a `postgres://` or `postgresql://` URL.
    pub fn parse(url: &str) -> std::result::Result<Target, String> {
        let mut config: postgres::Config = url.parse().map_err(|e| format!("database_url {}: {e}", redact_url(url)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CHECKOUT_TIMEOUT);
        }
        // A partitioned database is noticed within seconds, not the kernel's minutes.
        config.keepalives(true).keepalives_idle(Duration::from_secs(5)).tcp_user_timeout(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("keyturn");
        }
        // A node paused (or cut off) inside a transaction must not hold the cluster's write
        // lock for long: the server ends such a transaction after 5 s, and a writer waits at
        // most 5 s for the lock (then answers "unavailable") instead of hanging.
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, value) in [("idle_in_transaction_session_timeout", "5s"), ("lock_timeout", "5s")] {
            if !options.contains(name) {
                options.push_str(&format!(" -c {name}={value}"));
            }
        }
        config.options(options.trim());
        Ok(Target { config, shown: redact_url(url) })
    }
}

/// The pool of one node.
pub(super) struct Pool {
    pool: r2d2::Pool<Manager>,
    target: Target,
    /// When the last checkout failed: for a moment after, callers hear "unavailable" at once
    /// instead of each waiting out the checkout timeout (an outage answers 503s quickly).
    failed: std::sync::Mutex<Option<String>>,
    since_failure: crate::clock::Watchdog,
}

/// How long after a failed checkout the next ones fail at once.
const FAIL_FAST_FOR: Duration = Duration::from_millis(500);

impl Pool {
    pub(super) fn open(target: &Target) -> Result<Pool> {
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CHECKOUT_TIMEOUT)
            // Not tested on checkout (a round trip per operation): a connection the server
            // dropped fails its next statement, is discarded as broken, and replaced.
            .test_on_check_out(false)
            .error_handler(Box::new(QuietErrors))
            .build_unchecked(Manager { config: target.config.clone() });
        Ok(Pool {
            pool,
            target: target.clone(),
            failed: std::sync::Mutex::new(None),
            since_failure: crate::clock::Watchdog::default(),
        })
    }

    /// A session, or "unavailable" with the reason when none can be had.
    pub(super) fn get(&self) -> Result<r2d2::PooledConnection<Manager>> {
        let recent = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(why) = recent.filter(|_| self.since_failure.elapsed() < FAIL_FAST_FOR) {
            return Err(StoreError::Unavailable(why));
        }
        self.pool.get().map_err(|e| {
            // r2d2 keeps the last connection error; say it rather than only "timed out".
            let why = format!("cannot reach PostgreSQL at {}: {e}", self.target.shown);
            *self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
            self.since_failure.reset();
            StoreError::Unavailable(why)
        })
    }

    pub(super) fn target(&self) -> &Target {
        &self.target
    }
}

/// Connection errors are reported by whoever waited for the connection, once.
#[derive(Debug)]
struct QuietErrors;

impl r2d2::HandleError<postgres::Error> for QuietErrors {
    fn handle_error(&self, error: postgres::Error) {
        tracing::debug!("PostgreSQL connection attempt failed: {error}");
    }
}

/// Listens for other nodes' changes and wakes `wake` for each, until `alive` is gone.
/// Reconnects by itself after the database went away.
pub(super) fn listen(target: Target, wake: Arc<tokio::sync::Notify>, alive: Weak<()>) {
    while alive.strong_count() > 0 {
        let mut client = match target.config.connect(NoTls) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("change listener cannot connect: {e}");
                std::thread::park_timeout(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::debug!("change listener: {e}");
            continue;
        }
        // A change may have been missed while not listening.
        wake.notify_one();
        while alive.strong_count() > 0 && !client.is_closed() {
            let mut heard = false;
            let mut notes = client.notifications();
            let mut iter = notes.timeout_iter(Duration::from_secs(1));
            loop {
                match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                    Ok(Some(_)) => heard = true,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("change listener lost its connection: {e}");
                        break;
                    }
                }
                if heard {
                    break;
                }
            }
            if heard {
                wake.notify_one();
            }
        }
    }
}
