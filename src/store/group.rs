//! The group committer: answered tokens' records share one transaction (and one fsync)
//! with the others waiting at the same moment; so do the replay cache's entries (a DPoP
//! proof's or a client assertion's `jti`, which must be committed before it is accepted).

use std::sync::{Arc, Weak};

use super::{args, tokens, Bound, Inner, Lock, Pipelining, Result, StoreError};

/// Work waiting for the group committer; its caller hears back only after the shared
/// transaction committed.
pub(super) enum GroupedJob {
    /// An answered token's recording.
    Token { recording: Box<tokens::Recording>, done: tokio::sync::oneshot::Sender<Result<()>> },
    /// A replay-cache entry; the answer is whether it was new ([`super::replay::first_use`]).
    Seen { seen: Seen, done: tokio::sync::oneshot::Sender<Result<bool>> },
}

/// A `jti` signed by the key `key` (a thumbprint, or a client), remembered until `until`.
pub(super) struct Seen {
    pub(super) key: String,
    pub(super) jti: String,
    pub(super) until: crate::clock::Instant,
}

/// The most jobs one group transaction takes.
const GROUP_MAX: usize = 256;

/// A group committer: takes every waiting job, writes the batch in one transaction
/// ([`tokens::record_batch`]: a few statements for the whole batch), commits once, then
/// answers each job. When the batch's transaction fails, it is rolled back and, if it held
/// several jobs, run again job by job, each in a savepoint, so one job's failure does not
/// fail the others. Stops when the store is dropped.
pub(super) async fn group_committer(inner: Weak<Inner>, mut queue: tokio::sync::mpsc::UnboundedReceiver<GroupedJob>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        gather(&mut queue, &mut batch).await;
        let Some(inner) = inner.upgrade() else { break };
        let (mut recordings, mut answers, mut seen) = (Vec::new(), Vec::new(), Vec::new());
        for job in batch {
            match job {
                GroupedJob::Token { recording, done } => {
                    recordings.push(*recording);
                    answers.push(done);
                }
                GroupedJob::Seen { seen: s, done } => seen.push((s, done)),
            }
        }
        if !seen.is_empty() {
            commit_seen(&inner, seen).await;
        }
        if recordings.is_empty() {
            continue;
        }
        let recordings = Arc::new(recordings);
        let all = recordings.clone();
        // A batch that is one statement goes in one round trip with its transaction.
        let one_statement = tokens::one_statement(inner.backend.dialect(), &recordings.iter().collect::<Vec<_>>());
        let pipelining =
            if one_statement { Pipelining::Whole { sql: tokens::RECORD_ACCESS_TOKENS } } else { Pipelining::First };
        let mut outcome = inner
            .transact_pipelined(Lock::Shared, pipelining, Bound::Deadline, move |tx| {
                Box::pin(async move { tokens::record_batch(tx, &all.iter().collect::<Vec<_>>()).await })
            })
            .await;
        if recordings.len() > 1 && matches!(&outcome, Err(e) if !matches!(e, StoreError::Unavailable(_))) {
            let each = recordings.clone();
            outcome = inner
                .transact(Lock::Shared, move |tx| {
                    Box::pin(async move {
                        // Savepoints by cached statements: parsing SAVEPOINT and RELEASE for
                        // every token showed in the profile of the issuance benchmark.
                        let mut results = Vec::with_capacity(each.len());
                        for recording in each.iter() {
                            tx.execute("SAVEPOINT grouped_job", args![]).await?;
                            let r = tokens::record_batch(tx, &[recording]).await.and_then(|mut one| one.remove(0));
                            if r.is_err() {
                                // A failed job's writes are undone; the others stand.
                                tx.execute("ROLLBACK TO grouped_job", args![]).await?;
                            }
                            tx.execute("RELEASE grouped_job", args![]).await?;
                            results.push(r);
                        }
                        Ok(results)
                    })
                })
                .await;
        }
        drop(inner);
        match outcome {
            Ok(results) => {
                // A caller that went away no longer needs its answer.
                for (done, r) in answers.into_iter().zip(results) {
                    let _ = done.send(r);
                }
            }
            Err(e) => {
                let text = e.to_string();
                let unavailable = matches!(e, StoreError::Unavailable(_));
                for done in answers {
                    let e = if unavailable {
                        StoreError::Unavailable(text.clone())
                    } else {
                        StoreError::Task(format!("group commit failed: {text}"))
                    };
                    let _ = done.send(Err(e));
                }
            }
        }
    }
}

/// Writes a batch of replay-cache entries in one transaction and tells each whether it was
/// new (an entry seen before, by any node, is not). On a failure every caller hears it.
async fn commit_seen(inner: &Inner, batch: Vec<(Seen, tokio::sync::oneshot::Sender<Result<bool>>)>) {
    let (entries, answers): (Vec<Seen>, Vec<_>) = batch.into_iter().unzip();
    let entries = Arc::new(entries);
    let outcome = inner
        .transact(Lock::Shared, move |tx| {
            Box::pin(async move {
                let mut firsts = Vec::with_capacity(entries.len());
                for e in entries.iter() {
                    firsts.push(super::replay::first_use(tx, &e.key, &e.jti, e.until).await?);
                }
                Ok(firsts)
            })
        })
        .await;
    match outcome {
        Ok(firsts) => {
            for (done, first) in answers.into_iter().zip(firsts) {
                let _ = done.send(Ok(first));
            }
        }
        Err(e) => {
            let unavailable = matches!(e, StoreError::Unavailable(_));
            let text = e.to_string();
            for done in answers {
                let _ = done.send(Err(if unavailable {
                    StoreError::Unavailable(text.clone())
                } else {
                    StoreError::Task(format!("group commit failed: {text}"))
                }));
            }
        }
    }
}

/// Adds the waiting jobs to `batch`, then lets every other runnable thread of the process go
/// first (`yield_now`: the committer has a thread of its own) and takes what they queued
/// meanwhile, until a turn adds nothing or the batch is full. Where the committer shares a
/// core with the request handlers, this is what makes batches large: without it, the
/// committer woke at the first job and committed the few the handlers had finished, and
/// each commit's fsync and page writes were shared by fewer tokens.
async fn gather(queue: &mut tokio::sync::mpsc::UnboundedReceiver<GroupedJob>, batch: &mut Vec<GroupedJob>) {
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
