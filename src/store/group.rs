//! The group committer: answered tokens' records share one transaction (and one fsync)
//! with the others waiting at the same moment.

use std::sync::{Arc, Weak};

use super::{args, tokens, Bound, Inner, Lock, Pipelining, Result, StoreError};

/// An answered token's recording, waiting for the group committer; its caller hears back
/// only after the shared transaction committed.
pub(super) struct GroupedJob {
    pub(super) recording: tokens::Recording,
    pub(super) done: tokio::sync::oneshot::Sender<Result<()>>,
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
        let (recordings, answers): (Vec<tokens::Recording>, Vec<_>) =
            batch.into_iter().map(|job| (job.recording, job.done)).unzip();
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
