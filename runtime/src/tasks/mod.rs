//! Tasks: workflows of steps (tool calls, scripts in fresh sandboxes, custom kinds) run in
//! dependency order, with timeouts that stop guests, retries, cancellation, and a durable
//! history that survives a crash.
//!
//! * [`spec`] — the submitted task, validated at submit (ids, references, cycles, bounds).
//! * [`kinds`] — the [`Task`] trait for step kinds, and the built-in `call` and `script`.
//! * [`runner`] — runs one task.
//!
//! Their records live in [`crate::store::tasks`] (tasks, steps and every state change).
//!
//! Tasks belong to an owner (a tenant) and are only visible to it; each owner has a quota of
//! running and of stored tasks. The module knows registries, not tenants.

pub mod kinds;
mod lease;
pub mod runner;
pub mod spec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::Store;
pub use crate::store::tasks::{TaskRecord, TaskSummary};
pub use kinds::{Kinds, StepContext, StepFuture, Task};
pub use lease::Owners;
use runner::{Done, RunContext};
pub use spec::{SpecError, TaskSpec};

use crate::registry::Registry;

/// Whose task, with what quotas.
#[derive(Clone)]
pub struct Owner {
    pub id: String,
    pub registry: Arc<Registry>,
    /// Tasks running at once.
    pub max_running: usize,
    /// Tasks kept in the store, finished ones included.
    pub max_stored: usize,
    /// Bytes of step results the owner's kept tasks may hold.
    pub max_stored_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("no task with that id")]
    NotFound,
    #[error("the owner already keeps {0} tasks; delete finished ones first")]
    TooManyStored(usize),
    #[error("the owner's kept tasks already hold {0} bytes of results; delete finished ones first")]
    StoreFull(u64),
    #[error("the owner already runs {0} tasks")]
    TooManyRunning(usize),
    #[error("the task is {0}; only a task that did not succeed and is not running can be resumed")]
    NotResumable(String),
    #[error("the task already finished ({0})")]
    Finished(String),
    #[error("the task store failed")]
    Store(#[from] crate::store::StoreError),
    #[error("a task store read was lost")]
    Lost,
}

struct Running {
    owner: String,
    /// Which start this entry belongs to: a runner removes its own entry only.
    generation: u64,
    cancel: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// The server's tasks.
pub struct Service {
    store: Store,
    kinds: Kinds,
    running: Mutex<HashMap<String, Running>>,
    generations: std::sync::atomic::AtomicU64,
    /// How long a claim on a task lasts without a renewal.
    lease: Duration,
}

/// A running-table entry made by [`Service::reserve`], removed on drop unless started.
struct Reservation<'a> {
    service: &'a Service,
    id: Option<String>,
    generation: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.service.leave(&id, self.generation);
        }
    }
}

/// How long a cancel waits for the task's steps to stop and its states to be written.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

impl Service {
    /// The tasks of `store`, held by this node (the store's) under leases of `lease`. What a
    /// previous process of this node left unfinished is taken over by [`Service::tend`].
    pub fn open(store: Store, kinds: Kinds, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            kinds,
            running: Mutex::new(HashMap::new()),
            generations: std::sync::atomic::AtomicU64::new(0),
            lease,
        })
    }

    /// When a lease taken now ends.
    fn lease_until(&self) -> f64 {
        crate::store::now() + self.lease.as_secs_f64()
    }

    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters task `id` in the running table, if it is not running and the owner is under
    /// its quota, in one hold of the lock (so two requests cannot both pass the checks). The
    /// entry is removed again if the reservation is dropped unstarted.
    fn reserve<'a>(&'a self, owner: &Owner, id: &str) -> Result<Reservation<'a>, TaskError> {
        self.reserve_with(owner, id, true)
    }

    /// As [`Service::reserve`], past the owner's running quota: for a task taken over from
    /// a node that stopped, which the owner was already running.
    fn reserve_over_quota<'a>(
        &'a self,
        owner: &Owner,
        id: &str,
    ) -> Result<Reservation<'a>, TaskError> {
        self.reserve_with(owner, id, false)
    }

    fn reserve_with<'a>(
        &'a self,
        owner: &Owner,
        id: &str,
        enforce: bool,
    ) -> Result<Reservation<'a>, TaskError> {
        let mut running = self.running();
        if running.contains_key(id) {
            return Err(TaskError::NotResumable("running".into()));
        }
        if enforce && running.values().filter(|r| r.owner == owner.id).count() >= owner.max_running
        {
            return Err(TaskError::TooManyRunning(owner.max_running));
        }
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        running.insert(
            id.to_owned(),
            Running {
                owner: owner.id.clone(),
                generation,
                cancel: None,
                handle: None,
            },
        );
        Ok(Reservation {
            service: self,
            id: Some(id.to_owned()),
            generation,
        })
    }

    /// Refuses new work while the owner's kept results are over its byte quota.
    async fn check_bytes(&self, owner: &Owner) -> Result<(), TaskError> {
        if self.store.task_result_bytes(&owner.id).await? >= owner.max_stored_bytes {
            return Err(TaskError::StoreFull(owner.max_stored_bytes));
        }
        Ok(())
    }

    /// Removes `id`'s entry if it is still the one of `generation`.
    fn leave(&self, id: &str, generation: u64) {
        let mut running = self.running();
        if running.get(id).is_some_and(|r| r.generation == generation) {
            running.remove(id);
        }
    }

    /// Validates and starts a task (its JSON text); its id.
    pub async fn submit(self: &Arc<Self>, owner: &Owner, text: &str) -> Result<String, TaskError> {
        let spec = TaskSpec::parse(text, &self.kinds)?;
        if self.store.task_count(&owner.id).await? >= owner.max_stored {
            return Err(TaskError::TooManyStored(owner.max_stored));
        }
        // Running on every node together.
        if self.store.unfinished_tasks(&owner.id).await? >= owner.max_running {
            return Err(TaskError::TooManyRunning(owner.max_running));
        }
        self.check_bytes(owner).await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let reservation = self.reserve(owner, &id)?;
        let steps: Vec<(&str, &str)> = spec
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.kind.as_str()))
            .collect();
        self.store
            .insert_task(&id, &owner.id, &spec.name, text, &steps, self.lease_until())
            .await?;
        self.start(reservation, owner, spec, HashMap::new(), HashMap::new());
        Ok(id)
    }

    /// Runs `spec` (its steps in `done` are not run again; those in `used` have spent that
    /// many attempts).
    fn start(
        self: &Arc<Self>,
        mut reservation: Reservation<'_>,
        owner: &Owner,
        spec: TaskSpec,
        done: HashMap<String, Done>,
        used: HashMap<String, u32>,
    ) {
        let Some(id) = reservation.id.take() else {
            return;
        };
        let generation = reservation.generation;
        let (cancel, cancelled) = oneshot::channel();
        let ctx = Arc::new(RunContext {
            store: self.store.clone(),
            kinds: self.kinds.clone(),
            registry: Arc::clone(&owner.registry),
        });
        // Hold the table while spawning, so the task cannot finish (and leave) before its
        // entry holds the handle.
        let mut running = self.running();
        let service = Arc::clone(self);
        let task_id = id.clone();
        let handle = tokio::spawn(async move {
            runner::run(ctx, task_id.clone(), spec, done, used, cancelled).await;
            service.leave(&task_id, generation);
        });
        if let Some(entry) = running.get_mut(&id)
            && entry.generation == generation
        {
            entry.cancel = Some(cancel);
            entry.handle = Some(handle);
        }
    }

    /// The owner's task with its steps and history (read on the store's read pool, so a
    /// large one does not hold up state changes).
    pub async fn get(&self, owner: &str, id: &str) -> Result<TaskRecord, TaskError> {
        self.store.task(owner, id).await?.ok_or(TaskError::NotFound)
    }

    /// The owner's tasks, newest first.
    pub async fn list(
        &self,
        owner: &str,
        status: Option<&str>,
        limit: usize,
        cursor: Option<i64>,
    ) -> Result<(Vec<TaskSummary>, Option<i64>), TaskError> {
        Ok(self.store.tasks(owner, status, limit, cursor).await?)
    }

    /// The owner's running tasks.
    pub async fn active(&self, owner: &str) -> Result<Vec<TaskSummary>, TaskError> {
        let ids: Vec<String> = self
            .running()
            .iter()
            .filter(|(_, r)| r.owner == owner)
            .map(|(id, _)| id.clone())
            .collect();
        let mut tasks = Vec::new();
        for id in ids {
            if let Some(record) = self.store.task(owner, &id).await? {
                tasks.push(record.summary);
            }
        }
        tasks.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        Ok(tasks)
    }

    /// Cancels the owner's running task, stopping its steps, and waits until its states are
    /// written. The task as it ended.
    pub async fn cancel(&self, owner: &str, id: &str) -> Result<TaskRecord, TaskError> {
        let taken = {
            let mut running = self.running();
            match running.get_mut(id) {
                Some(r) if r.owner == owner => Some((r.cancel.take(), r.handle.take())),
                _ => None,
            }
        };
        let Some((cancel, handle)) = taken else {
            // Not running here: another node may run it.
            if self.store.request_cancel(owner, id).await? {
                return self.await_end(owner, id).await;
            }
            let record = self.get(owner, id).await?;
            return Err(TaskError::Finished(record.summary.status));
        };
        if let Some(cancel) = cancel {
            let _ = cancel.send(());
        }
        if let Some(handle) = handle {
            let _ = tokio::time::timeout(CANCEL_WAIT, handle).await;
        }
        self.get(owner, id).await
    }

    /// Cancels every running task of the owner (its tenant is being deleted), waiting for
    /// each to stop.
    pub async fn cancel_all(&self, owner: &str) {
        let ids: Vec<String> = self
            .running()
            .iter()
            .filter(|(_, r)| r.owner == owner)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let _ = self.cancel(owner, &id).await;
        }
    }

    /// Deletes the owner's finished task and its history (a running one is refused: cancel
    /// it first).
    pub async fn delete(&self, owner: &str, id: &str) -> Result<(), TaskError> {
        if self.running().get(id).is_some_and(|r| r.owner == owner) {
            return Err(TaskError::NotResumable("running".into()));
        }
        if self.store.delete_task(owner, id).await? {
            Ok(())
        } else {
            Err(TaskError::NotFound)
        }
    }

    /// Runs a task again that did not succeed (interrupted by a crash, failed, cancelled,
    /// timed out); steps that succeeded keep their results and are not run again.
    pub async fn resume(
        self: &Arc<Self>,
        owner: &Owner,
        id: &str,
    ) -> Result<TaskRecord, TaskError> {
        let record = self.get(&owner.id, id).await?;
        let status = record.summary.status.as_str();
        if status == "succeeded" || status == "pending" || status == "running" {
            return Err(TaskError::NotResumable(status.to_owned()));
        }
        self.check_bytes(owner).await?;
        let reservation = self.reserve(owner, id)?;
        let spec = TaskSpec::parse(&record.spec, &self.kinds)?;
        // Unfinished again, then claimed: of two nodes resuming it at once, one runs it.
        self.store.set_task(id, "pending", None).await?;
        if !self
            .store
            .claim_task(id, crate::store::now(), self.lease_until())
            .await?
        {
            return Err(TaskError::NotResumable("running on another node".into()));
        }
        let mut done = HashMap::new();
        for step in &record.steps {
            if step.status == "succeeded" {
                let result = step.result.clone().unwrap_or_else(crate::protocol::null);
                done.insert(step.id.clone(), Done::Succeeded(result));
            } else {
                self.store
                    .set_step(id, &step.id, "pending", step.attempts, None, None)
                    .await?;
            }
        }
        self.start(reservation, owner, spec, done, HashMap::new());
        self.get(&owner.id, id).await
    }
}
