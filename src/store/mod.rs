//! All SQL lives under this module: the two backends (SQLite in a file, the embedded
//! default; PostgreSQL for a cluster of nodes), the migrations embedded in the binary for
//! each, and one file per table family, written once against [`sql::Conn`].
//!
//! Database work never runs on the async runtime's threads: [`Store::read`] and
//! [`Store::write`] hand the closure to `spawn_blocking`. Every write is one transaction
//! that commits alone (SQLite's `BEGIN IMMEDIATE`; on PostgreSQL a cluster-wide advisory
//! lock), so a state change and its audit record commit together or not at all, and a
//! decision read inside the transaction still holds when it commits.

pub mod admins;
pub mod apikeys;
pub mod audit;
pub mod clients;
pub mod copy;
pub mod keys;
pub mod lease;
pub mod meta;
pub mod postgres;
pub mod refresh;
pub mod revocations;
pub mod sessions;
pub mod settings;
pub mod signins;
pub mod sql;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

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
];
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_keys.sql"),
    include_str!("migrations/postgres/0002_rotation.sql"),
    include_str!("migrations/postgres/0003_tokens.sql"),
    include_str!("migrations/postgres/0004_admins.sql"),
    include_str!("migrations/postgres/0005_signins.sql"),
    include_str!("migrations/postgres/0006_signin_attempts.sql"),
    include_str!("migrations/postgres/0007_sessions.sql"),
];
const _: () = assert!(SQLITE_MIGRATIONS.len() == POSTGRES_MIGRATIONS.len());

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = SQLITE_MIGRATIONS.len() as i64;

/// How many read connections the SQLite pool keeps.
const READERS: usize = 4;

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
    reader_permits: tokio::sync::Semaphore,
    /// Jobs for the group committer (see [`Store::record_token`]).
    grouped: mpsc::Sender<GroupedJob>,
    /// Why the last write failed in the database itself (a full disk, an I/O error, a
    /// database that cannot be reached), until a write succeeds again: readiness reports it.
    write_failure: Mutex<Option<String>>,
    /// Woken when another node announces a change (PostgreSQL), once listening started.
    changes: OnceLock<Arc<tokio::sync::Notify>>,
    /// Keeps the change listener running while the store lives.
    alive: Arc<()>,
}

enum Backend {
    Sqlite { path: PathBuf, writer: Mutex<Connection>, readers: Mutex<Vec<Connection>> },
    Postgres(postgres::Pool),
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
    fn transact<T: Send>(&self, lock: Lock, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send) -> Result<T> {
        let result = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut conn = writer.lock().unwrap_or_else(PoisonError::into_inner);
                (|| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let out = f(&Conn::sqlite(&tx))?;
                    tx.commit()?;
                    Ok(out)
                })()
            }
            Backend::Postgres(pool) => off_runtime(|| {
                let mut session = pool.get()?;
                let result = {
                    let conn = Conn::postgres(&mut session);
                    (|| {
                        // One round trip: the transaction and its lock.
                        let take = match lock {
                            Lock::Exclusive => "pg_advisory_xact_lock",
                            Lock::Shared => "pg_advisory_xact_lock_shared",
                        };
                        conn.batch(&format!("BEGIN; SELECT {take}({})", postgres::WRITE_LOCK))?;
                        let out = f(&conn)?;
                        conn.batch("COMMIT")?;
                        Ok(out)
                    })()
                };
                if result.is_err() {
                    // A broken connection is dropped by the pool; a live one is left clean.
                    let _ = Conn::postgres(&mut session).batch("ROLLBACK");
                }
                result
            }),
        };
        self.note_write(&result);
        result
    }

    /// Runs `f` on a connection that sees one consistent state of the database.
    fn read_now<T: Send>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send) -> Result<T> {
        match &self.backend {
            Backend::Sqlite { writer, readers, .. } => {
                let pooled = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
                match pooled {
                    Some(conn) => {
                        let result = f(&Conn::sqlite(&conn));
                        readers.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
                        result
                    }
                    None => f(&Conn::sqlite(&writer.lock().unwrap_or_else(PoisonError::into_inner))),
                }
            }
            // Reads run statement by statement (one round trip each, no transaction): every
            // caller reads what it needs in one statement, or tolerates a change committed
            // between two (a change mark is read first, so a reload that saw newer rows than
            // its mark only reloads once more).
            Backend::Postgres(pool) => off_runtime(|| {
                let mut session = pool.get()?;
                f(&Conn::postgres(&mut session))
            }),
        }
    }
}

/// Runs `work` off the async runtime: a synchronous PostgreSQL client drives a small runtime
/// of its own, which cannot run on a thread already driving one (a caller that blocks on the
/// store from async code: shutdown, in-process tests). Everywhere else it runs in place.
fn off_runtime<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    std::thread::scope(|s| s.spawn(work).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// An answered token's recording, waiting for the group committer; its caller hears back
/// only after the shared transaction committed.
struct GroupedJob {
    recording: tokens::Recording,
    done: Answer,
}

/// Whether `e` says the database's storage failed (full, unwritable, unreadable,
/// unreachable), as opposed to a statement refused (a constraint, a lost race), which says
/// nothing about the database.
fn is_storage_failure(e: &StoreError) -> bool {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseCorrupt, DiskFull, NotADatabase, ReadOnly, SystemIoFailure};
    match e {
        StoreError::Unavailable(_) => true,
        StoreError::Database(inner) => {
            if let Some(code) = inner.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code) {
                return matches!(
                    code,
                    DiskFull | SystemIoFailure | ReadOnly | CannotOpen | DatabaseCorrupt | NotADatabase
                );
            }
            // PostgreSQL: class 53 (insufficient resources: disk full, out of memory), 57
            // (operator intervention: shutting down), 58 (system error: I/O).
            inner.downcast_ref::<::postgres::Error>().and_then(::postgres::Error::code).is_some_and(|code| {
                let class = &code.code()[..2];
                matches!(class, "53" | "57" | "58")
            })
        }
        _ => false,
    }
}

/// Where a grouped job's result goes. A oneshot channel serves async tasks and blocked
/// threads alike (a blocking caller drives the receiving future on its own thread).
type Answer = tokio::sync::oneshot::Sender<Result<()>>;

/// The most jobs one group transaction takes.
const GROUP_MAX: usize = 256;

/// A group committer: takes every waiting job, writes the batch in one transaction
/// ([`tokens::record_batch`]: a few statements for the whole batch), commits once, then
/// answers each job. When the batch's transaction fails, it is rolled back and, if it held
/// several jobs, run again job by job, each in a savepoint, so one job's failure does not
/// fail the others. Stops when the store is dropped.
fn group_committer(inner: Weak<Inner>, queue: mpsc::Receiver<GroupedJob>) {
    loop {
        let Ok(first) = queue.recv() else { break };
        let mut batch = vec![first];
        gather(&queue, &mut batch);
        let Some(inner) = inner.upgrade() else { break };
        let recordings: Vec<&tokens::Recording> = batch.iter().map(|job| &job.recording).collect();
        let mut outcome = inner.transact(Lock::Shared, |tx| tokens::record_batch(tx, &recordings));
        if recordings.len() > 1 && matches!(&outcome, Err(e) if !matches!(e, StoreError::Unavailable(_))) {
            outcome = inner.transact(Lock::Shared, |tx| {
                // Savepoints by cached statements: parsing SAVEPOINT and RELEASE for every
                // token showed in the profile of the issuance benchmark.
                let mut results = Vec::with_capacity(recordings.len());
                for recording in &recordings {
                    tx.execute("SAVEPOINT grouped_job", args![])?;
                    let r = tokens::record_batch(tx, &[recording]).and_then(|mut one| one.remove(0));
                    if r.is_err() {
                        // A failed job's writes are undone; the others stand.
                        tx.execute("ROLLBACK TO grouped_job", args![])?;
                    }
                    tx.execute("RELEASE grouped_job", args![])?;
                    results.push(r);
                }
                Ok(results)
            });
        }
        drop(inner);
        match outcome {
            Ok(results) => {
                // A caller that went away no longer needs its answer.
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.done.send(r);
                }
            }
            Err(e) => {
                let text = e.to_string();
                let unavailable = matches!(e, StoreError::Unavailable(_));
                for job in batch {
                    let e = if unavailable {
                        StoreError::Unavailable(text.clone())
                    } else {
                        StoreError::Task(format!("group commit failed: {text}"))
                    };
                    let _ = job.done.send(Err(e));
                }
            }
        }
    }
}

/// Adds the waiting jobs to `batch`, then lets every other runnable thread of the process
/// go first (`yield_now`) and takes what they queued meanwhile, until a turn adds nothing or
/// the batch is full. Where the committer shares a core with the request workers, this is
/// what makes batches large: without it, the committer woke at the first job and committed
/// the few the workers had finished, and each commit's fsync and page writes were shared by
/// fewer tokens. Where a core is free the yield returns at once and costs one system call.
fn gather(queue: &mpsc::Receiver<GroupedJob>, batch: &mut Vec<GroupedJob>) {
    while batch.len() < GROUP_MAX {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => {
                std::thread::yield_now();
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => return,
                }
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.location())
    }
}

/// Creates a new, empty database file readable by this user only (0600): the database and
/// every copy of it hold sealed keys and the audit log. SQLite gives the -wal and -shm files
/// the same mode.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| StoreError::Create { path: path.to_owned(), reason: e.to_string() })
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Room for every statement keyturn prepares, so none is parsed twice.
    conn.set_prepared_statement_cache_capacity(64);
    // secure_delete overwrites freed pages, so erased private-key ciphertext does not linger
    // in the file; foreign keys are off by default in SQLite.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if absent) the SQLite database at `path` without migrating it.
    pub fn open(path: &Path) -> Result<Store> {
        if !path.exists() {
            create_private(path)?;
        }
        let writer = open_connection(path)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_connection(path)?);
        }
        let backend =
            Backend::Sqlite { path: path.to_owned(), writer: Mutex::new(writer), readers: Mutex::new(readers) };
        Store::start(backend, READERS)
    }

    /// Opens the database at `location` without migrating it. A PostgreSQL server need not
    /// answer yet: every operation reports it unavailable until it does.
    pub fn open_at(location: &Location) -> Result<Store> {
        match location {
            Location::File(path) => Store::open(path),
            Location::Postgres(target) => Store::start(Backend::Postgres(postgres::Pool::open(target)?), 8),
        }
    }

    fn start(backend: Backend, readers: usize) -> Result<Store> {
        let (sender, receiver) = mpsc::channel();
        let inner = Arc::new(Inner {
            backend,
            reader_permits: tokio::sync::Semaphore::new(readers),
            grouped: sender,
            write_failure: Mutex::new(None),
            changes: OnceLock::new(),
            alive: Arc::new(()),
        });
        // One committer on either backend: while its batch commits, the next one gathers, and
        // a batch costs the same few statements whatever its size (several committers on
        // PostgreSQL made smaller batches and less throughput: see docs/BENCHMARKS.md).
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("keyturn-commit".into())
            .spawn(move || group_committer(weak, receiver))
            .map_err(|e| StoreError::Task(format!("cannot start the group committer: {e}")))?;
        Ok(Store { inner })
    }

    /// Where the database is, fit for logs (a password is never shown).
    pub fn location(&self) -> String {
        match &self.inner.backend {
            Backend::Sqlite { path, .. } => path.display().to_string(),
            Backend::Postgres(pool) => pool.target().shown.clone(),
        }
    }

    /// Which backend this is.
    pub fn dialect(&self) -> Dialect {
        match self.inner.backend {
            Backend::Sqlite { .. } => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The schema version recorded in the database (0 for a new one).
    pub fn schema_version(&self) -> Result<i64> {
        self.inner.read_now(schema_version_of)
    }

    /// Applies the migrations the database lacks, each in its own transaction, which also
    /// re-reads the version: nodes starting together apply each migration once.
    pub fn migrate(&self) -> Result<()> {
        let location = self.location();
        loop {
            let applied = self.write_blocking(|tx| {
                let found = schema_version_of(tx)?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::TooNew { location: location.clone(), found, supported: SCHEMA_VERSION });
                }
                if found == SCHEMA_VERSION {
                    return Ok(None);
                }
                let version = found + 1;
                match tx.dialect() {
                    Dialect::Sqlite => {
                        tx.batch(SQLITE_MIGRATIONS[found as usize])?;
                        tx.batch(&format!("PRAGMA user_version = {version}"))?;
                    }
                    Dialect::Postgres => {
                        tx.batch(POSTGRES_MIGRATIONS[found as usize])?;
                        tx.execute("UPDATE keyturn_schema SET version = ?1", args![version])?;
                    }
                }
                Ok(Some(version))
            })?;
            match applied {
                Some(version) => tracing::info!(version, "applied database migration"),
                None => return Ok(()),
            }
        }
    }

    /// Runs `f` on a read connection, on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<T> + Send + 'static,
    {
        let permit = self.inner.reader_permits.acquire().await.map_err(|e| StoreError::Task(e.to_string()))?;
        let inner = self.inner.clone();
        let out = tokio::task::spawn_blocking(move || inner.read_now(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        drop(permit);
        out
    }

    /// Runs `f` inside one write transaction, on the blocking pool. The transaction commits
    /// when `f` returns `Ok` and rolls back otherwise. Writes commit one at a time (on
    /// PostgreSQL, across every node), so what `f` reads still holds when it commits.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn<'_>) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_blocking(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// [`Store::read`] for callers outside the async runtime (start-up, the CLI).
    pub fn read_blocking<T: Send>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send) -> Result<T> {
        match &self.inner.backend {
            // The writer: it sees this process's latest commit, and marks are read on it.
            Backend::Sqlite { writer, .. } => f(&Conn::sqlite(&writer.lock().unwrap_or_else(PoisonError::into_inner))),
            Backend::Postgres(_) => self.inner.read_now(f),
        }
    }

    /// [`Store::write`] for callers outside the async runtime (start-up, the CLI).
    pub fn write_blocking<T: Send>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send) -> Result<T> {
        self.inner.transact(Lock::Exclusive, f)
    }

    /// Why the database cannot take writes, if the last write failed in the database
    /// itself; `None` once a write succeeded.
    pub fn write_failure(&self) -> Option<String> {
        self.inner.write_failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records an answered token: the write may share one transaction (and one fsync) with
    /// concurrent ones (see [`tokens::record_batch`]). Resolves after the shared transaction
    /// committed, so the record is durable when this returns `Ok`. It waits without holding a
    /// thread (the committer thread wakes the waiting task directly).
    pub async fn record_token(&self, recording: tokens::Recording) -> Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.inner
            .grouped
            .send(GroupedJob { recording, done })
            .map_err(|_| StoreError::Task("the group committer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Task("the group committer stopped".into()))?
    }

    /// [`Store::read`] on a pooled connection, for callers already on a blocking thread.
    pub fn read_pooled_blocking<T: Send>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send) -> Result<T> {
        self.inner.read_now(f)
    }

    /// Copies a SQLite database to `dest` with SQLite's online backup API: consistent while
    /// other connections read and write. `dest` must not exist.
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        let Backend::Sqlite { readers, writer, .. } = &self.inner.backend else {
            return Err(StoreError::Unsupported(
                "keyturn backup copies a SQLite database; back PostgreSQL up with pg_dump or its own tools".into(),
            ));
        };
        if dest.exists() {
            return Err(StoreError::Create {
                path: dest.to_owned(),
                reason: "already exists; choose a new path".into(),
            });
        }
        create_private(dest)?;
        let mut target = Connection::open(dest)?;
        let pooled = readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let result = {
            let guard;
            let src: &Connection = match &pooled {
                Some(c) => c,
                None => {
                    guard = writer.lock().unwrap_or_else(PoisonError::into_inner);
                    &guard
                }
            };
            rusqlite::backup::Backup::new(src, &mut target)
                .and_then(|b| b.run_to_completion(256, Duration::from_millis(5), None))
        };
        if let Some(c) = pooled {
            readers.lock().unwrap_or_else(PoisonError::into_inner).push(c);
        }
        result?;
        target.execute_batch("PRAGMA journal_mode = WAL;")?;
        Ok(())
    }

    /// Runs `f` like [`Store::read_blocking`] and returns, with its result, the mark of
    /// other processes' commits that the read saw.
    pub fn read_marked<T: Send>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send) -> Result<(T, ChangeMark)> {
        // SQLite: `data_version` is per connection, so every mark is read on the writer
        // connection, the one `read_blocking` uses. PostgreSQL: the generation the change
        // triggers count, read in the same snapshot as `f`.
        self.read_blocking(|c| {
            let mark = match c.dialect() {
                Dialect::Sqlite => c.query_one("PRAGMA data_version", args![])?.get(0)?,
                Dialect::Postgres => c.query_one("SELECT generation FROM cluster_changes", args![])?.get(0)?,
            };
            Ok((f(c)?, ChangeMark(mark)))
        })
    }

    /// Whether another process committed since `seen` was taken.
    pub fn changed_since(&self, seen: ChangeMark) -> Result<bool> {
        let ((), now) = self.read_marked(|_| Ok(()))?;
        Ok(now != seen)
    }

    /// Woken soon after another node commits a change to shared state (PostgreSQL, by
    /// LISTEN/NOTIFY); `None` for SQLite, where the periodic [`Store::changed_since`] check
    /// is all there is. Notifications can be lost (a dropped connection): they only make a
    /// change arrive sooner than the periodic check would.
    pub fn change_notices(&self) -> Option<Arc<tokio::sync::Notify>> {
        let Backend::Postgres(pool) = &self.inner.backend else { return None };
        let notify = self.inner.changes.get_or_init(|| {
            let notify = Arc::new(tokio::sync::Notify::new());
            let (target, wake, alive) = (pool.target().clone(), notify.clone(), Arc::downgrade(&self.inner.alive));
            let started = std::thread::Builder::new()
                .name("keyturn-listen".into())
                .spawn(move || postgres::listen(target, wake, alive));
            if let Err(e) = started {
                tracing::warn!("cannot start the change listener ({e}); changes arrive by the periodic check");
            }
            notify
        });
        Some(notify.clone())
    }

    /// Bytes this process may still write on the filesystem holding the database, when the
    /// filesystem says (`None` when it cannot be asked, or the database is a server).
    pub fn free_bytes(&self) -> Option<u64> {
        let Backend::Sqlite { path, .. } = &self.inner.backend else { return None };
        let dir = path.parent().unwrap_or(Path::new("."));
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_one("SELECT 1", args![]).map(drop)).await
    }
}

/// The schema version of the database `c` is connected to.
fn schema_version_of(c: &Conn<'_>) -> Result<i64> {
    match c.dialect() {
        Dialect::Sqlite => c.query_one("PRAGMA user_version", args![])?.get(0),
        Dialect::Postgres => {
            let exists: bool = c.query_one("SELECT to_regclass('keyturn_schema') IS NOT NULL", args![])?.get(0)?;
            if !exists {
                return Ok(0);
            }
            Ok(c.query_opt("SELECT version FROM keyturn_schema", args![])?.map(|r| r.get(0)).transpose()?.unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = Store::open(&path).expect("open");
        store.migrate().expect("migrate");
        store.migrate().expect("migrating again is a no-op");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        let journal: String =
            store.read_blocking(|c| c.query_one("PRAGMA journal_mode", args![])?.get(0)).expect("pragma");
        assert_eq!(journal, "wal");
        store.write_blocking(|tx| tx.batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))).expect("bump");
        assert!(matches!(store.migrate(), Err(StoreError::TooNew { .. })));
    }

    #[tokio::test]
    async fn failed_write_rolls_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        store.migrate().expect("migrate");
        let r: Result<()> = store
            .write(|tx| {
                tx.execute("INSERT INTO meta (name, value) VALUES ('a', x'01')", args![])?;
                Err(StoreError::Conflict("test".into()))
            })
            .await;
        assert!(r.is_err());
        let n: i64 = store.read(|c| c.query_one("SELECT count(*) FROM meta", args![])?.get(0)).await.expect("count");
        assert_eq!(n, 0);
    }

    /// A batch's recordings stand or fall one by one: a job whose key stopped signing, or
    /// whose refresh token an earlier job of the same batch spent, writes nothing; the
    /// others are recorded.
    #[tokio::test]
    async fn a_batch_refuses_only_its_bad_recordings() {
        use crate::clock::from_unix;
        use crate::keys::KeyId;
        use crate::records::TokenRecord;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        store.migrate().expect("migrate");
        store
            .write(|tx| {
                tx.batch(
                    "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private, created_at, published_at, not_after)
                     VALUES ('signs', 'ES256', 'active', '{}', x'00', 0, 0, 9999999999),
                            ('stopped', 'ES256', 'retired', '{}', x'00', 0, 0, 9999999999);
                     INSERT INTO refresh_tokens (token_hash, family, sub, aud, issued_at, expires_at)
                     VALUES (x'0102', 'f', 's', '[]', 0, 9999999999)",
                )
            })
            .await
            .expect("keys");
        let recording = |jti: &str, kid: &str, spends: Option<Vec<u8>>| tokens::Recording {
            spends,
            token: TokenRecord {
                jti: jti.into(),
                sub: "s".into(),
                kid: KeyId::new(kid),
                aud: vec!["api".into()],
                client_id: None,
                scope: None,
                iat: from_unix(10),
                exp: from_unix(100),
                issued_by: "test".into(),
                family: None,
            },
            refresh: None,
            session: None,
        };
        let batch = [
            recording("a", "signs", None),
            recording("b", "stopped", None),
            recording("c", "signs", Some(vec![1, 2])),
            recording("d", "signs", Some(vec![1, 2])),
        ];
        let outcomes =
            store.write(move |tx| tokens::record_batch(tx, &batch.iter().collect::<Vec<_>>())).await.expect("batch");
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(StoreError::KeyStoppedSigning(_))), "{outcomes:?}");
        assert!(matches!(outcomes[3], Err(StoreError::RefreshSpent)), "{outcomes:?}");
        let recorded: Vec<String> = store
            .read(|c| {
                c.query("SELECT jti FROM issued_tokens ORDER BY jti", args![])?.iter().map(|r| r.get(0)).collect()
            })
            .await
            .expect("records");
        assert_eq!(recorded, ["a", "c"]);
    }
}
