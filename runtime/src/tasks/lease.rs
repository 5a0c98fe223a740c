//! Tasks across nodes: a task is held by one node at a time under a lease the node renews
//! ([`Service::tend`], every third of the lease). When a node dies its leases run out and
//! another node takes its tasks over ([`Service::takeover`]): the steps that succeeded keep
//! their results and are not run again; a step that was running spent that attempt, and runs
//! again if its retries allow it, else the task ends `interrupted` (resumable). A node that
//! restarts takes over what its previous process held at once. A cancel sent to another
//! node than the one running the task reaches it through the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::runner::Done;
use super::{CANCEL_WAIT, Owner, Service, TaskError, TaskRecord, TaskSpec};

/// Finds a task's owner by id (the tenants; tasks know owners, not tenants).
pub trait Owners: Send + Sync {
    fn owner(&self, id: &str) -> Option<Owner>;
}

/// Most orphaned tasks looked at in one round.
const ORPHANS_PER_ROUND: i64 = 32;

impl Service {
    /// One round of this node's care for its tasks: renew its leases; stop the tasks a
    /// client cancelled through another node; take over tasks whose node is gone. Also
    /// stops every local task once the store has been out of reach for a whole lease (other
    /// nodes may then be running them).
    pub async fn tend(self: &Arc<Self>, owners: &dyn Owners, last_renewed: &mut Instant) {
        let store = &self.store;
        match store.renew_leases(self.lease_until()).await {
            Ok(_) => *last_renewed = Instant::now(),
            Err(err) => {
                tracing::warn!(cause = %err, "could not renew the task leases");
                if last_renewed.elapsed() >= self.lease {
                    self.stop_all("the store was out of reach for a whole lease");
                }
                return;
            }
        }
        match store.cancel_requests().await {
            Ok(ids) => {
                for id in ids {
                    self.cancel_local(&id);
                }
            }
            Err(err) => tracing::warn!(cause = %err, "could not read the cancel requests"),
        }
        let orphans = match store
            .orphaned_tasks(crate::store::now(), ORPHANS_PER_ROUND)
            .await
        {
            Ok(orphans) => orphans,
            Err(err) => {
                tracing::warn!(cause = %err, "could not look for orphaned tasks");
                return;
            }
        };
        for orphan in orphans {
            if self.running().contains_key(&orphan.id) {
                continue;
            }
            let Some(owner) = owners.owner(&orphan.owner) else {
                continue; // a tenant this node does not know (yet)
            };
            if let Err(err) = self.takeover(&owner, &orphan.id).await {
                tracing::warn!(task = %orphan.id, cause = %err, "could not take a task over");
            }
        }
    }

    /// Claims the owner's task `id`, whose runner is gone, and runs it on from where it was.
    pub async fn takeover(self: &Arc<Self>, owner: &Owner, id: &str) -> Result<(), TaskError> {
        let reservation = self.reserve(owner, id).or_else(|err| match err {
            // Over the owner's running quota here: the task is the owner's already.
            TaskError::TooManyRunning(_) => self.reserve_over_quota(owner, id),
            other => Err(other),
        })?;
        let now = crate::store::now();
        if !self.store.claim_task(id, now, self.lease_until()).await? {
            return Ok(()); // another node was quicker
        }
        let record = self.get(&owner.id, id).await?;
        let spec = TaskSpec::parse(&record.spec, &self.kinds)?;
        let (done, used, lost) = self.settle(id, &record, &spec).await?;
        if let Some(step) = lost {
            tracing::warn!(task = %id, step = %step, "a step was running on a node that stopped; no retries left");
            self.store
                .set_task(
                    id,
                    "interrupted",
                    Some("the node running the task stopped, and the step had no retries left"),
                )
                .await?;
            return Ok(());
        }
        tracing::info!(task = %id, "task taken over from a node that stopped");
        self.store.set_task(id, "pending", None).await?;
        self.start(reservation, owner, spec, done, used);
        Ok(())
    }

    /// Reads where a taken-over task was: its succeeded steps, the attempts each other step
    /// spent, and the first step that was running and has no attempt left (which ends the
    /// task). The running steps' attempts are recorded as interrupted.
    async fn settle(
        &self,
        id: &str,
        record: &TaskRecord,
        spec: &TaskSpec,
    ) -> Result<(HashMap<String, Done>, HashMap<String, u32>, Option<String>), TaskError> {
        let mut done = HashMap::new();
        let mut used = HashMap::new();
        let mut lost = None;
        for step in &record.steps {
            match step.status.as_str() {
                "succeeded" => {
                    let result = step.result.clone().unwrap_or_else(crate::protocol::null);
                    done.insert(step.id.clone(), Done::Succeeded(result));
                }
                "running" | "retrying" => {
                    let retries = spec.step(&step.id).map_or(0, |s| s.retries);
                    let left = step.attempts <= retries;
                    let status = if left { "pending" } else { "interrupted" };
                    let error = "the node running the step stopped";
                    self.store
                        .set_step(
                            id,
                            &step.id,
                            "interrupted",
                            step.attempts,
                            None,
                            Some(error),
                        )
                        .await?;
                    if left {
                        self.store
                            .set_step(id, &step.id, status, step.attempts, None, None)
                            .await?;
                        used.insert(step.id.clone(), step.attempts);
                    } else if !spec.step(&step.id).is_some_and(|s| s.optional) {
                        lost.get_or_insert_with(|| step.id.clone());
                    } else {
                        done.insert(step.id.clone(), Done::FailedOptional);
                    }
                }
                _ => {
                    used.insert(step.id.clone(), step.attempts);
                }
            }
        }
        Ok((done, used, lost))
    }

    /// Waits until the owner's task (cancelled through the store, on the node that runs it)
    /// has ended.
    pub(super) async fn await_end(&self, owner: &str, id: &str) -> Result<TaskRecord, TaskError> {
        let started = Instant::now();
        loop {
            let record = self.get(owner, id).await?;
            let status = record.summary.status.as_str();
            if crate::store::tasks::FINISHED.contains(&status) || started.elapsed() >= CANCEL_WAIT {
                return Ok(record);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Cancels a task this node runs, without waiting.
    fn cancel_local(&self, id: &str) {
        if let Some(running) = self.running().get_mut(id)
            && let Some(cancel) = running.cancel.take()
        {
            let _ = cancel.send(());
        }
    }

    /// Stops every task this node runs (their leases may be another node's by now).
    fn stop_all(&self, why: &str) {
        let ids: Vec<String> = self.running().keys().cloned().collect();
        if !ids.is_empty() {
            tracing::error!(tasks = ids.len(), why, "stopping this node's tasks");
        }
        for id in ids {
            self.cancel_local(&id);
        }
    }
}
