//! Asynchronous calls (`callAsync`): a bounded, expiring table of jobs per tenant, each
//! recorded in the store as it is accepted and as it ends.
//!
//! A job is accepted at once and runs as a task; its outcome is stored as the JSON the
//! client will read (already shaped by the HTTP layer, kept as raw text so big integers stay
//! exact). Cancelling a running job sends the registry's cancel signal, which stops the
//! guest mid-call. Finished jobs are kept for [`Jobs::ttl`] and then forgotten; the table
//! holds at most `max` jobs, running or finished, and refuses new ones past it. After a
//! restart, a job that was running reads `interrupted` (its call died with the process)
//! and finished ones keep their result until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::store::Store;
use crate::store::jobs::JobRecord;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// It was running when the server stopped.
    Interrupted,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "interrupted" => Self::Interrupted,
            _ => return None,
        })
    }
}

/// A job as a client sees it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub alias: String,
    pub function_name: String,
    pub status: JobStatus,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    pub finished_at: Option<f64>,
    /// The call's data on success, its error (`{code, message, details}`) on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<RawValue>>,
}

struct Entry {
    view: JobView,
    finished: Option<Instant>,
    cancel: Option<oneshot::Sender<()>>,
}

/// Why a job could not be accepted or found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("the job table is full")]
    Full(usize),
    #[error("no such job")]
    NotFound,
    #[error("the job could not be recorded")]
    Store,
    #[error("the job runs on another node")]
    Elsewhere,
}

pub struct Jobs {
    owner: String,
    max: usize,
    ttl: Duration,
    table: Mutex<HashMap<String, Entry>>,
    store: Store,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the store keeps of a job.
fn record(view: &JobView) -> JobRecord {
    JobRecord {
        id: view.job_id.clone(),
        alias: view.alias.clone(),
        function_name: view.function_name.clone(),
        status: view.status.as_str().to_owned(),
        created_at: view.created_at,
        finished_at: view.finished_at,
        result: view.result.as_ref().map(|r| r.get().to_owned()),
        error: view.error.as_ref().map(|e| e.get().to_owned()),
    }
}

impl Jobs {
    pub fn new(owner: &str, max: usize, ttl: Duration, store: Store) -> Self {
        Self {
            owner: owner.to_owned(),
            max,
            ttl,
            table: Mutex::new(HashMap::new()),
            store,
        }
    }

    /// Brings back the owner's recorded jobs that have not expired (the store marked those
    /// left running `interrupted` when it opened); expired ones are deleted.
    pub async fn restore(&self) {
        let cutoff = unix_now() - self.ttl.as_secs_f64();
        if let Err(err) = self.store.expire_jobs(&self.owner, cutoff).await {
            tracing::warn!(owner = %self.owner, cause = %err, "could not expire old jobs");
        }
        let records = match self.store.jobs(&self.owner).await {
            Ok(records) => records,
            Err(err) => {
                tracing::error!(owner = %self.owner, cause = %err, "could not read the jobs");
                return;
            }
        };
        let mut table = self.table();
        for record in records.into_iter().rev().take(self.max) {
            let Some(status) = JobStatus::parse(&record.status) else {
                continue;
            };
            let raw = |text: Option<String>| text.and_then(|t| RawValue::from_string(t).ok());
            let finished_at = record.finished_at.unwrap_or_else(unix_now);
            let age = Duration::from_secs_f64((unix_now() - finished_at).max(0.0));
            table.insert(
                record.id.clone(),
                Entry {
                    view: JobView {
                        job_id: record.id,
                        alias: record.alias,
                        function_name: record.function_name,
                        status,
                        created_at: record.created_at,
                        finished_at: Some(finished_at),
                        result: raw(record.result),
                        error: raw(record.error),
                    },
                    finished: Some(Instant::now().checked_sub(age).unwrap_or_else(Instant::now)),
                    cancel: None,
                },
            );
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a running job, recorded in the store first; returns its id and the
    /// receiver its call must watch.
    pub async fn start(
        &self,
        alias: &str,
        function_name: &str,
    ) -> Result<(String, oneshot::Receiver<()>), JobError> {
        let (id, cancelled, view) = self.enter(alias, function_name)?;
        if let Err(err) = self.store.insert_job(&self.owner, &record(&view)).await {
            self.table().remove(&id);
            tracing::error!(owner = %self.owner, cause = %err, "could not record a job");
            return Err(JobError::Store);
        }
        Ok((id, cancelled))
    }

    fn enter(
        &self,
        alias: &str,
        function_name: &str,
    ) -> Result<(String, oneshot::Receiver<()>, JobView), JobError> {
        let mut table = self.table();
        if table.len() >= self.max {
            let ttl = self.ttl;
            table.retain(|_, e| e.finished.is_none_or(|at| at.elapsed() < ttl));
            if table.len() >= self.max {
                return Err(JobError::Full(self.max));
            }
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (cancel, cancelled) = oneshot::channel();
        table.insert(
            id.clone(),
            Entry {
                view: JobView {
                    job_id: id.clone(),
                    alias: alias.to_owned(),
                    function_name: function_name.to_owned(),
                    status: JobStatus::Running,
                    created_at: unix_now(),
                    finished_at: None,
                    result: None,
                    error: None,
                },
                finished: None,
                cancel: Some(cancel),
            },
        );
        let view = table
            .get(&id)
            .map(|e| e.view.clone())
            .ok_or(JobError::NotFound)?;
        Ok((id, cancelled, view))
    }

    /// Records a job's end (unless it was cancelled or deleted meanwhile).
    pub async fn finish(&self, id: &str, outcome: Result<Box<RawValue>, Box<RawValue>>) {
        let Some(view) = self.settle(id, outcome) else {
            return;
        };
        if let Err(err) = self.store.finish_job(&record(&view)).await {
            tracing::error!(owner = %self.owner, cause = %err, "could not record a job's end");
        }
    }

    fn settle(&self, id: &str, outcome: Result<Box<RawValue>, Box<RawValue>>) -> Option<JobView> {
        let mut table = self.table();
        let entry = table.get_mut(id)?;
        if entry.view.status != JobStatus::Running {
            return None;
        }
        entry.finished = Some(Instant::now());
        entry.cancel = None;
        entry.view.finished_at = Some(unix_now());
        match outcome {
            Ok(result) => {
                entry.view.status = JobStatus::Succeeded;
                entry.view.result = Some(result);
            }
            Err(error) => {
                entry.view.status = JobStatus::Failed;
                entry.view.error = Some(error);
            }
        }
        Some(entry.view.clone())
    }

    /// The job, unless it expired: this node's, or one another node recorded (read from
    /// the store: a tenant's jobs move with it when its node stops).
    pub async fn get(&self, id: &str) -> Result<JobView, JobError> {
        match self.get_local(id) {
            Err(JobError::NotFound) => self.get_recorded(id).await,
            found => found,
        }
    }

    async fn get_recorded(&self, id: &str) -> Result<JobView, JobError> {
        let record = match self.store.job(&self.owner, id).await {
            Ok(Some(record)) => record,
            Ok(None) => return Err(JobError::NotFound),
            Err(err) => {
                tracing::error!(owner = %self.owner, cause = %err, "could not read a job");
                return Err(JobError::Store);
            }
        };
        let expired = record
            .finished_at
            .is_some_and(|at| unix_now() - at >= self.ttl.as_secs_f64());
        if expired {
            return Err(JobError::NotFound);
        }
        let raw = |text: Option<String>| text.and_then(|t| RawValue::from_string(t).ok());
        Ok(JobView {
            job_id: record.id,
            alias: record.alias,
            function_name: record.function_name,
            status: JobStatus::parse(&record.status).ok_or(JobError::Store)?,
            created_at: record.created_at,
            finished_at: record.finished_at,
            result: raw(record.result),
            error: raw(record.error),
        })
    }

    fn get_local(&self, id: &str) -> Result<JobView, JobError> {
        let mut table = self.table();
        let expired = table
            .get(id)
            .and_then(|e| e.finished)
            .is_some_and(|at| at.elapsed() >= self.ttl);
        if expired {
            table.remove(id);
        }
        table
            .get(id)
            .map(|e| e.view.clone())
            .ok_or(JobError::NotFound)
    }

    /// Cancels a running job (its guest is stopped) or forgets a finished one; recorded. A
    /// job another node runs cannot be cancelled here; one it finished is forgotten.
    pub async fn cancel(&self, id: &str) -> Result<JobView, JobError> {
        let (view, forgotten) = match self.cancel_now(id) {
            Err(JobError::NotFound) => {
                let view = self.get_recorded(id).await?;
                if view.status == JobStatus::Running {
                    return Err(JobError::Elsewhere);
                }
                (view, true)
            }
            other => other?,
        };
        let recorded = if forgotten {
            self.store.delete_job(&self.owner, id).await
        } else {
            self.store.finish_job(&record(&view)).await
        };
        if let Err(err) = recorded {
            tracing::error!(owner = %self.owner, cause = %err, "could not record a job's cancel");
        }
        Ok(view)
    }

    /// The job cancelled now, or forgotten (`true`) if it had finished.
    fn cancel_now(&self, id: &str) -> Result<(JobView, bool), JobError> {
        let mut table = self.table();
        let entry = table.get_mut(id).ok_or(JobError::NotFound)?;
        if entry.view.status == JobStatus::Running {
            if let Some(cancel) = entry.cancel.take() {
                let _ = cancel.send(());
            }
            entry.view.status = JobStatus::Cancelled;
            entry.view.finished_at = Some(unix_now());
            entry.finished = Some(Instant::now());
            return Ok((entry.view.clone(), false));
        }
        table
            .remove(id)
            .map(|e| (e.view, true))
            .ok_or(JobError::NotFound)
    }

    /// Jobs still running.
    pub fn running(&self) -> usize {
        self.table()
            .values()
            .filter(|e| e.view.status == JobStatus::Running)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&Location::Sqlite(dir.path().join("s.db")))
            .await
            .expect("store")
    }

    fn one() -> Box<RawValue> {
        RawValue::from_string("1".into()).expect("raw")
    }

    #[tokio::test]
    async fn bounded_and_expiring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = Jobs::new("o", 2, Duration::from_millis(0), store(&dir).await);
        let (a, _ca) = jobs.start("t", "f").await.expect("first");
        let (_b, _cb) = jobs.start("t", "f").await.expect("second");
        assert_eq!(
            jobs.start("t", "f").await.map(|_| ()),
            Err(JobError::Full(2))
        );
        jobs.finish(&a, Ok(one())).await;
        // finished with a zero TTL: swept to make room
        assert!(jobs.start("t", "f").await.is_ok());
        assert_eq!(jobs.get(&a).await.map(|_| ()), Err(JobError::NotFound));
    }

    #[tokio::test]
    async fn cancel_signals_and_sticks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = Jobs::new("o", 4, Duration::from_secs(60), store(&dir).await);
        let (id, mut cancelled) = jobs.start("t", "f").await.expect("start");
        let view = jobs.cancel(&id).await.expect("cancel");
        assert_eq!(view.status, JobStatus::Cancelled);
        assert!(cancelled.try_recv().is_ok());
        // a late finish does not overwrite the cancellation
        jobs.finish(&id, Ok(one())).await;
        assert_eq!(
            jobs.get(&id).await.expect("kept").status,
            JobStatus::Cancelled
        );
        // a second delete forgets it
        jobs.cancel(&id).await.expect("forget");
        assert_eq!(jobs.get(&id).await.map(|_| ()), Err(JobError::NotFound));
    }

    #[tokio::test]
    async fn a_restart_keeps_finished_jobs_and_interrupts_running_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = Jobs::new("o", 4, Duration::from_secs(60), store(&dir).await);
        let (done, _c1) = before.start("t", "f").await.expect("start");
        let (running, _c2) = before.start("t", "f").await.expect("start");
        before.finish(&done, Ok(one())).await;
        // A new process: the store marks what was running interrupted when it opens.
        let store = store(&dir).await;
        assert_eq!(
            store
                .interrupt_jobs(unix_now(), unix_now())
                .await
                .expect("interrupt"),
            1
        );
        let after = Jobs::new("o", 4, Duration::from_secs(60), store);
        after.restore().await;
        let view = after.get(&done).await.expect("finished job kept");
        assert_eq!(view.status, JobStatus::Succeeded);
        assert_eq!(
            view.result.map(|r| r.get().to_owned()).as_deref(),
            Some("1")
        );
        assert_eq!(
            after.get(&running).await.expect("kept").status,
            JobStatus::Interrupted
        );
        assert_eq!(after.running(), 0);
    }
}
