//! Wakes the lifecycle. Two jobs, each with one job to do:
//!
//! - the **rotation job**: tokio-cron-scheduler fires it at the rotation schedule's fire
//!   times (replaced whenever the policy's schedule changes) and it applies the scheduled
//!   rotation (`Keyturn::tick`);
//! - **housekeeping**: a plain interval, once a second, that follows other processes'
//!   changes, renews the rotator lease, and applies what falls due between fire times — an
//!   activation the publish lead deferred, a graceful rotation request, an expiry, a key
//!   whose certificate is ending — and prunes revocations (`Keyturn::housekeeping`). It
//!   leaves a just-fired scheduled rotation to the rotation job, and applies one only when
//!   the job missed it (with a warning), or when the schedule is one the cron scheduler
//!   cannot run (said once, as a warning, when the job is installed).
//!
//! Both decide with the service's clock; the scheduler only decides when to ask.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use uuid::Uuid;

use crate::service::rotation::{ScheduledRotations, TickReport};
use crate::service::Keyturn;

/// How often housekeeping runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// The running scheduler.
pub struct Scheduler {
    jobs: JobScheduler,
    follower: tokio::task::JoinHandle<()>,
    housekeeping: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// tokio-cron-scheduler wants a seconds field; a five-field expression fires at second 0.
fn with_seconds(expr: &str) -> String {
    if !expr.trim_start().starts_with('@') && expr.split_whitespace().count() == 5 {
        format!("0 {expr}")
    } else {
        expr.to_owned()
    }
}

/// Runs one lifecycle call as a task of its own (a panic in it is logged, not spread to the
/// scheduler) and logs its outcome.
async fn run(what: &'static str, call: impl Future<Output = crate::error::Result<TickReport>> + Send + 'static) {
    match tokio::spawn(call).await {
        Ok(Ok(report)) if !report.applied.is_empty() => {
            tracing::debug!(job = what, applied = report.applied.len(), "lifecycle transitions applied")
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(job = what, "lifecycle run failed: {e}"),
        Err(e) => tracing::error!(job = what, "lifecycle run panicked: {e}"),
    }
}

fn rotation_job(schedule: &str, service: Arc<Keyturn>) -> Result<Job, JobSchedulerError> {
    Job::new_async(schedule, move |_, _| {
        let service = service.clone();
        Box::pin(async move { run("rotation", async move { service.tick().await }).await })
    })
}

impl Scheduler {
    /// Starts the jobs for `service`.
    pub async fn start(service: Arc<Keyturn>) -> Result<Scheduler, JobSchedulerError> {
        let jobs = JobScheduler::new().await?;
        let installed = Arc::new(AtomicBool::new(false));
        let mut current = Self::add_rotation_job(&jobs, &service, &installed).await?;
        jobs.start().await?;

        // Follow schedule changes: replace the rotation job whenever the policy changes.
        let mut changes = service.keys().watch_policy();
        let (follower_jobs, follower_service, follower_installed) = (jobs.clone(), service.clone(), installed.clone());
        let follower = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if let Some(id) = current.take() {
                    let _ = follower_jobs.remove(&id).await;
                }
                match Self::add_rotation_job(&follower_jobs, &follower_service, &follower_installed).await {
                    Ok(id) => current = id,
                    Err(e) => tracing::error!("re-scheduling rotation failed: {e}"),
                }
            }
        });

        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        // Another node's change, announced (PostgreSQL): picked up at once instead of at the
        // next housekeeping run.
        let notices = service.change_notices();
        let housekeeping = tokio::spawn(async move {
            let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let heard = async {
                    match &notices {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = every.tick() => {}
                    () = heard => {
                        let s = service.clone();
                        run("reload", async move { s.reload_if_changed().await.map(|_| TickReport::default()) }).await;
                        continue;
                    }
                    _ = stopped.changed() => break,
                }
                let job = installed.load(Ordering::Acquire);
                let s = service.clone();
                let scheduled = if job { ScheduledRotations::LeftToTheJob } else { ScheduledRotations::AppliedHere };
                run("housekeeping", async move { s.housekeeping(scheduled).await }).await;
            }
        });
        Ok(Scheduler { jobs, follower, housekeeping, stop })
    }

    /// Installs the rotation job for the schedule in force. `installed` says whether one
    /// runs, so housekeeping applies scheduled rotations itself when none can.
    async fn add_rotation_job(
        jobs: &JobScheduler,
        service: &Arc<Keyturn>,
        installed: &AtomicBool,
    ) -> Result<Option<Uuid>, JobSchedulerError> {
        let expr = with_seconds(service.policy().schedule.as_str());
        match rotation_job(&expr, service.clone()) {
            Ok(job) => {
                let id = jobs.add(job).await?;
                installed.store(true, Ordering::Release);
                Ok(Some(id))
            }
            Err(e) => {
                installed.store(false, Ordering::Release);
                tracing::warn!(schedule = %expr, "the cron scheduler cannot run this expression ({e}); housekeeping applies its rotations instead, within a second of each fire time");
                Ok(None)
            }
        }
    }

    /// Stops every job, letting a housekeeping run in progress finish.
    pub async fn shutdown(mut self) {
        self.follower.abort();
        let _ = self.stop.send(true);
        let _ = (&mut self.housekeeping).await;
        if let Err(e) = self.jobs.shutdown().await {
            tracing::warn!("stopping the scheduler: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_seconds;

    #[test]
    fn five_fields_gain_a_seconds_field() {
        assert_eq!(with_seconds("0 0 * * MON"), "0 0 0 * * MON");
        assert_eq!(with_seconds("*/5 * * * * *"), "*/5 * * * * *");
        assert_eq!(with_seconds("@weekly"), "@weekly");
    }
}
