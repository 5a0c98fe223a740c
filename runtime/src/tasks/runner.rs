//! Runs one task: steps in dependency order, independent ones in parallel up to
//! `max_concurrency`, each attempt bounded by its step's timeout within the task's; retries
//! with exponential backoff; every state change written to the store as it happens.
//!
//! Stopping is real: a step's time limit is handed to the sandbox as the call's deadline, and
//! on cancel, on the task's timeout or on a required step's failure the runner drops the
//! running steps' futures, which stops their guests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::kinds::{Kinds, StepContext};
use super::spec::{StepSpec, TaskSpec, Unresolved, resolve};
use crate::registry::Registry;
use crate::store::Store;

/// The largest step result kept; a larger one fails the step.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// The most JSON text one step's inputs may make the host parse while resolving them.
const MAX_RESOLVE_BYTES: usize = 16 << 20;
/// Extra time past a step's limit before the runner gives up on a step kind that ignores it.
const GRACE: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a finished step left for the steps after it.
#[derive(Debug, Clone)]
pub enum Done {
    Succeeded(Box<RawValue>),
    /// An optional step that failed: its dependents run, its result reads as `null`.
    FailedOptional,
}

/// What the runner needs.
pub struct RunContext {
    pub store: Store,
    pub kinds: Kinds,
    pub registry: Arc<Registry>,
}

impl RunContext {
    async fn record_step(
        &self,
        task: &str,
        step: &str,
        status: &str,
        attempt: u32,
        result: Option<&RawValue>,
        error: Option<&str>,
    ) {
        if let Err(err) = self
            .store
            .set_step(task, step, status, attempt, result, error)
            .await
        {
            tracing::error!(task, step, cause = %err, "could not record a step's state");
        }
    }

    async fn record_task(&self, task: &str, status: &str, error: Option<&str>) {
        if let Err(err) = self.store.set_task(task, status, error).await {
            tracing::error!(task, cause = %err, "could not record a task's state");
        }
    }
}

/// How the task ended.
enum End {
    Succeeded,
    Failed(String),
    Cancelled,
    TimedOut,
}

/// Runs `spec` as task `id`; steps in `done` are not run again, and a step in `used` has
/// spent that many of its attempts already (a task taken over from a node that died).
pub async fn run(
    ctx: Arc<RunContext>,
    id: String,
    spec: TaskSpec,
    mut done: HashMap<String, Done>,
    used: HashMap<String, u32>,
    mut cancel: oneshot::Receiver<()>,
) {
    ctx.record_task(&id, "running", None).await;
    let deadline = Instant::now() + Duration::from_millis(spec.timeout_ms);
    let mut pending: BTreeSet<String> = spec
        .steps
        .iter()
        .map(|s| s.id.clone())
        .filter(|s| !done.contains_key(s))
        .collect();
    let mut running: JoinSet<(String, Result<Box<RawValue>, String>)> = JoinSet::new();
    let mut running_ids: BTreeSet<String> = BTreeSet::new();
    let end = loop {
        // start every ready step, in submit order, up to the concurrency limit
        for step in &spec.steps {
            if running.len() >= spec.max_concurrency {
                break;
            }
            if !pending.contains(&step.id) || !step.depends_on.iter().all(|d| done.contains_key(d))
            {
                continue;
            }
            pending.remove(&step.id);
            running_ids.insert(step.id.clone());
            let inputs = match resolve_inputs(step, &done) {
                Ok(inputs) => inputs,
                Err(error) => {
                    let (ctx, id, step) = (Arc::clone(&ctx), id.clone(), step.id.clone());
                    running.spawn(async move {
                        ctx.record_step(&id, &step, "running", 1, None, None).await;
                        ctx.record_step(&id, &step, "failed", 1, None, Some(&error))
                            .await;
                        (step, Err(error))
                    });
                    continue;
                }
            };
            running.spawn(attempts(
                Arc::clone(&ctx),
                id.clone(),
                step.clone(),
                inputs,
                deadline,
                used.get(&step.id).copied().unwrap_or(0),
            ));
        }
        if running.is_empty() {
            break End::Succeeded;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (step_id, outcome) = match joined {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::error!(task = %id, cause = %err, "a step panicked");
                        break End::Failed("a step panicked".into());
                    }
                };
                running_ids.remove(&step_id);
                let optional = spec.step(&step_id).is_some_and(|s| s.optional);
                match outcome {
                    Ok(result) => {
                        done.insert(step_id, Done::Succeeded(result));
                    }
                    Err(_) if optional => {
                        done.insert(step_id, Done::FailedOptional);
                    }
                    Err(error) => break End::Failed(format!("step {step_id:?} failed: {error}")),
                }
            }
            () = tokio::time::sleep_until(deadline) => break End::TimedOut,
            _ = &mut cancel => break End::Cancelled,
        }
    };
    // Dropping the running steps stops their guests. A step that finished meanwhile has
    // recorded its own end: it is not overwritten.
    running.abort_all();
    while let Some(joined) = running.join_next().await {
        if let Ok((step_id, _)) = joined {
            running_ids.remove(&step_id);
        }
    }
    let (task_status, step_status, error) = match &end {
        End::Succeeded => ("succeeded", "cancelled", None),
        End::Failed(error) => ("failed", "cancelled", Some(error.as_str())),
        End::Cancelled => ("cancelled", "cancelled", Some("cancelled by the client")),
        End::TimedOut => (
            "timed_out",
            "timed_out",
            Some("the task passed its timeout_ms"),
        ),
    };
    for step in &running_ids {
        ctx.record_step(&id, step, step_status, 0, None, error)
            .await;
    }
    for step in &pending {
        ctx.record_step(&id, step, "skipped", 0, None, None).await;
    }
    ctx.record_task(&id, task_status, error).await;
}

/// The step's inputs from the results it depends on.
fn resolve_inputs(
    step: &StepSpec,
    done: &HashMap<String, Done>,
) -> Result<BTreeMap<String, Box<RawValue>>, String> {
    let mut inputs = BTreeMap::new();
    let mut budget = MAX_RESOLVE_BYTES;
    for (name, reference) in &step.inputs {
        let value = match done.get(&reference.step) {
            Some(Done::Succeeded(result)) => resolve(result, &reference.path, &mut budget)
                .map_err(|why| match why {
                    Unresolved::Missing => format!(
                        "input {name:?}: the result of step {:?} has no {:?}",
                        reference.step,
                        reference.path.join(".")
                    ),
                    Unresolved::TooCostly => format!(
                        "the inputs would parse more than {MAX_RESOLVE_BYTES} bytes of earlier \
                         results; pass smaller parts"
                    ),
                })?,
            _ => crate::protocol::null(),
        };
        inputs.insert(name.clone(), value);
    }
    Ok(inputs)
}

/// Runs a step's attempts until one succeeds or none are left (`spent` were made before).
async fn attempts(
    ctx: Arc<RunContext>,
    task: String,
    step: StepSpec,
    inputs: BTreeMap<String, Box<RawValue>>,
    deadline: Instant,
    spent: u32,
) -> (String, Result<Box<RawValue>, String>) {
    let Some(kind) = ctx.kinds.get(&step.kind).cloned() else {
        return (
            step.id.clone(),
            Err(format!("unknown kind {:?}", step.kind)),
        );
    };
    let mut attempt = spent;
    loop {
        attempt += 1;
        ctx.record_step(&task, &step.id, "running", attempt, None, None)
            .await;
        let left = deadline.saturating_duration_since(Instant::now());
        let within = step
            .timeout_ms
            .map_or(left, |ms| Duration::from_millis(ms).min(left));
        let run = kind.run(StepContext {
            registry: &ctx.registry,
            params: &step.params,
            inputs: &inputs,
            within,
        });
        let outcome = match tokio::time::timeout(within + GRACE, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err("the step passed its timeout".to_owned()),
        }
        .and_then(|result| {
            if result.get().len() > MAX_RESULT_BYTES {
                Err(format!(
                    "the result is larger than {MAX_RESULT_BYTES} bytes"
                ))
            } else {
                Ok(result)
            }
        });
        match outcome {
            Ok(result) => {
                ctx.record_step(&task, &step.id, "succeeded", attempt, Some(&result), None)
                    .await;
                return (step.id, Ok(result));
            }
            Err(error) if attempt <= step.retries => {
                ctx.record_step(&task, &step.id, "retrying", attempt, None, Some(&error))
                    .await;
                let factor = 1u32 << (attempt - 1).min(16);
                let wait = Duration::from_millis(step.retry_backoff_ms)
                    .saturating_mul(factor)
                    .min(MAX_BACKOFF);
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                ctx.record_step(&task, &step.id, "failed", attempt, None, Some(&error))
                    .await;
                return (step.id, Err(error));
            }
        }
    }
}
