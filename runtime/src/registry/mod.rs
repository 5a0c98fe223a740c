//! Loaded tools: alias -> one persistent sandboxed instance behind a bounded queue.
//!
//! Each tool has an actor task that owns its instance and takes jobs one at a time, so calls
//! to one alias are serialised and calls to different aliases run in parallel. When a call
//! faults (fuel, deadline, output cap, a trap) the actor answers, drops the instance and
//! spawns a fresh one from the snapshot; the answer says the tool's state was reset.
//!
//! An in-flight call holds an `Arc<Tool>`, so unloading a tool lets calls already accepted
//! finish (each is bounded by its deadline) before the instance goes.

mod names;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::protocol::GuestError;
use crate::sandbox::{
    Fault, Instance, LimitError, LimitOverrides, Limits, Outcome, Sandbox, SpawnError,
};
pub use names::{NameError, check_alias, check_function, check_script};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no tool is loaded under that alias")]
    NotFound,
    #[error("no script of that name")]
    ScriptNotFound,
    #[error("a tool is already loaded under that alias")]
    AliasExists,
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("{0}")]
    Limits(#[from] LimitError),
    #[error("the server already has its maximum of {0} tools loaded")]
    TooManyTools(usize),
    #[error("the tool's queue is full")]
    Busy,
    #[error("the tool was unloaded while the call waited")]
    Unloaded,
    #[error("the tool script failed to import")]
    LoadFailed(GuestError),
    #[error("the tool could not start: {0}")]
    StartFaulted(Fault),
    #[error("internal error")]
    Host(#[source] anyhow::Error),
}

impl From<SpawnError> for RegistryError {
    fn from(err: SpawnError) -> Self {
        match err {
            SpawnError::LoadFailed(error) => Self::LoadFailed(error),
            SpawnError::Faulted(fault) => Self::StartFaulted(fault),
            SpawnError::Host(err) => Self::Host(err),
        }
    }
}

/// What a call produced, and whether the tool's state was reset because of it.
#[derive(Debug)]
pub struct CallReport {
    pub outcome: Outcome,
    /// The instance was discarded and replaced: module-level state starts over.
    pub state_reset: bool,
}

/// A loaded tool as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    pub alias: String,
    pub script_name: String,
    pub limits: Limits,
    pub calls: u64,
    pub resets: u64,
}

/// Registry-wide settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: Limits,
    pub max_tools: usize,
    pub queue_depth: usize,
}

enum Slot {
    Loading,
    Ready(Arc<Tool>),
}

pub struct Registry {
    sandbox: Sandbox,
    settings: Settings,
    tools: Mutex<HashMap<String, Slot>>,
}

impl Registry {
    pub fn new(sandbox: Sandbox, settings: Settings) -> Self {
        Self {
            sandbox,
            settings,
            tools: Mutex::new(HashMap::new()),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.tools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads `script_name` under `alias`, importing it in a new instance.
    pub async fn load(
        &self,
        script_name: &str,
        alias: &str,
        overrides: &LimitOverrides,
    ) -> Result<ToolInfo, RegistryError> {
        check_script(script_name)?;
        check_alias(alias)?;
        let limits = self.settings.limits.lowered(overrides)?;
        if !names::script_exists(&self.sandbox.mounts().scripts, script_name) {
            return Err(RegistryError::ScriptNotFound);
        }
        let reservation = self.reserve(alias)?;
        let instance = self.sandbox.spawn(script_name, &limits).await?;
        let tool = Arc::new(Tool::start(
            self.sandbox.clone(),
            alias,
            script_name,
            limits,
            instance,
            self.settings.queue_depth,
        ));
        let info = tool.info();
        reservation.fill(tool);
        Ok(info)
    }

    /// Holds `alias` while its first instance starts. If the load fails, or its request is
    /// dropped mid-way (a client that hangs up), the reservation is released on drop.
    fn reserve<'a>(&'a self, alias: &str) -> Result<Reservation<'a>, RegistryError> {
        let mut slots = self.slots();
        if slots.contains_key(alias) {
            return Err(RegistryError::AliasExists);
        }
        if slots.len() >= self.settings.max_tools {
            return Err(RegistryError::TooManyTools(self.settings.max_tools));
        }
        slots.insert(alias.to_owned(), Slot::Loading);
        Ok(Reservation {
            registry: self,
            alias: Some(alias.to_owned()),
        })
    }

    fn get(&self, alias: &str) -> Result<Arc<Tool>, RegistryError> {
        match self.slots().get(alias) {
            Some(Slot::Ready(tool)) => Ok(Arc::clone(tool)),
            _ => Err(RegistryError::NotFound),
        }
    }

    /// Unloads a tool at once: its instance is dropped, and a call running or queued for it
    /// is answered `tool_unloaded`. (Letting them finish would let unload/load cycles keep
    /// more instances alive than `max_tools`.)
    pub fn unload(&self, alias: &str) -> Result<(), RegistryError> {
        let removed = {
            let mut slots = self.slots();
            match slots.get(alias) {
                Some(Slot::Ready(_)) => slots.remove(alias),
                _ => return Err(RegistryError::NotFound),
            }
        };
        if let Some(Slot::Ready(tool)) = removed {
            tool.close();
        }
        Ok(())
    }

    /// Re-imports the tool's script in a fresh instance (picking up edits). If the new import
    /// fails, the old instance stays.
    pub async fn reload(&self, alias: &str) -> Result<ToolInfo, RegistryError> {
        let tool = self.get(alias)?;
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::Reload { reply })?;
        answer.await.map_err(|_| RegistryError::Unloaded)??;
        Ok(tool.info())
    }

    /// Calls `function(*args, **kwargs)` in the tool loaded as `alias`.
    pub async fn call(
        &self,
        alias: &str,
        function: &str,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    ) -> Result<CallReport, RegistryError> {
        check_function(function)?;
        let tool = self.get(alias)?;
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::Call {
            function: function.to_owned(),
            args,
            kwargs,
            reply,
        })?;
        answer.await.map_err(|_| RegistryError::Unloaded)?
    }

    /// Loaded tools, by alias.
    pub fn list(&self) -> Vec<ToolInfo> {
        let mut tools: Vec<ToolInfo> = self
            .slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(tool) => Some(tool.info()),
                Slot::Loading => None,
            })
            .collect();
        tools.sort_by(|a, b| a.alias.cmp(&b.alias));
        tools
    }

    /// Drops every tool (at shutdown).
    pub fn clear(&self) {
        self.slots().clear();
    }
}

struct Reservation<'a> {
    registry: &'a Registry,
    alias: Option<String>,
}

impl Reservation<'_> {
    fn fill(mut self, tool: Arc<Tool>) {
        if let Some(alias) = self.alias.take() {
            self.registry.slots().insert(alias, Slot::Ready(tool));
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(alias) = self.alias.take() {
            let mut slots = self.registry.slots();
            if matches!(slots.get(&alias), Some(Slot::Loading)) {
                slots.remove(&alias);
            }
        }
    }
}

enum Job {
    Call {
        function: String,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
        reply: oneshot::Sender<Result<CallReport, RegistryError>>,
    },
    Reload {
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    resets: AtomicU64,
}

/// One loaded tool: its actor and queue.
struct Tool {
    alias: String,
    script_name: String,
    limits: Limits,
    queue: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    actor: JoinHandle<()>,
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.actor.abort();
    }
}

impl Tool {
    fn start(
        sandbox: Sandbox,
        alias: &str,
        script_name: &str,
        limits: Limits,
        instance: Instance,
        queue_depth: usize,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(queue_depth);
        let stats = Arc::new(Stats::default());
        let actor = Actor {
            sandbox,
            script_name: script_name.to_owned(),
            alias: alias.to_owned(),
            limits,
            instance: Some(instance),
            stats: Arc::clone(&stats),
        };
        Self {
            alias: alias.to_owned(),
            script_name: script_name.to_owned(),
            limits,
            queue,
            stats,
            actor: tokio::spawn(actor.run(jobs)),
        }
    }

    /// Stops the actor now, dropping the instance and every queued job.
    fn close(&self) {
        self.actor.abort();
    }

    fn submit(&self, job: Job) -> Result<(), RegistryError> {
        self.queue.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => RegistryError::Busy,
            mpsc::error::TrySendError::Closed(_) => RegistryError::Unloaded,
        })
    }

    fn info(&self) -> ToolInfo {
        ToolInfo {
            alias: self.alias.clone(),
            script_name: self.script_name.clone(),
            limits: self.limits,
            calls: self.stats.calls.load(Ordering::Relaxed),
            resets: self.stats.resets.load(Ordering::Relaxed),
        }
    }
}

struct Actor {
    sandbox: Sandbox,
    script_name: String,
    alias: String,
    limits: Limits,
    instance: Option<Instance>,
    stats: Arc<Stats>,
}

impl Actor {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            match job {
                Job::Call {
                    function,
                    args,
                    kwargs,
                    reply,
                } => {
                    let result = self.call(&function, &args, &kwargs).await;
                    let faulted =
                        matches!(&result, Ok(r) if matches!(r.outcome, Outcome::Faulted { .. }));
                    let _ = reply.send(result);
                    if faulted {
                        // Replace the instance now, so the next call finds a warm one. (After
                        // a failed respawn nothing is retried until the next call.)
                        self.ensure_instance().await;
                    }
                }
                Job::Reload { reply } => {
                    let _ = reply.send(self.reload().await);
                }
            }
        }
    }

    async fn call(
        &mut self,
        function: &str,
        args: &RawValue,
        kwargs: &RawValue,
    ) -> Result<CallReport, RegistryError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut state_reset = false;
        if self.instance.is_none() {
            // The last respawn failed (the script changed on disk?): try once more, and say
            // why it fails if it still does (`load_failed`, or the start budget's fault).
            state_reset = true;
            self.respawn().await?;
        }
        let Some(instance) = self.instance.as_mut() else {
            unreachable!("an instance was just ensured");
        };
        let outcome = instance.call(function, args, kwargs).await;
        if let Outcome::Faulted { fault, .. } = &outcome {
            tracing::info!(alias = %self.alias, %fault, "instance stopped; respawning from the snapshot");
            self.instance = None;
            self.stats.resets.fetch_add(1, Ordering::Relaxed);
            state_reset = true;
        }
        Ok(CallReport {
            outcome,
            state_reset,
        })
    }

    async fn ensure_instance(&mut self) {
        if self.instance.as_ref().is_some_and(Instance::is_alive) {
            return;
        }
        if let Err(err) = self.respawn().await {
            tracing::warn!(alias = %self.alias, cause = %err, "respawn failed; will retry on the next call");
        }
    }

    async fn respawn(&mut self) -> Result<(), SpawnError> {
        self.instance = None;
        let instance = self.sandbox.spawn(&self.script_name, &self.limits).await?;
        self.instance = Some(instance);
        Ok(())
    }

    async fn reload(&mut self) -> Result<(), RegistryError> {
        let fresh = self.sandbox.spawn(&self.script_name, &self.limits).await?;
        self.instance = Some(fresh);
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
