//! All SQL lives under this module: the connection pool, the migrations embedded in the
//! binary, and one file per table family.
//!
//! SQLite work never runs on the async runtime's threads: [`Store::read`] and
//! [`Store::write`] hand the closure to `spawn_blocking`. Every write is one
//! `BEGIN IMMEDIATE` transaction (DESIGN.md invariant 5), so a state change and its audit
//! record commit together or not at all.

pub mod admins;
pub mod apikeys;
pub mod audit;
pub mod clients;
pub mod keys;
pub mod lease;
pub mod meta;
pub mod refresh;
pub mod revocations;
pub mod settings;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

/// Versioned migrations, applied in order; `PRAGMA user_version` records the last applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_keys.sql"),
    include_str!("migrations/0002_rotation.sql"),
    include_str!("migrations/0003_tokens.sql"),
    include_str!("migrations/0004_admins.sql"),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How many read connections the pool keeps.
const READERS: usize = 4;

pub use crate::error::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(Box::new(e))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection, as the table-family functions take it: reads, and grouped writes.
pub type Conn = Connection;

/// A write transaction, as the table-family functions take it.
pub type Tx<'a> = Transaction<'a>;

/// Where the database stood, as far as other processes' commits go. Two marks differ when
/// another process (the CLI, a second daemon) committed in between; this process's own
/// commits do not move it, since it already knows about them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeMark(i64);

/// The SQLite database: one writer connection and a few readers.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: tokio::sync::Semaphore,
    /// Jobs for the group committer (see [`Store::write_grouped`]).
    grouped: mpsc::Sender<GroupedJob>,
    /// Why the last write failed in the database itself (a full disk, an I/O error), until
    /// a write succeeds again: readiness reports it.
    write_failure: Mutex<Option<String>>,
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
}

/// A small write that may share a transaction with others: it runs in its own savepoint,
/// and its caller hears back only after the shared transaction committed.
struct GroupedJob {
    work: GroupedWork,
    done: Answer,
}

/// Whether `e` says the database's storage failed (full, unwritable, unreadable), as opposed
/// to a statement refused (a constraint, a lost race), which says nothing about the disk.
fn is_storage_failure(e: &StoreError) -> bool {
    use rusqlite::ErrorCode::{CannotOpen, DatabaseCorrupt, DiskFull, NotADatabase, ReadOnly, SystemIoFailure};
    let StoreError::Database(inner) = e else { return false };
    inner.downcast_ref::<rusqlite::Error>().and_then(rusqlite::Error::sqlite_error_code).is_some_and(|code| {
        matches!(code, DiskFull | SystemIoFailure | ReadOnly | CannotOpen | DatabaseCorrupt | NotADatabase)
    })
}

/// Where a grouped job's result goes. A oneshot channel serves async tasks and blocked
/// threads alike (a blocking caller drives the receiving future on its own thread).
type Answer = tokio::sync::oneshot::Sender<Result<()>>;

/// The write a grouped job does, inside its savepoint.
type GroupedWork = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

/// The most jobs one group transaction takes.
const GROUP_MAX: usize = 256;

/// The group committer: takes every waiting job, runs each in a savepoint of one
/// transaction, commits once, then answers each job. Stops when the store is dropped.
fn group_committer(inner: Weak<Inner>, jobs: mpsc::Receiver<GroupedJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { break };
        let mut conn = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut results: Vec<Result<()>> = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut works = Vec::with_capacity(batch.len());
            for job in &mut batch {
                works.push(std::mem::replace(&mut job.work, Box::new(|_| Ok(()))));
            }
            // Savepoints by cached statements: parsing SAVEPOINT and RELEASE for every token
            // showed in the profile of the issuance benchmark.
            let run = |sql: &str| -> Result<()> {
                tx.prepare_cached(sql)?.execute([])?;
                Ok(())
            };
            for work in works {
                run("SAVEPOINT grouped_job")?;
                let r = work(&tx);
                if r.is_err() {
                    // A failed job's writes are undone; the others stand.
                    run("ROLLBACK TO grouped_job")?;
                }
                run("RELEASE grouped_job")?;
                results.push(r);
            }
            tx.commit()?;
            Ok(())
        })();
        drop(conn);
        inner.note_write(&outcome);
        match outcome {
            Ok(()) => {
                // A caller that went away no longer needs its answer.
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.done.send(r);
                }
            }
            Err(e) => {
                let text = e.to_string();
                for job in batch {
                    let _ = job.done.send(Err(StoreError::Task(format!("group commit failed: {text}"))));
                }
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.inner.path.display())
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
    /// Opens (creating if absent) the database without migrating it.
    pub fn open(path: &Path) -> Result<Store> {
        if !path.exists() {
            create_private(path)?;
        }
        let writer = open_connection(path)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_connection(path)?);
        }
        let (sender, receiver) = mpsc::channel();
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(readers),
            reader_permits: tokio::sync::Semaphore::new(READERS),
            grouped: sender,
            write_failure: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("keyturn-commit".into())
            .spawn(move || group_committer(weak, receiver))
            .map_err(|e| StoreError::Task(format!("cannot start the group committer: {e}")))?;
        Ok(Store { inner })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version recorded in the file (0 for a new file).
    pub fn schema_version(&self) -> Result<i64> {
        self.read_blocking(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
    }

    /// Applies the migrations the file lacks, each in its own transaction.
    pub fn migrate(&self) -> Result<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                location: self.inner.path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            self.write_blocking(|tx| {
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", version)?;
                Ok(())
            })?;
            tracing::info!(version, "applied database migration");
        }
        Ok(())
    }

    /// Runs `f` on a read connection, on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self.inner.reader_permits.acquire().await.map_err(|e| StoreError::Task(e.to_string()))?;
        let inner = self.inner.clone();
        let out = tokio::task::spawn_blocking(move || {
            let conn = inner.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(conn) = conn else {
                return Err(StoreError::Task("no free reader".into()));
            };
            let result = f(&conn);
            inner.readers.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        drop(permit);
        out
    }

    /// Runs `f` inside one `BEGIN IMMEDIATE` transaction on the writer, on the blocking pool.
    /// The transaction commits when `f` returns `Ok` and rolls back otherwise.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_blocking(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// [`Store::read`] for callers outside the async runtime (start-up, the CLI).
    pub fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    }

    /// [`Store::write`] for callers outside the async runtime (start-up, the CLI).
    pub fn write_blocking<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        self.inner.note_write(&result);
        result
    }

    /// Why the database cannot take writes, if the last write failed in the database
    /// itself; `None` once a write succeeded.
    pub fn write_failure(&self) -> Option<String> {
        self.inner.write_failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs a small write that may share one transaction (and one fsync) with concurrent
    /// ones, each in its own savepoint. Resolves after the shared transaction committed, so
    /// the write is durable when this returns `Ok`. It waits without holding a thread (the
    /// committer thread wakes the waiting task directly).
    pub async fn write_grouped(&self, work: impl FnOnce(&Connection) -> Result<()> + Send + 'static) -> Result<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.submit_grouped(Box::new(work), done)?;
        answer.await.map_err(|_| StoreError::Task("the group committer stopped".into()))?
    }

    fn submit_grouped(&self, work: GroupedWork, done: Answer) -> Result<()> {
        self.inner
            .grouped
            .send(GroupedJob { work, done })
            .map_err(|_| StoreError::Task("the group committer stopped".into()))
    }

    /// [`Store::read`] on a reader connection, for callers already on a blocking thread.
    /// Falls back to the writer when every reader is busy.
    pub fn read_pooled_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.inner.readers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match conn {
            Some(conn) => {
                let result = f(&conn);
                self.inner.readers.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
                result
            }
            None => self.read_blocking(f),
        }
    }

    /// Copies the database to `dest` with SQLite's online backup API: consistent while
    /// other connections read and write. `dest` must not exist.
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            return Err(StoreError::Create {
                path: dest.to_owned(),
                reason: "already exists; choose a new path".into(),
            });
        }
        create_private(dest)?;
        let mut target = Connection::open(dest)?;
        self.read_pooled_blocking(|src| {
            let backup = rusqlite::backup::Backup::new(src, &mut target)?;
            backup.run_to_completion(256, Duration::from_millis(5), None)?;
            Ok(())
        })?;
        target.execute_batch("PRAGMA journal_mode = WAL;")?;
        Ok(())
    }

    /// Runs `f` like [`Store::read_blocking`] and returns, with its result, the mark of
    /// other processes' commits that the read saw.
    pub fn read_marked<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<(T, ChangeMark)> {
        // `data_version` is per connection, so every mark is read on the writer connection,
        // the one `read_blocking` uses.
        self.read_blocking(|c| {
            let mark = ChangeMark(c.query_row("PRAGMA data_version", [], |r| r.get(0))?);
            Ok((f(c)?, mark))
        })
    }

    /// Whether another process committed since `seen` was taken.
    pub fn changed_since(&self, seen: ChangeMark) -> Result<bool> {
        let ((), now) = self.read_marked(|_| Ok(()))?;
        Ok(now != seen)
    }

    /// Bytes this process may still write on the filesystem holding the database, when the
    /// filesystem says (`None` when it cannot be asked).
    pub fn free_bytes(&self) -> Option<u64> {
        let dir = self.inner.path.parent().unwrap_or(Path::new("."));
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ())?)).await
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
            store.read_blocking(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?)).expect("pragma");
        assert_eq!(journal, "wal");
        store.write_blocking(|tx| Ok(tx.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?)).expect("bump");
        assert!(matches!(store.migrate(), Err(StoreError::TooNew { .. })));
    }

    #[tokio::test]
    async fn failed_write_rolls_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.db")).expect("open");
        store.migrate().expect("migrate");
        let r: Result<()> = store
            .write(|tx| {
                tx.execute("INSERT INTO meta (name, value) VALUES ('a', x'01')", [])?;
                Err(StoreError::Conflict("test".into()))
            })
            .await;
        assert!(r.is_err());
        let n: i64 =
            store.read(|c| Ok(c.query_row("SELECT count(*) FROM meta", [], |r| r.get(0))?)).await.expect("count");
        assert_eq!(n, 0);
    }
}
