//! All SQL lives under this module: the two backends (SQLite in a file, the embedded
//! default; PostgreSQL for a cluster of nodes), the migrations embedded in the binary for
//! each, and one file per table family, written once against [`sql::Conn`].
//!
//! The interface is async. [`Store::read`] and [`Store::write`] take a closure that returns
//! the work as a future over a [`Conn`]: on PostgreSQL it runs on the caller's task; on
//! SQLite it runs on the thread that owns the connection ([`sqlite`]), so the async runtime's
//! threads never wait on a file. Every write is one transaction
//! that commits alone (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL a cluster-wide advisory
//! lock), so a state change and its audit record commit together or not at all, and a
//! decision read inside the transaction still holds when it commits.

pub mod admins;
pub mod apikeys;
pub mod audit;
pub mod clients;
pub mod copy;
pub mod federation;
mod group;
pub mod keys;
pub mod lease;
pub mod meta;
pub mod postgres;
pub mod refresh;
pub mod replay;
pub mod revocations;
pub mod sessions;
pub mod settings;
pub mod signins;
pub mod sql;
mod sqlite;
pub mod tokens;
mod unit;

use unit::{in_transaction, within_deadline, Bound, InUse, Pipelining};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures_util::future::BoxFuture;

use self::group::{group_committer, GroupedJob};

pub use self::postgres::Target;
pub use self::sql::{args, Conn, Dialect, Row, Value};

/// Versioned migrations, applied in order. SQLite records the last applied in
/// `PRAGMA user_version`, PostgreSQL in the `keyturn_schema` table. Both lists have the same
/// length: a version means the same schema on either backend.
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_keys.sql"),
    include_str!("migrations/0002_rotation.sql"),
    include_str!("migrations/0003_tokens.sql"),
    include_str!("migrations/0004_admins.sql"),
    include_str!("migrations/0005_signins.sql"),
    include_str!("migrations/0006_signin_attempts.sql"),
    include_str!("migrations/0007_sessions.sql"),
    include_str!("migrations/0008_schedule_name.sql"),
    include_str!("migrations/0009_key_custody.sql"),
    include_str!("migrations/0010_seen_jtis.sql"),
    include_str!("migrations/0011_client_keys.sql"),
    include_str!("migrations/0012_trusted_issuers.sql"),
];
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_keys.sql"),
    include_str!("migrations/postgres/0002_rotation.sql"),
    include_str!("migrations/postgres/0003_tokens.sql"),
    include_str!("migrations/postgres/0004_admins.sql"),
    include_str!("migrations/postgres/0005_signins.sql"),
    include_str!("migrations/postgres/0006_signin_attempts.sql"),
    include_str!("migrations/postgres/0007_sessions.sql"),
    include_str!("migrations/postgres/0008_schedule_name.sql"),
    include_str!("migrations/postgres/0009_key_custody.sql"),
    include_str!("migrations/postgres/0010_seen_jtis.sql"),
    include_str!("migrations/postgres/0011_client_keys.sql"),
    include_str!("migrations/postgres/0012_trusted_issuers.sql"),
];
const _: () = assert!(SQLITE_MIGRATIONS.len() == POSTGRES_MIGRATIONS.len());

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = SQLITE_MIGRATIONS.len() as i64;

pub use crate::error::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(Box::new(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A write transaction, as the table-family functions take it: a [`Conn`] inside the
/// transaction.
pub type Tx<'a> = Conn<'a>;

/// The database work a caller hands to [`Store::read`] or [`Store::write`]: a future over the
/// connection it is given, boxed so that it can be sent to the thread that owns a SQLite
/// connection (`|c| Box::pin(async move { … })`).
pub type Work<'c, T> = BoxFuture<'c, Result<T>>;

/// `f`, typed as database work for any connection (a closure kept in a variable is not
/// given that signature by inference).
fn work<T, F>(f: F) -> F
where
    F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T>,
{
    f
}

/// Where the database stood, as far as other processes' commits go. Two marks differ when
/// another process (the CLI, another node) committed a change in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeMark(i64);

/// Where the database is: a SQLite file, or a PostgreSQL server.
#[derive(Clone, Debug)]
pub enum Location {
    File(PathBuf),
    Postgres(Box<Target>),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Postgres(t) => f.write_str(&t.shown),
        }
    }
}

/// The database: a SQLite file (one writer connection and a few readers) or a pool of
/// PostgreSQL sessions. Every caller sees the same operations.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Jobs for the group committer (see [`Store::record_token`]).
    grouped: tokio::sync::mpsc::UnboundedSender<GroupedJob>,
    /// Why the last write failed in the database itself (a full disk, an I/O error, a
    /// database that cannot be reached), until a write succeeds again: readiness reports it.
    write_failure: Mutex<Option<String>>,
    /// Woken when another node announces a change (PostgreSQL), once listening started.
    changes: OnceLock<Arc<tokio::sync::Notify>>,
    /// Keeps the change listener running while the store lives.
    alive: Arc<()>,
}

enum Backend {
    Sqlite(sqlite::Threads),
    /// The pool every caller shares, and the group committer's own: its connections live on
    /// the committer's thread, so a batch's round trips never wait behind request handlers
    /// for a turn on the runtime's threads.
    Postgres {
        pool: Box<postgres::Pool>,
        committer: Box<postgres::Pool>,
    },
}

impl Backend {
    fn dialect(&self) -> Dialect {
        match self {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres { .. } => Dialect::Postgres,
        }
    }
}

/// How a write transaction excludes the others (PostgreSQL; SQLite has one writer anyway).
#[derive(Clone, Copy)]
enum Lock {
    /// Alone: every state change.
    Exclusive,
    /// Beside other shared ones: the group committer's token records.
    Shared,
}

impl Inner {
    /// Notes how a write ended: a database failure makes the store unfit for writes until
    /// the next write succeeds. Refusals (conflicts, a spent refresh token) say nothing about
    /// the database.
    fn note_write<T>(&self, result: &Result<T>) {
        let failure = match result {
            Ok(_) => None,
            Err(e) if is_storage_failure(e) => Some(e.to_string()),
            Err(_) => return,
        };
        *self.write_failure.lock().unwrap_or_else(PoisonError::into_inner) = failure;
    }

    /// Runs `f` in one write transaction, committed when it returns `Ok`.
    async fn transact<T, F>(&self, lock: Lock, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        self.transact_pipelined(lock, Pipelining::First, Bound::Deadline, f).await
    }

    /// [`Self::transact`], with as much of the transaction sent at once as `pipelining` says
    /// (on PostgreSQL), within the deadline or not (`bound`).
    async fn transact_pipelined<T, F>(&self, lock: Lock, pipelining: Pipelining, bound: Bound, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        let result = match &self.backend {
            Backend::Sqlite(threads) => {
                threads
                    .work_on_writer(move |c| Box::pin(in_transaction(c, "BEGIN IMMEDIATE", Pipelining::None, f)))
                    .await
            }
            Backend::Postgres { pool, committer } => {
                // Shared: the group committer's token records, on its own connection.
                let pool = if matches!(lock, Lock::Shared) { committer } else { pool };
                // One round trip: the transaction and its lock.
                let take = match lock {
                    Lock::Exclusive => "pg_advisory_xact_lock",
                    Lock::Shared => "pg_advisory_xact_lock_shared",
                };
                let unbounded = match bound {
                    Bound::Deadline => "",
                    Bound::None => "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0; ",
                };
                let begin = format!("BEGIN; {unbounded}SELECT {take}({})", postgres::WRITE_LOCK);
                let work = async {
                    let session = InUse(Some(pool.get().await?));
                    let result = {
                        let conn = session.conn();
                        in_transaction(&conn, &begin, pipelining, f).await
                    };
                    session.settle(pool, result)
                };
                match bound {
                    Bound::Deadline => within_deadline(pool, work).await,
                    Bound::None => work.await,
                }
            }
        };
        self.note_write(&result);
        result
    }

    /// Runs `f` on a connection, outside any transaction.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(threads) => threads.work_on_reader(f).await,
            // Reads run statement by statement (one round trip each, no transaction): every
            // caller reads what it needs in one statement, or tolerates a change committed
            // between two (a change mark is read first, so a reload that saw newer rows than
            // its mark only reloads once more).
            Backend::Postgres { pool, .. } => {
                within_deadline(pool, async {
                    let session = InUse(Some(pool.get().await?));
                    let result = {
                        let conn = session.conn();
                        f(&conn).await
                    };
                    session.settle(pool, result)
                })
                .await
            }
        }
    }
}

/// Whether `e` says the database's storage failed (full, unwritable, unreadable,
/// unreachable), as opposed to a statement refused (a constraint, a lost race), which says
/// nothing about the database.
fn is_storage_failure(e: &StoreError) -> bool {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseCorrupt, DiskFull, NotADatabase, ReadOnly, SystemIoFailure};
    match e {
        StoreError::Unavailable(_) | StoreError::ReadOnly(_) => true,
        StoreError::Database(inner) => {
            if let Some(code) = inner.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code) {
                return matches!(
                    code,
                    DiskFull | SystemIoFailure | ReadOnly | CannotOpen | DatabaseCorrupt | NotADatabase
                );
            }
            // PostgreSQL: class 53 (insufficient resources: disk full, out of memory), 57
            // (operator intervention: shutting down), 58 (system error: I/O).
            inner.downcast_ref::<tokio_postgres::Error>().and_then(tokio_postgres::Error::code).is_some_and(|code| {
                let class = &code.code()[..2];
                matches!(class, "53" | "57" | "58")
            })
        }
        _ => false,
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.location())
    }
}

impl Store {
    /// Opens (creating if absent) the SQLite database at `path` without migrating it. Must be
    /// called inside the async runtime (the group committer is one of its tasks).
    pub fn open(path: &Path) -> Result<Store> {
        Store::start(Backend::Sqlite(sqlite::Threads::open(path)?))
    }

    /// Opens the database at `location` without migrating it. A PostgreSQL server need not
    /// answer yet: every operation reports it unavailable until it does.
    pub fn open_at(location: &Location) -> Result<Store> {
        match location {
            Location::File(path) => Store::open(path),
            Location::Postgres(target) => Store::start(Backend::Postgres {
                pool: Box::new(postgres::Pool::open(target, postgres::POOL_SIZE)?),
                committer: Box::new(postgres::Pool::open(target, 1)?),
            }),
        }
    }

    fn start(backend: Backend) -> Result<Store> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            backend,
            grouped: sender,
            write_failure: Mutex::new(None),
            changes: OnceLock::new(),
            alive: Arc::new(()),
        });
        // One committer on either backend: while its batch commits, the next one gathers, and
        // a batch costs the same few statements whatever its size (several committers on
        // PostgreSQL made smaller batches and less throughput: see docs/BENCHMARKS.md).
        //
        // It runs on a thread of its own, with a runtime of its own: a batch's round trips
        // (SQLite's writer thread, PostgreSQL's server) are a chain of wake-ups, and on the
        // runtime that serves requests each waited its turn behind the handlers (one
        // PostgreSQL node issued 0.62 as many tokens a second: docs/BENCHMARKS.md).
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("keyturn-commit".into())
            .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(group_committer(weak, receiver)),
                Err(e) => tracing::error!("the group committer cannot start: {e}"),
            })
            .map_err(|e| StoreError::Task(format!("cannot start the group committer: {e}")))?;
        Ok(Store { inner })
    }

    /// Where the database is, fit for logs (a password is never shown).
    pub fn location(&self) -> String {
        match &self.inner.backend {
            Backend::Sqlite(threads) => threads.path().display().to_string(),
            Backend::Postgres { pool, .. } => pool.target().shown.clone(),
        }
    }

    /// Which backend this is.
    pub fn dialect(&self) -> Dialect {
        self.inner.backend.dialect()
    }

    /// The schema version recorded in the database (0 for a new one).
    pub async fn schema_version(&self) -> Result<i64> {
        self.read(|c| Box::pin(schema_version_of(c))).await
    }

    /// Applies the migrations the database lacks, each in its own transaction, which also
    /// re-reads the version: nodes starting together apply each migration once.
    pub async fn migrate(&self) -> Result<()> {
        loop {
            let location = self.location();
            let applied = self
                .write_unbounded(move |tx| {
                    Box::pin(async move {
                        let found = schema_version_of(tx).await?;
                        if found > SCHEMA_VERSION {
                            return Err(StoreError::TooNew { location, found, supported: SCHEMA_VERSION });
                        }
                        if found == SCHEMA_VERSION {
                            return Ok(None);
                        }
                        let version = found + 1;
                        match tx.dialect() {
                            Dialect::Sqlite => {
                                tx.batch(SQLITE_MIGRATIONS[found as usize]).await?;
                                tx.batch(&format!("PRAGMA user_version = {version}")).await?;
                            }
                            Dialect::Postgres => {
                                tx.batch(POSTGRES_MIGRATIONS[found as usize]).await?;
                                tx.execute("UPDATE keyturn_schema SET version = ?1", args![version]).await?;
                            }
                        }
                        Ok(Some(version))
                    })
                })
                .await?;
            match applied {
                Some(version) => tracing::info!(version, "applied database migration"),
                None => return Ok(()),
            }
        }
    }

    /// Runs `f` on a read connection: `store.read(|c| Box::pin(keys::live(c)))`.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        self.inner.read(f).await
    }

    /// Runs `f` inside one write transaction, which commits when `f` returns `Ok` and rolls
    /// back otherwise. Writes commit one at a time (on PostgreSQL, across every node), so
    /// what `f` reads still holds when it commits.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        self.inner.transact(Lock::Exclusive, f).await
    }

    /// [`Store::write`] without the deadline (`database_timeout`): for the migrations and
    /// `db copy`, whose one transaction may rightly take long.
    pub async fn write_unbounded<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        self.inner.transact_pipelined(Lock::Exclusive, Pipelining::First, Bound::None, f).await
    }

    /// How long a database call may take before the store answers "unavailable" (a
    /// PostgreSQL server's; `None` for SQLite, a local file).
    pub fn deadline(&self) -> Option<std::time::Duration> {
        match &self.inner.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres { pool, .. } => Some(pool.target().deadline()),
        }
    }

    /// Why the database cannot take writes, if the last write failed in the database
    /// itself; `None` once a write succeeded.
    pub fn write_failure(&self) -> Option<String> {
        self.inner.write_failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records an answered token: the write may share one transaction (and one fsync) with
    /// concurrent ones (see [`tokens::record_batch`]). Resolves after the shared transaction
    /// committed, so the record is durable when this returns `Ok`.
    pub async fn record_token(&self, recording: tokens::Recording) -> Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.grouped(GroupedJob::Token { recording: Box::new(recording), done }, answer, "the token's record").await
    }

    /// Records that `jti`, signed by `key`, was used (until `until`), in the group committer's
    /// next transaction: `false` when any node recorded it before (a replay). Batched like
    /// token records, so a burst of DPoP proofs shares its commits.
    pub async fn first_use(&self, key: &str, jti: &str, until: crate::clock::Instant) -> Result<bool> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let seen = group::Seen { key: key.to_owned(), jti: jti.to_owned(), until };
        self.grouped(GroupedJob::Seen { seen, done }, answer, "the replay-cache entry").await
    }

    /// Hands `job` to the group committer and waits for its answer, within the deadline.
    async fn grouped<T>(
        &self,
        job: GroupedJob,
        answer: tokio::sync::oneshot::Receiver<Result<T>>,
        what: &str,
    ) -> Result<T> {
        self.inner.grouped.send(job).map_err(|_| StoreError::Task("the group committer stopped".into()))?;
        let stopped = |_| StoreError::Task("the group committer stopped".into());
        match self.deadline() {
            None => answer.await.map_err(stopped)?,
            // The batch before this one and this one's each have the deadline; the caller
            // waits for no more than one (a record that commits later was never answered).
            Some(deadline) => match tokio::time::timeout(deadline, answer).await {
                Ok(answered) => answered.map_err(stopped)?,
                Err(_elapsed) => Err(StoreError::Unavailable(format!(
                    "{what} was not committed within {} ms (database_timeout)",
                    deadline.as_millis()
                ))),
            },
        }
    }

    /// Copies a SQLite database to `dest` with SQLite's online backup API: consistent while
    /// other connections read and write. `dest` must not exist.
    pub async fn backup_to(&self, dest: &Path) -> Result<()> {
        let Backend::Sqlite(threads) = &self.inner.backend else {
            return Err(StoreError::Unsupported(
                "keyturn backup copies a SQLite database; back PostgreSQL up with pg_dump or its own tools".into(),
            ));
        };
        let dest = dest.to_owned();
        threads
            .on_reader(move |conn| sqlite::backup(&conn.lock().unwrap_or_else(PoisonError::into_inner), &dest))
            .await?
    }

    /// Runs `f` like [`Store::read`] and returns, with its result, the mark of other
    /// processes' commits that the read saw.
    pub async fn read_marked<T, F>(&self, f: F) -> Result<(T, ChangeMark)>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        let marked = work(move |c| {
            Box::pin(async move {
                let mark = change_mark(c).await?;
                Ok((f(c).await?, mark))
            })
        });
        match &self.inner.backend {
            // `data_version` is per connection, so every mark is read on the writer
            // connection, which also sees this process's latest commit.
            Backend::Sqlite(threads) => threads.work_on_writer(marked).await,
            // The generation the change triggers count, read before `f`.
            Backend::Postgres { .. } => self.read(marked).await,
        }
    }

    /// Whether another process committed since `seen` was taken.
    pub async fn changed_since(&self, seen: ChangeMark) -> Result<bool> {
        let ((), now) = self.read_marked(|_| Box::pin(async { Ok(()) })).await?;
        Ok(now != seen)
    }

    /// Woken soon after another node commits a change to shared state (PostgreSQL, by
    /// LISTEN/NOTIFY); `None` for SQLite, where the periodic [`Store::changed_since`] check
    /// is all there is. Notifications can be lost (a dropped connection): they only make a
    /// change arrive sooner than the periodic check would. Called inside the async runtime.
    pub fn change_notices(&self) -> Option<Arc<tokio::sync::Notify>> {
        let Backend::Postgres { pool, .. } = &self.inner.backend else { return None };
        let notify = self.inner.changes.get_or_init(|| {
            let notify = Arc::new(tokio::sync::Notify::new());
            let (target, wake, alive) = (pool.target().clone(), notify.clone(), Arc::downgrade(&self.inner.alive));
            tokio::spawn(postgres::listen(target, wake, alive));
            notify
        });
        Some(notify.clone())
    }

    /// Bytes this process may still write on the filesystem holding the database, when the
    /// filesystem says (`None` when it cannot be asked, or the database is a server).
    pub fn free_bytes(&self) -> Option<u64> {
        let Backend::Sqlite(threads) = &self.inner.backend else { return None };
        let dir = threads.path().parent().unwrap_or(Path::new("."));
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| Box::pin(async move { c.query_one("SELECT 1", args![]).await.map(drop) })).await
    }
}

/// Where the database `c` is connected to stands, as far as other processes' commits go.
async fn change_mark(c: &Conn<'_>) -> Result<ChangeMark> {
    let mark = match c.dialect() {
        Dialect::Sqlite => c.query_one("PRAGMA data_version", args![]).await?.get(0)?,
        Dialect::Postgres => c.query_one("SELECT generation FROM cluster_changes", args![]).await?.get(0)?,
    };
    Ok(ChangeMark(mark))
}

/// The schema version of the database `c` is connected to.
async fn schema_version_of(c: &Conn<'_>) -> Result<i64> {
    match c.dialect() {
        Dialect::Sqlite => c.query_one("PRAGMA user_version", args![]).await?.get(0),
        Dialect::Postgres => {
            let exists: bool =
                c.query_one("SELECT to_regclass('keyturn_schema') IS NOT NULL", args![]).await?.get(0)?;
            if !exists {
                return Ok(0);
            }
            Ok(c.query_opt("SELECT version FROM keyturn_schema", args![])
                .await?
                .map(|r| r.get(0))
                .transpose()?
                .unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests;
