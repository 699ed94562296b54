//! Wakes the lifecycle: a cron job at the rotation schedule's fire times (following changes
//! to the schedule), and a housekeeping job every second that applies whatever else is due
//! (deferred activations, expiries), renews the rotator lease and picks up changes other
//! processes made to the database. Both call the same idempotent `Keyturn::tick`, which
//! decides with the service's clock; the scheduler only decides when to ask.

use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use uuid::Uuid;

use crate::service::Keyturn;

/// The running scheduler.
pub struct Scheduler {
    jobs: JobScheduler,
    follower: tokio::task::JoinHandle<()>,
}

/// tokio-cron-scheduler wants a seconds field; a five-field expression fires at second 0.
fn with_seconds(expr: &str) -> String {
    if !expr.trim_start().starts_with('@') && expr.split_whitespace().count() == 5 {
        format!("0 {expr}")
    } else {
        expr.to_owned()
    }
}

fn tick_job(schedule: &str, service: Arc<Keyturn>, what: &'static str) -> Result<Job, JobSchedulerError> {
    Job::new_async(schedule, move |_, _| {
        let service = service.clone();
        Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || service.tick()).await;
            match result {
                Ok(Ok(report)) if !report.applied.is_empty() => {
                    tracing::debug!(job = what, applied = report.applied.len(), "lifecycle tick")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(job = what, "lifecycle tick failed: {e}"),
                Err(e) => tracing::error!(job = what, "lifecycle tick panicked: {e}"),
            }
        })
    })
}

impl Scheduler {
    /// Starts the jobs for `service`.
    pub async fn start(service: Arc<Keyturn>) -> Result<Scheduler, JobSchedulerError> {
        let jobs = JobScheduler::new().await?;
        jobs.add(tick_job("* * * * * *", service.clone(), "housekeeping")?).await?;
        let mut current = Self::add_rotation_job(&jobs, &service).await?;
        jobs.start().await?;

        // Follow schedule changes: replace the cron job whenever the policy changes.
        let mut changes = service.watch_policy();
        let follower_jobs = jobs.clone();
        let follower = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if let Some(id) = current.take() {
                    let _ = follower_jobs.remove(&id).await;
                }
                match Self::add_rotation_job(&follower_jobs, &service).await {
                    Ok(id) => current = id,
                    Err(e) => tracing::error!("re-scheduling rotation failed: {e}"),
                }
            }
        });
        Ok(Scheduler { jobs, follower })
    }

    async fn add_rotation_job(jobs: &JobScheduler, service: &Arc<Keyturn>) -> Result<Option<Uuid>, JobSchedulerError> {
        let expr = with_seconds(service.policy().schedule.as_str());
        match tick_job(&expr, service.clone(), "rotation") {
            Ok(job) => Ok(Some(jobs.add(job).await?)),
            Err(e) => {
                // The housekeeping tick still applies rotations within a second of falling due.
                tracing::warn!(schedule = %expr, "the cron scheduler cannot run this expression ({e}); rotations are applied by the per-second tick");
                Ok(None)
            }
        }
    }

    /// Stops every job.
    pub async fn shutdown(mut self) {
        self.follower.abort();
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
