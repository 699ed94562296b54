//! How one unit of work runs on a connection: a transaction and how much of it is sent at
//! once, a pooled PostgreSQL connection that is given back only when its work ended, and
//! the deadline every PostgreSQL call is held to.

use super::{postgres, Conn, Result, StoreError, Work};

/// How much of a transaction is sent without waiting for answers (PostgreSQL).
///
/// One connection runs its statements in order, so a statement sent behind `BEGIN` and the
/// lock still runs inside the transaction and under the lock (in READ COMMITTED each
/// statement reads the database as it stands once the ones before it finished); if one
/// fails, the transaction is aborted and what follows fails with it (a `COMMIT` then rolls
/// back). Never on SQLite, where a `BEGIN IMMEDIATE` that finds the file busy leaves no
/// transaction, and a statement sent behind it would run (and commit) alone.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pipelining {
    /// Each step waits for the one before: SQLite.
    None,
    /// `f`'s first statement goes right behind `BEGIN` and the lock: one round trip less.
    First,
    /// `f` runs the one statement `sql`: `BEGIN`, the lock, it and `COMMIT` in one round trip.
    /// The statement is prepared first (once per connection), so that `f` sends it as soon
    /// as it is first polled, before `COMMIT` is sent; a statement still to be prepared
    /// would be sent only after the answer to its preparation, behind the `COMMIT`.
    Whole { sql: &'static str },
}

/// Runs `f` inside a transaction on `c` that `begin` opened: committed when `f` returns
/// `Ok`, rolled back otherwise (and when the commit itself fails). `pipelining`: see
/// [`Pipelining`].
pub(super) async fn in_transaction<'c, T, F>(c: &'c Conn<'c>, begin: &str, pipelining: Pipelining, f: F) -> Result<T>
where
    F: FnOnce(&'c Conn<'c>) -> Work<'c, T>,
{
    let result = match pipelining {
        Pipelining::None => match c.batch(begin).await {
            Ok(()) => match f(c).await {
                Ok(out) => c.batch("COMMIT").await.map(|()| out),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Pipelining::First => match futures_util::future::join(c.batch(begin), f(c)).await {
            (Ok(()), Ok(out)) => c.batch("COMMIT").await.map(|()| out),
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        },
        Pipelining::Whole { sql } => match c.prepare(sql).await {
            // `join3` polls the three in order: each sends its messages on its first poll.
            Ok(()) => match futures_util::future::join3(c.batch(begin), f(c), c.batch("COMMIT")).await {
                (Ok(()), Ok(out), Ok(())) => Ok(out),
                (Err(e), _, _) | (Ok(()), Err(e), _) | (Ok(()), Ok(_), Err(e)) => Err(e),
            },
            Err(e) => Err(e),
        },
    };
    if result.is_err() {
        // A broken connection is dropped by its owner; a live one is left clean.
        let _ = c.batch("ROLLBACK").await;
    }
    result
}

/// A pooled PostgreSQL connection in use. Given back to the pool only when its work ran to
/// the end: a caller that stopped waiting half-way through a transaction leaves it closed
/// (the server rolls it back), never handed to the next caller mid-transaction.
pub(super) struct InUse(pub(super) Option<deadpool_postgres::Object>);

impl InUse {
    pub(super) fn conn(&self) -> Conn<'_> {
        Conn::postgres(self.0.as_deref().expect("taken only on finish"))
    }

    pub(super) fn finish(mut self) {
        drop(self.0.take());
    }

    /// Ends the use with `result`: the connection goes back to the pool, unless its server
    /// refused a write as read-only (a standby, or a primary a failover demoted): then it is
    /// closed, with every idle one, and the caller hears "unavailable".
    pub(super) fn settle<T>(self, pool: &postgres::Pool, result: Result<T>) -> Result<T> {
        match result {
            Err(StoreError::ReadOnly(why)) => {
                drop(self);
                pool.forget_idle();
                tracing::warn!(
                    "PostgreSQL at {} is read-only ({why}): its connections are closed",
                    pool.target().shown
                );
                Err(StoreError::Unavailable(format!("the server is read-only: {why}")))
            }
            result => {
                self.finish();
                result
            }
        }
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some(unfinished) = self.0.take() {
            drop(deadpool_postgres::Object::take(unfinished));
        }
    }
}

/// Whether a PostgreSQL call is held to the deadline (`database_timeout`): every call is,
/// but the migrations and `db copy`, whose one transaction may rightly take long.
#[derive(Clone, Copy)]
pub(super) enum Bound {
    Deadline,
    None,
}

/// `work` (a call on `pool`'s database), or "unavailable" once the deadline has passed. A
/// connection the work held is then closed, not given back (see [`InUse`]).
pub(super) async fn within_deadline<T>(
    pool: &postgres::Pool,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let deadline = pool.target().deadline();
    tokio::time::timeout(deadline, work).await.unwrap_or_else(|_elapsed| {
        Err(StoreError::Unavailable(format!(
            "PostgreSQL at {} did not answer within {} ms (database_timeout)",
            pool.target().shown,
            deadline.as_millis()
        )))
    })
}
