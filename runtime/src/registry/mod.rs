//! Loaded tools: alias -> one persistent sandboxed instance behind a bounded queue.
//!
//! Each tool has an actor task that owns its instance and takes jobs one at a time, so calls
//! to one alias are serialised and calls to different aliases run in parallel. When a call
//! faults (fuel, deadline, output cap, a trap) the actor answers, drops the instance and
//! spawns a fresh one from the snapshot; the answer says the tool's state was reset.
//!
//! A registry holds one owner's tools (the server makes one per tenant; the registry itself
//! knows nothing of tenants): their scripts folder, their scratch folders, their quotas. What
//! is shared between registries, the server-wide tool and call budgets, is a [`Shared`].
//!
//! Every accepted call holds a permit of its owner's concurrency quota and one of the
//! server's until it is answered: past either, calls are refused at once (`too_many_calls`,
//! `overloaded`) instead of queueing without bound.

mod cache;
mod host;
mod names;
mod pool;
mod venvs;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::protocol::{Debug, GuestError, Op};
use crate::sandbox::{
    Fault, ImageKind, Instance, LimitError, LimitOverrides, Limits, Outcome, Preload, RunOptions,
    Sandbox, Scratch, SpawnError, ToolMounts,
};
pub use cache::{CacheStats, DEFAULT_TTL, MAX_TTL};
pub use host::{Functions, Globals, GlobalsError, MAX_FUNCTIONS, Target, check_global};
pub use names::{NameError, check_alias, check_function, check_script, check_variable};
pub use venvs::{DEFAULT_VENV, MAX_VENVS, check_venv};

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
    #[error("the owner already has its maximum of {0} tools loaded")]
    TooManyTools(usize),
    #[error("the owner already has its maximum of {0} calls in flight")]
    TooManyCalls(usize),
    #[error("the server is at capacity")]
    Overloaded,
    #[error("the live object was lost when the tool's instance was replaced")]
    ObjectLost(String),
    #[error("the owner already has its maximum of {0} package environments")]
    TooManyVenvs(usize),
    #[error("no package environment of that name")]
    VenvNotFound,
    #[error("the tool already has its maximum of {0} breakpoints")]
    TooManyBreakpoints(usize),
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
    /// The answer came from the result cache; the tool did not run.
    pub cached: bool,
}

/// A loaded tool as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    pub alias: String,
    pub script_name: String,
    pub limits: Limits,
    pub mode: Mode,
    /// The interpreter image the tool's latest instance started from.
    pub image: ImageKind,
    pub calls: u64,
    pub resets: u64,
}

/// How a tool's calls share its interpreter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One instance serves every call; state is kept between calls (the default).
    #[default]
    Persistent,
    /// Every call runs in an instance no earlier call touched, taken from a pre-warmed pool
    /// and dropped afterwards; nothing survives a call (no scratch folder either).
    Isolated,
}

/// One registry's settings: its owner's quotas and folders.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The most any tool may get; a load may ask for less.
    pub limits: Limits,
    /// What a load gets when it does not ask (each at most `limits`).
    pub defaults: LimitOverrides,
    pub max_tools: usize,
    pub max_concurrent_calls: usize,
    /// Calls waiting for one tool beyond the one running.
    pub queue_depth: usize,
    /// The owner's scripts, mounted read-only.
    pub scripts: PathBuf,
    /// Where each tool's scratch folder is made, and its quotas; `None`: no scratch.
    pub scratch: Option<ScratchQuota>,
    pub max_open_files: u32,
    /// Where the owner's package environments live (`<name>/site-packages`).
    pub venvs_root: PathBuf,
    /// The native-module functions the owner's guest code may call.
    pub native: crate::native::Access,
}

/// Scratch folders: `root/<alias>.<random>` per loaded tool, removed when it goes.
#[derive(Debug, Clone)]
pub struct ScratchQuota {
    pub root: PathBuf,
    pub max_bytes: u64,
    pub max_files: u64,
}

/// Budgets every registry of a server draws from.
#[derive(Debug, Clone)]
pub struct Shared {
    /// One permit per loaded (or loading) tool.
    pub tools: Arc<Semaphore>,
    /// One permit per call in flight.
    pub calls: Arc<Semaphore>,
    /// One permit per pre-warmed instance waiting in an isolated tool's pool.
    pub warm: Arc<Semaphore>,
    /// Pre-warmed instances per isolated tool.
    pub warm_per_tool: usize,
}

impl Shared {
    pub fn new(max_tools: usize, max_calls: usize) -> Self {
        Self::with_pools(max_tools, max_calls, 2, 16)
    }

    /// As [`Shared::new`], with the isolated tools' pool sizes: per tool and all together.
    pub fn with_pools(max_tools: usize, max_calls: usize, per_tool: usize, total: usize) -> Self {
        Self {
            tools: Arc::new(Semaphore::new(max_tools)),
            calls: Arc::new(Semaphore::new(max_calls)),
            warm: Arc::new(Semaphore::new(total)),
            warm_per_tool: per_tool,
        }
    }
}

enum Slot {
    Loading,
    Ready(Arc<Tool>),
}

pub struct Registry {
    /// Held by one package install or uninstall of this owner at a time (quota accounting).
    pub install_lock: Arc<tokio::sync::Mutex<()>>,
    sandbox: Sandbox,
    settings: Settings,
    shared: Shared,
    tools: Mutex<HashMap<String, Slot>>,
    /// This owner's calls in flight.
    calls: Arc<Semaphore>,
    /// Extra `sys.path` entries (addSysPath) and the active package environment for this
    /// owner's instances, shared with the actors so respawns see them too.
    paths: SharedPaths,
    /// Code run in fresh sandboxes (`run_fresh`), for statistics.
    fresh_runs: AtomicU64,
    /// Whether tools loaded from now on trace their lines (enableDebug without an alias).
    trace_default: Mutex<bool>,
    /// The owner's global variables, shared by its tools (host calls) and HTTP.
    pub globals: Globals,
    /// Functions the owner exposed to its tools' guest code.
    pub functions: Functions,
    /// Kept results of calls, when the owner turned caching on.
    pub cache: cache::ResultCache,
}

/// What an owner's instances find on `sys.path` besides their scripts, shared by a registry
/// and its actors.
type SharedPaths = Arc<Mutex<GuestPaths>>;

#[derive(Debug, Default, Clone)]
struct GuestPaths {
    sys_paths: Vec<String>,
    venv: Option<Venv>,
}

impl GuestPaths {
    fn apply(&self, mounts: &mut ToolMounts) {
        mounts.sys_paths.clone_from(&self.sys_paths);
        mounts.site_packages = self.venv.as_ref().map(|v| v.site_packages.clone());
    }
}

/// A named package environment of an owner: a `site-packages` folder its tools may mount.
#[derive(Debug, Clone, Serialize)]
pub struct Venv {
    pub name: String,
    #[serde(skip)]
    pub site_packages: PathBuf,
}

/// The alias of an owner's session interpreter (`inject` without an alias, `execute` in
/// session mode). Not a valid client alias, so no request can name it directly.
pub const SESSION_ALIAS: &str = ".session";

/// Most breakpoints per tool.
pub const MAX_BREAKPOINTS: usize = 64;

/// Most extra `sys.path` entries per owner.
pub const MAX_SYS_PATHS: usize = 16;

impl Registry {
    pub fn new(sandbox: Sandbox, settings: Settings, shared: Shared) -> Self {
        let venv = venvs::effective(&settings.venvs_root);
        Self {
            calls: Arc::new(Semaphore::new(settings.max_concurrent_calls)),
            sandbox,
            settings,
            shared,
            tools: Mutex::new(HashMap::new()),
            paths: Arc::new(Mutex::new(GuestPaths {
                sys_paths: Vec::new(),
                venv,
            })),
            fresh_runs: AtomicU64::new(0),
            install_lock: Arc::new(tokio::sync::Mutex::new(())),
            trace_default: Mutex::new(false),
            globals: Globals::default(),
            functions: Functions::default(),
            cache: cache::ResultCache::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Calls in flight for this owner.
    pub fn calls_in_flight(&self) -> usize {
        self.settings.max_concurrent_calls - self.calls.available_permits()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A poisoned lock only means a panic elsewhere; the map itself is always consistent.
        self.tools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loads `script_name` under `alias`, importing it in a new instance.
    pub async fn load(
        self: &Arc<Self>,
        script_name: &str,
        alias: &str,
        overrides: &LimitOverrides,
        mode: Mode,
    ) -> Result<ToolInfo, RegistryError> {
        check_script(script_name)?;
        check_alias(alias)?;
        let asked = LimitOverrides {
            fuel: overrides.fuel.or(self.settings.defaults.fuel),
            deadline_ms: overrides.deadline_ms.or(self.settings.defaults.deadline_ms),
            memory_bytes: overrides
                .memory_bytes
                .or(self.settings.defaults.memory_bytes),
            output_bytes: overrides
                .output_bytes
                .or(self.settings.defaults.output_bytes),
        };
        let limits = self.settings.limits.lowered(&asked)?;
        if !names::script_exists(&self.settings.scripts, script_name) {
            return Err(RegistryError::ScriptNotFound);
        }
        self.start_tool(script_name, alias, limits, mode).await
    }

    /// Starts `module` (a checked, existing script, or the empty namespace) under `alias`.
    async fn start_tool(
        self: &Arc<Self>,
        module: &str,
        alias: &str,
        limits: Limits,
        mode: Mode,
    ) -> Result<ToolInfo, RegistryError> {
        let mut reservation = self.reserve(alias)?;
        let scratch = match mode {
            Mode::Persistent => self.make_scratch(alias)?,
            Mode::Isolated => None, // nothing may survive a call, files included
        };
        let mut mounts = self.tool_mounts(scratch);
        mounts.preload = Preload::for_script(&mounts.scripts, module);
        let scratch = mounts.scratch.as_ref().map(|s| ScratchDir(s.dir.clone()));
        // Starting an instance is work like a call: it holds call permits while it runs.
        let permits = self.admit_call()?;
        let instance = self.sandbox.spawn(module, &limits, &mounts).await?;
        let image = instance.image();
        drop(permits);
        let hash = script_hash(&mounts.scripts, module);
        let pool = match mode {
            Mode::Persistent => None,
            Mode::Isolated => self.start_pool(module, limits, &mounts),
        };
        let tool = Arc::new(Tool::start(
            Actor {
                sandbox: self.sandbox.clone(),
                script_name: module.to_owned(),
                alias: alias.to_owned(),
                limits,
                mounts,
                // Isolated: the instance that proved the script imports is untouched, so the
                // first call may have it.
                instance: Some(instance),
                mode,
                pool,
                stats: Arc::new(Stats {
                    load_id: uuid::Uuid::new_v4().as_u64_pair().0,
                    image: Mutex::new(image),
                    ..Stats::default()
                }),
                objects: HashSet::new(),
                lost: HashSet::new(),
                last_used: std::time::Instant::now(),
                paths: Arc::clone(&self.paths),
                debug: Arc::new(Mutex::new(Debug {
                    trace: *lock(&self.trace_default),
                    breakpoints: Default::default(),
                })),
                script_hash: Arc::new(Mutex::new(hash)),
                owner: Arc::downgrade(self),
                warm_per_tool: self.shared.warm_per_tool,
                warm: Arc::clone(&self.shared.warm),
                _scratch: scratch,
            },
            self.settings.queue_depth,
            reservation.take_permit(),
        ));
        let info = tool.info();
        reservation.fill(tool);
        Ok(info)
    }

    /// A pool of pre-warmed instances of `module` (none when pools are sized 0).
    fn start_pool(&self, module: &str, limits: Limits, mounts: &ToolMounts) -> Option<pool::Pool> {
        pool::Pool::start(
            pool::Recipe {
                sandbox: self.sandbox.clone(),
                module: module.to_owned(),
                limits,
                mounts: mounts.clone(),
            },
            self.shared.warm_per_tool,
            Arc::clone(&self.shared.warm),
        )
    }

    /// What an instance of this owner sees besides the shared mounts.
    fn tool_mounts(&self, scratch: Option<Scratch>) -> ToolMounts {
        let mut mounts = ToolMounts {
            scripts: self.settings.scripts.clone(),
            scratch,
            max_open_files: self.settings.max_open_files,
            sys_paths: Vec::new(),
            site_packages: None,
            preload: Default::default(),
        };
        lock(&self.paths).apply(&mut mounts);
        mounts
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
        let permit = Arc::clone(&self.shared.tools)
            .try_acquire_owned()
            .map_err(|_| RegistryError::Overloaded)?;
        slots.insert(alias.to_owned(), Slot::Loading);
        Ok(Reservation {
            registry: self,
            alias: Some(alias.to_owned()),
            permit: Some(permit),
        })
    }

    /// A fresh, empty scratch folder for a tool being loaded as `alias` (private: 0700).
    fn make_scratch(&self, alias: &str) -> Result<Option<Scratch>, RegistryError> {
        let Some(quota) = &self.settings.scratch else {
            return Ok(None);
        };
        let dir = quota
            .root
            .join(format!("{alias}.{}", uuid::Uuid::new_v4().simple()));
        create_private_dir(&dir).map_err(|err| {
            RegistryError::Host(anyhow::Error::from(err).context("creating a scratch folder"))
        })?;
        Ok(Some(Scratch {
            dir,
            max_bytes: quota.max_bytes,
            max_files: quota.max_files,
        }))
    }

    /// Takes a permit of this owner's call quota and one of the server's.
    fn admit_call(&self) -> Result<CallPermits, RegistryError> {
        let own = Arc::clone(&self.calls)
            .try_acquire_owned()
            .map_err(|_| RegistryError::TooManyCalls(self.settings.max_concurrent_calls))?;
        let server = Arc::clone(&self.shared.calls)
            .try_acquire_owned()
            .map_err(|_| RegistryError::Overloaded)?;
        Ok(CallPermits {
            _own: own,
            _server: server,
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
        self.cache.invalidate(alias);
        Ok(())
    }

    /// Re-imports the tool's script in a fresh instance (picking up edits). If the new import
    /// fails, the old instance stays.
    pub async fn reload(&self, alias: &str) -> Result<ToolInfo, RegistryError> {
        let tool = self.get(alias)?;
        let permits = self.admit_call()?;
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::Reload { reply, permits })?;
        let reloaded = answer.await.map_err(|_| RegistryError::Unloaded)?;
        self.cache.invalidate(alias);
        reloaded?;
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
        if self.cache.enabled() {
            let tool = self.get(alias)?;
            let script = *lock(&tool.script_hash);
            let key = cache::key(alias, tool.stats.load_id, function, &args, &kwargs, &script);
            if let Some(hit) = self.cache.get(&key) {
                return Ok(CallReport {
                    outcome: Outcome::Answered {
                        result: Some(hit.result),
                        error: None,
                        stdout: hit.stdout,
                        stderr: hit.stderr,
                        fuel_used: 0,
                        elapsed: std::time::Duration::ZERO,
                        memory_capped: false,
                        debug: None,
                    },
                    state_reset: false,
                    cached: true,
                });
            }
        }
        self.run(
            alias,
            Op::Call {
                function: function.to_owned(),
                args,
                kwargs,
            },
        )
        .await
    }

    /// Runs `op` in the tool loaded as `alias`, under its call limits and this owner's call
    /// quotas. Names inside `op` must have been checked by the caller.
    pub async fn run(&self, alias: &str, op: Op) -> Result<CallReport, RegistryError> {
        self.run_job(alias, op, None, None).await
    }

    /// As [`Registry::run`], without counting it in the tool's `calls`: for the server's own
    /// checks (a tool's requirements at load), which a client did not ask for.
    pub async fn run_uncounted(
        &self,
        alias: &str,
        op: Op,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        self.submit_run(alias, op, None, within, false).await
    }

    /// As [`Registry::run`]; a message on `cancel` stops the guest mid-call (the instance is
    /// replaced and the call answered [`Fault::Cancelled`]). Dropping the sender does not
    /// cancel.
    pub async fn run_cancellable(
        &self,
        alias: &str,
        op: Op,
        cancel: Option<oneshot::Receiver<()>>,
    ) -> Result<CallReport, RegistryError> {
        self.run_job(alias, op, cancel, None).await
    }

    /// Runs `op` in `alias` for a task step, the deadline lowered to `within`. Dropping the
    /// future before it is answered stops the guest (the instance is replaced) or, if the job
    /// still waits in the queue, skips it.
    pub async fn run_step(
        &self,
        alias: &str,
        op: Op,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        let (cancel, cancelled) = oneshot::channel();
        let mut guard = CancelOnDrop(Some(cancel));
        let answer = self.run_job(alias, op, Some(cancelled), within).await;
        guard.disarm();
        answer
    }

    /// Runs `op` in the owner's session interpreter (an empty namespace that keeps what is
    /// defined in it), started on first use under the owner's default limits; `within`
    /// lowers the deadline for this request. It takes one of the owner's tool slots, is not
    /// listed, and is evicted like any idle tool.
    pub async fn run_session(
        self: &Arc<Self>,
        op: Op,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        if self.get(SESSION_ALIAS).is_err() {
            let limits = self.settings.limits.lowered(&self.settings.defaults)?;
            match self
                .start_tool(
                    crate::protocol::SCRATCH_MODULE,
                    SESSION_ALIAS,
                    limits,
                    Mode::Persistent,
                )
                .await
            {
                // started meanwhile by a concurrent request: use it once it is ready
                Ok(_) | Err(RegistryError::AliasExists) => {}
                Err(err) => return Err(err),
            }
        }
        self.run_job(SESSION_ALIAS, op, None, within)
            .await
            .map_err(|err| match err {
                RegistryError::NotFound => RegistryError::Busy,
                other => other,
            })
    }

    async fn run_job(
        &self,
        alias: &str,
        op: Op,
        cancel: Option<oneshot::Receiver<()>>,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        self.submit_run(alias, op, cancel, within, true).await
    }

    /// Queues `op` for `alias` under this owner's call quotas and waits for its report.
    async fn submit_run(
        &self,
        alias: &str,
        op: Op,
        cancel: Option<oneshot::Receiver<()>>,
        within: Option<std::time::Duration>,
        counted: bool,
    ) -> Result<CallReport, RegistryError> {
        let tool = self.get(alias)?;
        let permits = self.admit_call()?;
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::Run {
            op,
            reply,
            permits,
            cancel,
            chain: Vec::new(),
            within,
            counted,
        })?;
        answer.await.map_err(|_| RegistryError::Unloaded)?
    }

    /// The linear memory of `alias`'s instance in bytes (`None` while it has none).
    pub async fn linear_memory(&self, alias: &str) -> Result<Option<usize>, RegistryError> {
        let tool = self.get(alias)?;
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::LinearMemory { reply })?;
        answer.await.map_err(|_| RegistryError::Unloaded)
    }

    /// Drops the instances of tools idle for at least `idle_for`; each restarts on its next
    /// call (state reset, live objects lost). Returns the aliases evicted.
    pub async fn evict_idle(&self, idle_for: std::time::Duration) -> Vec<String> {
        let tools = self.ready_tools();
        let mut evicted = Vec::new();
        for tool in tools {
            let (reply, answer) = oneshot::channel();
            if tool.submit(Job::Evict { idle_for, reply }).is_ok() && answer.await.unwrap_or(false)
            {
                self.cache.invalidate(&tool.alias);
                evicted.push(tool.alias.clone());
            }
        }
        evicted.sort();
        evicted
    }

    /// Runs `op` in a fresh sandbox, under this owner's default limits (the deadline lowered
    /// to `within` if given) and call quotas, without a scratch folder; the instance is
    /// dropped afterwards. `module` is a checked script name, or
    /// [`SCRATCH_MODULE`](crate::protocol::SCRATCH_MODULE) for an empty namespace.
    pub async fn run_fresh(
        self: &Arc<Self>,
        module: &str,
        op: Op,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        if module != crate::protocol::SCRATCH_MODULE {
            check_script(module)?;
            if !names::script_exists(&self.settings.scripts, module) {
                return Err(RegistryError::ScriptNotFound);
            }
        }
        let _permits = self.admit_call()?;
        self.fresh_runs.fetch_add(1, Ordering::Relaxed);
        let limits = self.settings.limits.lowered(&self.settings.defaults)?;
        let mounts = self.tool_mounts(None);
        let mut instance = self.sandbox.spawn(module, &limits, &mounts).await?;
        let registry = Arc::downgrade(self);
        let host = host::JobHost {
            registry: &registry,
            outer: Vec::new(),
            own: None,
        };
        let options = RunOptions {
            host: &host,
            within,
            debug: None,
        };
        let outcome = instance.run_opts(&op, &options).await;
        Ok(CallReport {
            outcome,
            state_reset: false,
            cached: false,
        })
    }

    /// Creates package environment `name`; whether it is new.
    pub fn create_venv(&self, name: &str) -> Result<(Venv, bool), RegistryError> {
        check_venv(name)?;
        venvs::create(&self.settings.venvs_root, name)
    }

    /// Makes `name` (or none) the environment that instances started from now on mount.
    pub fn activate_venv(&self, name: Option<&str>) -> Result<Option<Venv>, RegistryError> {
        if let Some(name) = name {
            check_venv(name)?;
        }
        let mut paths = lock(&self.paths);
        let venv = venvs::activate(&self.settings.venvs_root, name)?;
        paths.venv.clone_from(&venv);
        Ok(venv)
    }

    /// Where packages go: environment `name` (which must exist), or the `default` one, made
    /// on first use (and mounted from then on while no other is active).
    pub fn package_env(&self, name: Option<&str>) -> Result<Venv, RegistryError> {
        let root = &self.settings.venvs_root;
        if let Some(name) = name {
            check_venv(name)?;
            return venvs::existing(root, name).ok_or(RegistryError::VenvNotFound);
        }
        let (venv, _) = venvs::create(root, venvs::DEFAULT_VENV)?;
        let mut paths = lock(&self.paths);
        if paths.venv.is_none() {
            paths.venv = Some(venv.clone());
        }
        Ok(venv)
    }

    /// The environment instances started now mount, if any.
    pub fn mounted_venv(&self) -> Option<Venv> {
        lock(&self.paths).venv.clone()
    }

    /// Every environment of the owner (for the package quota).
    pub fn all_venvs(&self) -> Vec<Venv> {
        let root = &self.settings.venvs_root;
        venvs::list(root)
            .iter()
            .filter_map(|name| venvs::existing(root, name))
            .collect()
    }

    /// The owner's environments, and the active one.
    pub fn venvs(&self) -> (Vec<String>, Option<String>) {
        let active = lock(&self.paths).venv.as_ref().map(|v| v.name.clone());
        (venvs::list(&self.settings.venvs_root), active)
    }

    /// Turns line tracing on or off for `alias`, or (without one) for every loaded tool and
    /// those loaded later. Returns the aliases changed.
    pub fn set_trace(&self, alias: Option<&str>, on: bool) -> Result<Vec<String>, RegistryError> {
        let tools = match alias {
            Some(alias) => vec![self.get(alias)?],
            None => {
                *lock(&self.trace_default) = on;
                self.ready_tools()
            }
        };
        let mut changed: Vec<String> = tools
            .iter()
            .filter(|tool| tool.alias != SESSION_ALIAS)
            .map(|tool| {
                lock(&tool.debug).trace = on;
                tool.alias.clone()
            })
            .collect();
        changed.sort();
        Ok(changed)
    }

    /// Adds a breakpoint at `line` of `alias`'s script, or (`None`) clears them all. At most
    /// [`MAX_BREAKPOINTS`]. Returns the tool's tracing settings.
    pub fn set_breakpoint(&self, alias: &str, line: Option<u32>) -> Result<Debug, RegistryError> {
        let tool = self.get(alias)?;
        let mut debug = lock(&tool.debug);
        match line {
            None => debug.breakpoints.clear(),
            Some(line) => {
                if !debug.breakpoints.contains(&line) && debug.breakpoints.len() >= MAX_BREAKPOINTS
                {
                    return Err(RegistryError::TooManyBreakpoints(MAX_BREAKPOINTS));
                }
                debug.breakpoints.insert(line);
            }
        }
        Ok(debug.clone())
    }

    fn ready_tools(&self) -> Vec<Arc<Tool>> {
        self.slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(tool) => Some(Arc::clone(tool)),
                Slot::Loading => None,
            })
            .collect()
    }

    /// How many fresh sandboxes this owner has run.
    pub fn fresh_runs(&self) -> u64 {
        self.fresh_runs.load(Ordering::Relaxed)
    }

    /// Adds a guest path (already checked to lie inside the mounts) to `sys.path` of every
    /// instance from now on, and of the live ones now. Returns the aliases that failed to
    /// take it at once (they get it at their next start). `false` when the list is full.
    pub async fn add_sys_path(&self, path: &str) -> Option<Vec<String>> {
        {
            let paths = &mut lock(&self.paths).sys_paths;
            if !paths.iter().any(|p| p == path) {
                if paths.len() >= MAX_SYS_PATHS {
                    return None;
                }
                paths.push(path.to_owned());
            }
        }
        let mut failed = Vec::new();
        for tool in self.list() {
            let op = Op::AddSysPath {
                path: path.to_owned(),
            };
            let ok = matches!(
                self.run(&tool.alias, op).await,
                Ok(CallReport {
                    outcome: Outcome::Answered { error: None, .. },
                    ..
                })
            );
            if !ok {
                failed.push(tool.alias);
            }
        }
        Some(failed)
    }

    /// The extra `sys.path` entries.
    pub fn sys_paths(&self) -> Vec<String> {
        lock(&self.paths).sys_paths.clone()
    }

    /// Whether `alias` is loaded (for requests answered before their work is done).
    pub fn contains(&self, alias: &str) -> bool {
        self.get(alias).is_ok()
    }

    /// Loaded tools, by alias.
    pub fn list(&self) -> Vec<ToolInfo> {
        let mut tools: Vec<ToolInfo> = self
            .slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(tool) if tool.alias != SESSION_ALIAS => Some(tool.info()),
                _ => None,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most names of lost objects remembered per tool.
const MAX_LOST_OBJECTS: usize = 4096;

/// Creates `dir` (and its parents) with mode 0700.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A tool's scratch folder, removed with the tool.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(cause = %err, "could not remove a scratch folder");
        }
    }
}

/// Sends a cancel when dropped before it is disarmed: work abandoned by its caller (a
/// dropped step, a host call past its caller's deadline) stops the guest running it.
struct CancelOnDrop(Option<oneshot::Sender<()>>);

impl CancelOnDrop {
    /// The work was answered: dropping no longer cancels.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}

/// The permits a call holds until it is answered.
struct CallPermits {
    _own: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

struct Reservation<'a> {
    registry: &'a Registry,
    alias: Option<String>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation<'_> {
    fn take_permit(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permit.take()
    }

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
    Run {
        op: Op,
        reply: oneshot::Sender<Result<CallReport, RegistryError>>,
        permits: CallPermits,
        cancel: Option<oneshot::Receiver<()>>,
        /// The tools waiting on this job through registered-function calls, outermost first.
        chain: Vec<String>,
        /// A lower deadline for this job than the tool's.
        within: Option<std::time::Duration>,
        /// Whether it counts in the tool's `calls` (the server's own checks do not).
        counted: bool,
    },
    Reload {
        reply: oneshot::Sender<Result<(), RegistryError>>,
        permits: CallPermits,
    },
    /// The instance's linear memory size, if it has one.
    LinearMemory {
        reply: oneshot::Sender<Option<usize>>,
    },
    /// Drops the instance if it has been idle at least this long; it restarts on the next
    /// call. Answers whether it was dropped.
    Evict {
        idle_for: std::time::Duration,
        reply: oneshot::Sender<bool>,
    },
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    resets: AtomicU64,
    /// The image the latest instance started from.
    image: Mutex<ImageKind>,
    /// Random per load: part of every cache key, so nothing one load of an alias cached
    /// can ever answer a call to a later load of it.
    load_id: u64,
}

/// One loaded tool: its actor and queue.
struct Tool {
    alias: String,
    script_name: String,
    limits: Limits,
    mode: Mode,
    queue: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    debug: Arc<Mutex<Debug>>,
    script_hash: Arc<Mutex<cache::Key>>,
    actor: JoinHandle<()>,
    /// The server-wide tool slot, released with the tool.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.actor.abort();
    }
}

impl Tool {
    fn start(actor: Actor, queue_depth: usize, slot: Option<OwnedSemaphorePermit>) -> Self {
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
            actor: tokio::spawn(actor.run(jobs)),
            _slot: slot,
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
            mode: self.mode,
            image: *lock(&self.stats.image),
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
    mounts: ToolMounts,
    instance: Option<Instance>,
    mode: Mode,
    /// Isolated tools: instances ready for the next calls.
    pool: Option<pool::Pool>,
    stats: Arc<Stats>,
    /// Names of the live objects in the current instance, and of those lost with earlier
    /// instances (so a request for one is told so, not just "not found").
    objects: HashSet<String>,
    lost: HashSet<String>,
    /// When the last request finished (or the tool was loaded).
    last_used: std::time::Instant,
    paths: SharedPaths,
    /// Tracing for this tool's calls, shared with its [`Tool`].
    debug: Arc<Mutex<Debug>>,
    /// The hash of the script as last (re)loaded, shared with its [`Tool`].
    script_hash: Arc<Mutex<cache::Key>>,
    /// The registry, for the host calls of this tool's guest.
    owner: Weak<Registry>,
    /// The pools' sizes (for a reload of an isolated tool).
    warm_per_tool: usize,
    warm: Arc<Semaphore>,
    /// Declared after the instance, so an aborted actor drops the instance first and only
    /// then removes the folder (no guest is left writing into it).
    _scratch: Option<ScratchDir>,
}

impl Actor {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
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
                } => {
                    let result = self.call(&op, cancel, chain, within, counted).await;
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
                Job::Reload { reply, permits } => {
                    let _ = reply.send(self.reload().await);
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

    async fn call(
        &mut self,
        op: &Op,
        cancel: Option<oneshot::Receiver<()>>,
        chain: Vec<String>,
        within: Option<std::time::Duration>,
        counted: bool,
    ) -> Result<CallReport, RegistryError> {
        if let Some(name) = op.object_needed()
            && self.lost.contains(name)
        {
            return Err(RegistryError::ObjectLost(name.to_owned()));
        }
        let mut cancel = cancel;
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
            });
        }
        if counted {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
        }
        let mut state_reset = false;
        if self.mode == Mode::Isolated && self.instance.is_none() {
            self.instance = self.pool.as_mut().and_then(pool::Pool::take);
            if let Some(instance) = &self.instance {
                *lock(&self.stats.image) = instance.image();
            } else {
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
        let host = host::JobHost {
            registry: &self.owner,
            outer: chain,
            own: Some(&self.alias),
        };
        let debug = lock(&self.debug).clone();
        let options = RunOptions {
            host: &host,
            within,
            debug: Some(&debug),
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
        if replace {
            self.instance = None;
            self.forget_objects();
            self.stats.resets.fetch_add(1, Ordering::Relaxed);
            state_reset = true;
        } else if matches!(outcome, Outcome::Answered { error: None, .. }) {
            self.track_objects(op);
        }
        self.update_cache(op, &outcome, state_reset);
        Ok(CallReport {
            outcome,
            state_reset,
            cached: false,
        })
    }

    /// Keeps a successful call's result in the owner's cache; drops the tool's entries when
    /// its state changed (a reset, `setVariable`, `inject`).
    fn update_cache(&self, op: &Op, outcome: &Outcome, state_reset: bool) {
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
    fn track_objects(&mut self, op: &Op) {
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
    fn forget_objects(&mut self) {
        if self.lost.len() + self.objects.len() > MAX_LOST_OBJECTS {
            self.lost.clear(); // bounded memory beats a precise error for very old names
        }
        self.lost.extend(self.objects.drain());
    }

    async fn reload(&mut self) -> Result<(), RegistryError> {
        lock(&self.paths).apply(&mut self.mounts);
        // The script may import other things now.
        self.mounts.preload = Preload::for_script(&self.mounts.scripts, &self.script_name);
        let fresh = self
            .sandbox
            .spawn(&self.script_name, &self.limits, &self.mounts)
            .await?;
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
fn script_hash(scripts: &Path, module: &str) -> cache::Key {
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
