//! Asynchronous calls (`callAsync`): a bounded, expiring table of jobs per tenant.
//!
//! A job is accepted at once and runs as a task; its outcome is stored as the JSON the
//! client will read (already shaped by the HTTP layer, kept as raw text so big integers stay
//! exact). Cancelling a running job sends the registry's cancel signal, which stops the
//! guest mid-call. Finished jobs are kept for [`Jobs::ttl`] and then forgotten; the table
//! holds at most `max` jobs, running or finished, and refuses new ones past it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
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
}

pub struct Jobs {
    max: usize,
    ttl: Duration,
    table: Mutex<HashMap<String, Entry>>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Jobs {
    pub fn new(max: usize, ttl: Duration) -> Self {
        Self {
            max,
            ttl,
            table: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a running job; returns its id and the receiver its call must watch.
    pub fn start(
        &self,
        alias: &str,
        function_name: &str,
    ) -> Result<(String, oneshot::Receiver<()>), JobError> {
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
        Ok((id, cancelled))
    }

    /// Records a job's end (unless it was cancelled or deleted meanwhile).
    pub fn finish(&self, id: &str, outcome: Result<Box<RawValue>, Box<RawValue>>) {
        let mut table = self.table();
        let Some(entry) = table.get_mut(id) else {
            return;
        };
        if entry.view.status != JobStatus::Running {
            return;
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
    }

    /// The job, unless it expired.
    pub fn get(&self, id: &str) -> Result<JobView, JobError> {
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

    /// Cancels a running job (its guest is stopped) or forgets a finished one.
    pub fn cancel(&self, id: &str) -> Result<JobView, JobError> {
        let mut table = self.table();
        let entry = table.get_mut(id).ok_or(JobError::NotFound)?;
        if entry.view.status == JobStatus::Running {
            if let Some(cancel) = entry.cancel.take() {
                let _ = cancel.send(());
            }
            entry.view.status = JobStatus::Cancelled;
            entry.view.finished_at = Some(unix_now());
            entry.finished = Some(Instant::now());
            return Ok(entry.view.clone());
        }
        table.remove(id).map(|e| e.view).ok_or(JobError::NotFound)
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

    #[test]
    fn bounded_and_expiring() {
        let jobs = Jobs::new(2, Duration::from_millis(0));
        let (a, _ca) = jobs.start("t", "f").expect("first");
        let (_b, _cb) = jobs.start("t", "f").expect("second");
        assert_eq!(jobs.start("t", "f").map(|_| ()), Err(JobError::Full(2)));
        jobs.finish(&a, Ok(RawValue::from_string("1".into()).expect("raw")));
        // finished with a zero TTL: swept to make room
        assert!(jobs.start("t", "f").is_ok());
        assert_eq!(jobs.get(&a).map(|_| ()), Err(JobError::NotFound));
    }

    #[test]
    fn cancel_signals_and_sticks() {
        let jobs = Jobs::new(4, Duration::from_secs(60));
        let (id, mut cancelled) = jobs.start("t", "f").expect("start");
        let view = jobs.cancel(&id).expect("cancel");
        assert_eq!(view.status, JobStatus::Cancelled);
        assert!(cancelled.try_recv().is_ok());
        // a late finish does not overwrite the cancellation
        jobs.finish(&id, Ok(RawValue::from_string("1".into()).expect("raw")));
        assert_eq!(jobs.get(&id).expect("kept").status, JobStatus::Cancelled);
        // a second delete forgets it
        jobs.cancel(&id).expect("forget");
        assert_eq!(jobs.get(&id).map(|_| ()), Err(JobError::NotFound));
    }
}
