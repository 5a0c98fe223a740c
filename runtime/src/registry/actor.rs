//! A tool's actor: the task that owns the tool's instance and takes its jobs one at a time
//! from a bounded queue, respawning the instance after a fault; and [`Tool`], the handle
//! the registry keeps (queue, stats, tracing settings).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::job::Job;
use super::paths::SharedPaths;
use super::scratch::ScratchDir;
use super::{CallReport, Mode, Registry, RegistryError, ToolInfo, cache, host, lock, pool};
use crate::protocol::{Debug, Op};
use crate::sandbox::{
    Fault, ImageKind, Instance, Limits, Outcome, Preload, RunOptions, Sandbox, SpawnError,
    ToolMounts,
};
use crate::scripts::ScriptRef;

/// Most names of lost objects remembered per tool.
pub(super) const MAX_LOST_OBJECTS: usize = 4096;

#[derive(Default)]
pub(super) struct Stats {
    pub(super) calls: AtomicU64,
    pub(super) resets: AtomicU64,
    /// The image the latest instance started from.
    pub(super) image: Mutex<ImageKind>,
    /// Random per load: part of every cache key, so nothing one load of an alias cached
    /// can ever answer a call to a later load of it.
    pub(super) load_id: u64,
}

/// One loaded tool: its actor and queue.
pub(super) struct Tool {
    pub(super) alias: String,
    pub(super) script_name: String,
    pub(super) limits: Limits,
    pub(super) mode: Mode,
    pub(super) queue: mpsc::Sender<Job>,
    pub(super) stats: Arc<Stats>,
    pub(super) debug: Arc<Mutex<Debug>>,
    pub(super) script_hash: Arc<Mutex<cache::Key>>,
    /// The script version it runs, shared with its actor (a reload moves it).
    pub(super) script: Arc<Mutex<ScriptRef>>,
    /// When it was re-established from the store, until a reload.
    pub(super) restored_at: Arc<Mutex<Option<f64>>>,
    pub(super) actor: JoinHandle<()>,
    /// The server-wide tool slot, released with the tool.
    pub(super) _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.actor.abort();
    }
}

impl Tool {
    pub(super) fn start(
        actor: Actor,
        queue_depth: usize,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(queue_depth);
        Self {
            alias: actor.alias.clone(),
            script_name: actor.script_name.clone(),
            limits: actor.limits,
            mode: actor.mode,
            queue,
            stats: Arc::clone(&actor.stats),
            debug: Arc::clone(&actor.debug),
            script_hash: Arc::clone(&actor.script_hash),
            script: Arc::clone(&actor.script),
            restored_at: Arc::clone(&actor.restored_at),
            actor: tokio::spawn(actor.run(jobs)),
            _slot: slot,
        }
    }

    /// Stops the actor now, dropping the instance and every queued job.
    pub(super) fn close(&self) {
        self.actor.abort();
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), RegistryError> {
        self.queue.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => RegistryError::Busy,
            mpsc::error::TrySendError::Closed(_) => RegistryError::Unloaded,
        })
    }

    pub(super) fn info(&self) -> ToolInfo {
        let script = lock(&self.script);
        ToolInfo {
            alias: self.alias.clone(),
            script_name: self.script_name.clone(),
            script_version: script.version.clone(),
            script_source: script.source,
            limits: self.limits,
            mode: self.mode,
            image: Some(*lock(&self.stats.image)),
            calls: self.stats.calls.load(Ordering::Relaxed),
            resets: self.stats.resets.load(Ordering::Relaxed),
            restored_at: *lock(&self.restored_at),
        }
    }
}

pub(super) struct Actor {
    pub(super) sandbox: Sandbox,
    pub(super) script_name: String,
    pub(super) alias: String,
    pub(super) limits: Limits,
    pub(super) mounts: ToolMounts,
    pub(super) instance: Option<Instance>,
    pub(super) mode: Mode,
    /// Isolated tools: instances ready for the next calls.
    pub(super) pool: Option<pool::Pool>,
    pub(super) stats: Arc<Stats>,
    /// Names of the live objects in the current instance, and of those lost with earlier
    /// instances (so a request for one is told so, not just "not found").
    pub(super) objects: HashSet<String>,
    pub(super) lost: HashSet<String>,
    /// When the last request finished (or the tool was loaded).
    pub(super) last_used: std::time::Instant,
    pub(super) paths: SharedPaths,
    /// Tracing for this tool's calls, shared with its [`Tool`].
    pub(super) debug: Arc<Mutex<Debug>>,
    /// The hash of the script as last (re)loaded, shared with its [`Tool`].
    pub(super) script_hash: Arc<Mutex<cache::Key>>,
    /// The script version it runs, shared with its [`Tool`].
    pub(super) script: Arc<Mutex<ScriptRef>>,
    pub(super) restored_at: Arc<Mutex<Option<f64>>>,
    /// The tool was restored after a restart and has not answered yet: its first answer
    /// says its state was reset.
    pub(super) state_lost: bool,
    /// The registry, for the host calls of this tool's guest.
    pub(super) owner: Weak<Registry>,
    /// The pools' sizes (for a reload of an isolated tool).
    pub(super) warm_per_tool: usize,
    pub(super) warm: Arc<Semaphore>,
    /// Declared after the instance, so an aborted actor drops the instance first and only
    /// then removes the folder (no guest is left writing into it).
    pub(super) _scratch: Option<ScratchDir>,
}

impl Actor {
    pub(super) async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            match job {
                Job::Run {
                    op,
                    reply,
                    permits,
                    cancel,
                    chain,
                    within,
                    counted,
                    stream,
                } => {
                    let watch = super::job::Watch { cancel, stream };
                    let result = self.call(&op, watch, chain, within, counted).await;
                    self.last_used = std::time::Instant::now();
                    if self.mode == Mode::Isolated {
                        // Touched by this call: never used again.
                        self.instance = None;
                        self.forget_objects();
                        let _ = reply.send(result);
                        drop(permits);
                        continue;
                    }
                    let replace = self.instance.is_none();
                    let _ = reply.send(result);
                    if replace {
                        // Replace the instance now, so the next call finds a warm one. (After
                        // a failed respawn nothing is retried until the next call.) The call's
                        // permits are held until the respawn is done: it is the call's work.
                        self.ensure_instance().await;
                    }
                    drop(permits);
                }
                Job::Reload {
                    script,
                    reply,
                    permits,
                } => {
                    let _ = reply.send(self.reload(script).await);
                    drop(permits);
                }
                Job::LinearMemory { reply } => {
                    let size = match self.instance.as_mut() {
                        Some(instance) => instance
                            .inspect_memory(Vec::new())
                            .await
                            .map(|report| report.linear_bytes),
                        None => None,
                    };
                    let _ = reply.send(size);
                }
                Job::Evict { idle_for, reply } => {
                    let idle = self.last_used.elapsed() >= idle_for;
                    let evicted = idle && self.instance.is_some();
                    if evicted {
                        tracing::info!(alias = %self.alias, "idle instance evicted");
                        self.instance = None;
                        self.forget_objects();
                    }
                    let _ = reply.send(evicted);
                }
            }
        }
    }

    pub(super) async fn call(
        &mut self,
        op: &Op,
        watch: super::job::Watch,
        chain: Vec<String>,
        within: Option<std::time::Duration>,
        counted: bool,
    ) -> Result<CallReport, RegistryError> {
        if let Some(name) = op.object_needed()
            && self.lost.contains(name)
        {
            return Err(RegistryError::ObjectLost(name.to_owned()));
        }
        let super::job::Watch { mut cancel, stream } = watch;
        if let Some(receiver) = cancel.as_mut()
            && receiver.try_recv().is_ok()
        {
            // Cancelled while it waited in the queue: it never ran, so the tool is untouched.
            return Ok(CallReport {
                outcome: Outcome::Faulted {
                    fault: Fault::Cancelled,
                    elapsed: std::time::Duration::ZERO,
                },
                state_reset: false,
                cached: false,
                egress: Default::default(),
                cpu: std::time::Duration::ZERO,
            });
        }
        if counted {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
        }
        let mut state_reset = std::mem::take(&mut self.state_lost);
        if self.mode == Mode::Isolated && self.instance.is_none() {
            self.instance = self.pool.as_mut().and_then(pool::Pool::take);
            if let Some(instance) = &self.instance {
                *lock(&self.stats.image) = instance.image();
            } else {
                if let Some(registry) = self.owner.upgrade() {
                    registry.metrics().pool_missed();
                }
                // The pool is empty (a burst, or every pool is full server-wide): start one.
                self.respawn().await?;
            }
        }
        if self.instance.is_none() {
            // The last respawn failed (the script changed on disk?): try once more, and say
            // why it fails if it still does (`load_failed`, or the start budget's fault).
            state_reset = true;
            self.respawn().await?;
        }
        let Some(instance) = self.instance.as_mut() else {
            unreachable!("an instance was just ensured");
        };
        let started = std::time::Instant::now();
        let cpu_before = instance.cpu_used();
        let host = host::JobHost {
            registry: &self.owner,
            outer: chain,
            own: Some(&self.alias),
            http: Default::default(),
        };
        let debug = lock(&self.debug).clone();
        let options = RunOptions {
            host: &host,
            within,
            debug: Some(&debug),
            stream: stream.as_ref(),
        };
        let outcome = match cancel {
            None => instance.run_opts(op, &options).await,
            Some(cancel) => {
                let cancelled = async {
                    if cancel.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    outcome = instance.run_opts(op, &options) => outcome,
                    () = cancelled => Outcome::Faulted {
                        fault: Fault::Cancelled,
                        elapsed: started.elapsed(),
                    },
                }
            }
        };
        let egress = host.http.usage();
        let cpu = instance.cpu_used().saturating_sub(cpu_before);
        let replace = match &outcome {
            Outcome::Faulted { fault, .. } => {
                tracing::info!(alias = %self.alias, %fault, "instance stopped; respawning from the snapshot");
                true
            }
            Outcome::Answered {
                memory_capped: true,
                ..
            } => {
                tracing::info!(alias = %self.alias, "call hit the memory cap; replacing the instance to return its memory");
                true
            }
            Outcome::Answered { .. } => false,
        };
        let registry = self.owner.upgrade();
        if replace {
            self.instance = None;
            self.forget_objects();
            self.stats.resets.fetch_add(1, Ordering::Relaxed);
            if let Some(registry) = &registry {
                registry.metrics().instance_respawned();
            }
            state_reset = true;
            // A cancelled call's caller is usually gone: the next call says the state reset.
            self.state_lost |= self.mode == Mode::Persistent
                && matches!(
                    outcome,
                    Outcome::Faulted {
                        fault: Fault::Cancelled,
                        ..
                    }
                );
        } else if matches!(outcome, Outcome::Answered { error: None, .. }) {
            self.track_objects(op);
        }
        self.update_cache(op, &outcome, state_reset);
        let answer = Ok(CallReport {
            outcome,
            state_reset,
            cached: false,
            egress,
            cpu,
        });
        if counted && let Some(registry) = &registry {
            registry.observe(&self.alias, super::observe::mode_name(self.mode), &answer);
        }
        answer
    }

    /// Keeps a successful call's result in the owner's cache; drops the tool's entries when
    /// its state changed (a reset, `setVariable`, `inject`).
    pub(super) fn update_cache(&self, op: &Op, outcome: &Outcome, state_reset: bool) {
        let Some(registry) = self.owner.upgrade() else {
            return;
        };
        // Anything but a call or a read may change what the tool's functions see.
        let reads = matches!(
            op,
            Op::Call { .. }
                | Op::GetVariable { .. }
                | Op::Functions
                | Op::Exports
                | Op::ListObjects
                | Op::MemoryStats
                | Op::Collect
        );
        if state_reset || !reads {
            registry.cache.invalidate(&self.alias);
        }
        if let (
            Op::Call {
                function,
                args,
                kwargs,
            },
            Outcome::Answered {
                result: Some(result),
                error: None,
                stdout,
                stderr,
                memory_capped: false,
                ..
            },
        ) = (op, outcome)
            && registry.cache.enabled()
        {
            let script = *lock(&self.script_hash);
            let key = cache::key(
                &self.alias,
                self.stats.load_id,
                function,
                args,
                kwargs,
                &script,
            );
            let hit = cache::Hit {
                result: result.clone(),
                stdout: stdout.clone(),
                stderr: stderr.clone(),
            };
            registry.cache.put(key, &self.alias, hit);
        }
    }

    pub(super) async fn ensure_instance(&mut self) {
        if self.instance.as_ref().is_some_and(Instance::is_alive) {
            return;
        }
        if let Err(err) = self.respawn().await {
            tracing::warn!(alias = %self.alias, cause = %err, "respawn failed; will retry on the next call");
        }
    }

    pub(super) async fn respawn(&mut self) -> Result<(), SpawnError> {
        self.instance = None;
        lock(&self.paths).apply(&mut self.mounts);
        let instance = self
            .sandbox
            .spawn(&self.script_name, &self.limits, &self.mounts)
            .await?;
        *lock(&self.stats.image) = instance.image();
        self.instance = Some(instance);
        Ok(())
    }

    /// Records a live object created or deleted by a successful op.
    pub(super) fn track_objects(&mut self, op: &Op) {
        match op {
            Op::CreateObject { object_name, .. } => {
                self.lost.remove(object_name);
                self.objects.insert(object_name.clone());
            }
            Op::DeleteObject { object_name } => {
                self.objects.remove(object_name);
            }
            _ => {}
        }
    }

    /// The instance is gone: its objects are lost.
    pub(super) fn forget_objects(&mut self) {
        if self.lost.len() + self.objects.len() > MAX_LOST_OBJECTS {
            self.lost.clear(); // bounded memory beats a precise error for very old names
        }
        self.lost.extend(self.objects.drain());
    }

    /// Starts `script` (the tool's newest version) in a fresh instance in place of the
    /// current one; the current one stays if it fails.
    pub(super) async fn reload(&mut self, script: ScriptRef) -> Result<(), RegistryError> {
        let mut mounts = self.mounts.clone();
        lock(&self.paths).apply(&mut mounts);
        mounts.scripts.clone_from(&script.dir);
        // The script may import other things now.
        mounts.preload = Preload::for_script(&mounts.scripts, &self.script_name);
        let fresh = self
            .sandbox
            .spawn(&self.script_name, &self.limits, &mounts)
            .await?;
        self.mounts = mounts;
        *lock(&self.script) = script;
        *lock(&self.restored_at) = None;
        self.state_lost = false;
        *lock(&self.stats.image) = fresh.image();
        self.instance = Some(fresh);
        if self.mode == Mode::Isolated {
            // The warm instances imported the old script: start over.
            self.pool = None;
            self.pool = pool::Pool::start(
                pool::Recipe {
                    sandbox: self.sandbox.clone(),
                    module: self.script_name.clone(),
                    limits: self.limits,
                    mounts: self.mounts.clone(),
                },
                self.warm_per_tool,
                Arc::clone(&self.warm),
            );
        }
        *lock(&self.script_hash) = script_hash(&self.mounts.scripts, &self.script_name);
        self.forget_objects();
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The BLAKE3 hash of a tool's script as it is now (`name.py`, or `name/__init__.py` for a
/// package), read up to 16 MiB; zeros for the empty namespace or an unreadable file.
pub(super) fn script_hash(scripts: &Path, module: &str) -> cache::Key {
    use std::io::Read as _;
    let file = std::fs::File::open(scripts.join(format!("{module}.py")))
        .or_else(|_| std::fs::File::open(scripts.join(module).join("__init__.py")));
    let Ok(file) = file else {
        return [0; 32];
    };
    let mut hasher = blake3::Hasher::new();
    match std::io::copy(&mut file.take(16 << 20), &mut hasher) {
        Ok(_) => *hasher.finalize().as_bytes(),
        Err(_) => [0; 32],
    }
}
