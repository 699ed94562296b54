//! The SQLite backend: one writer connection and a few readers, each owned by a thread of its
//! own. Async callers hand a job to one of those threads and await its answer, so a
//! statement never runs on (or blocks) a thread of the async runtime.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{Conn, Result, StoreError, Work};

/// How many read connections (and threads) the backend keeps.
pub(super) const READERS: usize = 4;

/// Work for one of the connection threads. A job answers through a channel of its own.
type Job = Box<dyn FnOnce(&Mutex<Connection>) + Send>;

/// The threads and the queues to them. Dropping it waits until every thread has run what
/// was queued and closed its connection: the last connection to close checkpoints the WAL
/// into the database file, so a process that stops leaves one file behind.
pub(super) struct Threads {
    path: PathBuf,
    writer: Option<mpsc::Sender<Job>>,
    readers: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        // Closing a queue ends its threads: the readers first, then the writer, alone. SQLite
        // checkpoints and removes the WAL only when the connection closing sees no other.
        let here = std::thread::current().id();
        let join = |thread: std::thread::JoinHandle<()>| {
            // Never wait for the thread doing the dropping (a job that held the last handle).
            if thread.thread().id() != here {
                let _ = thread.join();
            }
        };
        let mut threads = std::mem::take(&mut self.threads).into_iter();
        let writer = threads.next();
        drop(self.readers.take());
        threads.for_each(join);
        drop(self.writer.take());
        writer.into_iter().for_each(join);
    }
}

impl Threads {
    /// Opens (creating if absent) the database at `path` and starts its threads.
    pub(super) fn open(path: &Path) -> Result<Threads> {
        if !path.exists() {
            create_private(path)?;
        }
        let mut threads = Vec::with_capacity(READERS + 1);
        let (writer, thread) = start_writer(open_connection(path)?)?;
        threads.push(thread);
        let (readers, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..READERS {
            threads.push(start_reader(open_connection(path)?, queue.clone())?);
        }
        Ok(Threads { path: path.to_owned(), writer: Some(writer), readers: Some(readers), threads })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `job` on the writer connection's thread and awaits what it returns.
    pub(super) async fn on_writer<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Mutex<Connection>) -> T + Send + 'static,
    ) -> Result<T> {
        run(self.writer.as_ref(), job).await
    }

    /// Runs `job` on the thread of a free read connection and awaits what it returns.
    pub(super) async fn on_reader<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Mutex<Connection>) -> T + Send + 'static,
    ) -> Result<T> {
        run(self.readers.as_ref(), job).await
    }
}

impl Threads {
    /// Runs database work on the writer connection's thread and awaits its result.
    pub(super) async fn work_on_writer<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        self.on_writer(move |conn| drive(conn, f)).await?
    }

    /// Runs database work on a free read connection's thread and awaits its result.
    pub(super) async fn work_on_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T> + Send + 'static,
    {
        self.on_reader(move |conn| drive(conn, f)).await?
    }
}

/// Runs `f`'s work on this thread, which owns `conn`. The work only awaits statements on
/// this very connection, which run at once: the local executor finishes it in one poll, and
/// no thread of the async runtime ever waits on the file.
fn drive<T, F>(conn: &Mutex<Connection>, f: F) -> Result<T>
where
    F: for<'c> FnOnce(&'c Conn<'c>) -> Work<'c, T>,
{
    let c = Conn::sqlite(conn);
    futures_executor::block_on(f(&c))
}

async fn run<T: Send + 'static>(
    queue: Option<&mpsc::Sender<Job>>,
    job: impl FnOnce(&Mutex<Connection>) -> T + Send + 'static,
) -> Result<T> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let stopped = || StoreError::Task("the database thread stopped".into());
    queue
        .ok_or_else(stopped)?
        .send(Box::new(move |conn| {
            // A caller that went away no longer needs the answer.
            let _ = answer.send(job(conn));
        }))
        .map_err(|_| stopped())?;
    answered.await.map_err(|_| stopped())
}

/// Starts the writer's thread: it owns `conn` and runs the jobs of its queue in order.
fn start_writer(conn: Connection) -> Result<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)> {
    let (sender, queue) = mpsc::channel::<Job>();
    let conn = Mutex::new(conn);
    let thread = std::thread::Builder::new()
        .name("keyturn-sqlite-w".into())
        .spawn(move || {
            while let Ok(job) = queue.recv() {
                job(&conn);
            }
        })
        .map_err(|e| StoreError::Task(format!("cannot start a database thread: {e}")))?;
    Ok((sender, thread))
}

/// Starts a reader's thread: it owns `conn` and takes jobs from the queue the readers share.
fn start_reader(conn: Connection, queue: Arc<Mutex<mpsc::Receiver<Job>>>) -> Result<std::thread::JoinHandle<()>> {
    let conn = Mutex::new(conn);
    std::thread::Builder::new()
        .name("keyturn-sqlite-r".into())
        .spawn(move || loop {
            let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
            match job {
                Ok(job) => job(&conn),
                Err(_) => break,
            }
        })
        .map_err(|e| StoreError::Task(format!("cannot start a database thread: {e}")))
}

/// Creates a new, empty database file readable by this user only (0600): the database and
/// every copy of it hold sealed keys and the audit log. SQLite gives the -wal and -shm files
/// the same mode.
pub(super) fn create_private(path: &Path) -> Result<()> {
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

/// Copies the database `src` is connected to into the new file `dest` with SQLite's online
/// backup API: consistent while other connections read and write.
pub(super) fn backup(src: &Connection, dest: &Path) -> Result<()> {
    if dest.exists() {
        return Err(StoreError::Create { path: dest.to_owned(), reason: "already exists; choose a new path".into() });
    }
    create_private(dest)?;
    let mut target = Connection::open(dest)?;
    rusqlite::backup::Backup::new(src, &mut target)
        .and_then(|b| b.run_to_completion(256, Duration::from_millis(5), None))?;
    target.execute_batch("PRAGMA journal_mode = WAL;")?;
    Ok(())
}
