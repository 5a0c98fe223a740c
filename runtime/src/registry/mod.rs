//! Loaded tools: alias -> one persistent sandboxed instance behind a bounded queue.
//!
//! Each tool has an actor task that owns its instance and takes jobs one at a time, so calls
//! to one alias are serialised and calls to different aliases run in parallel. When a call
//! faults (fuel, deadline, output cap, a trap) the actor answers, drops the instance and
//! spawns a fresh one from the snapshot; the answer says the tool's state was reset.
//!
//! A registry holds one owner's tools (the server makes one per tenant; the registry itself
//! knows nothing of tenants): their scripts, their scratch folders, their quotas. What is
//! shared between registries, the server-wide tool and call budgets, is a [`Shared`].
//!
//! Every change a client makes is written to the store before it is answered ([`durable`]):
//! at start the registry lists every recorded tool at once, as a dormant slot, and starts
//! one on its first use (its first answer says `state_reset`, its info `restored_at`).
//!
//! Every accepted call holds a permit of its owner's concurrency quota and one of the
//! server's until it is answered: past either, calls are refused at once (`too_many_calls`,
//! `overloaded`) instead of queueing without bound.

mod actor;
mod cache;
mod calls;
mod debug;
mod durable;
mod error;
mod host;
mod job;
mod load;
mod observe;
mod paths;
mod pool;
mod quota;
mod scratch;
mod venvs;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::sandbox::{ImageKind, LimitOverrides, Limits, Outcome, Sandbox};
use crate::scripts::{Scripts, Source};
use crate::store::Store;
use actor::Tool;
pub use cache::{CacheStats, DEFAULT_TTL, MAX_TTL};
pub use debug::MAX_BREAKPOINTS;
use durable::Dormant;
pub use error::RegistryError;
pub use host::{Functions, Globals, GlobalsError, MAX_FUNCTIONS, Target, check_global};
use paths::{GuestPaths, SharedPaths};
pub use paths::{MAX_SYS_PATHS, Venv};
pub use venvs::{DEFAULT_VENV, MAX_VENVS, check_venv};

/// What a call produced, and whether the tool's state was reset because of it.
#[derive(Debug)]
pub struct CallReport {
    pub outcome: Outcome,
    /// The instance was discarded and replaced: module-level state starts over.
    pub state_reset: bool,
    /// The answer came from the result cache; the tool did not run.
    pub cached: bool,
    /// The call's outbound HTTP (`scriptbox.http`).
    pub egress: crate::egress::Usage,
    /// CPU time the guest used for it on the host's threads.
    pub cpu: std::time::Duration,
}

/// A loaded tool as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    pub alias: String,
    pub script_name: String,
    /// The script version the tool runs (for a shared script, its content's SHA-256).
    pub script_version: String,
    /// Whether the script is the owner's own (`tenant`) or the operator's (`shared`).
    pub script_source: Source,
    pub limits: Limits,
    pub mode: Mode,
    /// The interpreter image the tool's latest instance started from (`None` while a tool
    /// restored at start has not started yet).
    pub image: Option<ImageKind>,
    pub calls: u64,
    pub resets: u64,
    /// When the tool was re-established from the store after a restart (seconds since the
    /// epoch); its module state did not survive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<f64>,
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
    /// The owner's id in the store (and in the scripts' folders).
    pub owner: String,
    /// The most any tool may get; a load may ask for less.
    pub limits: Limits,
    /// What a load gets when it does not ask (each at most `limits`).
    pub defaults: LimitOverrides,
    pub max_tools: usize,
    pub max_concurrent_calls: usize,
    /// Calls waiting for one tool beyond the one running.
    pub queue_depth: usize,
    /// The operator's shared scripts folder (the owner's own scripts are in the store).
    pub shared_scripts: PathBuf,
    /// Where each tool's scratch folder is made, and its quotas; `None`: no scratch.
    pub scratch: Option<ScratchQuota>,
    pub max_open_files: u32,
    /// Where the owner's package environments live (`<name>/site-packages`).
    pub venvs_root: PathBuf,
    /// The native-module functions the owner's guest code may call.
    pub native: crate::native::Access,
    /// The owner's outbound HTTP (`None`: no rule, every request refused).
    pub egress: Option<Arc<crate::egress::TenantEgress>>,
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
    /// The server's counters (calls, instances, pools), which every registry records into.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The server-wide bound of `warm`, for the pool gauge.
    pub warm_total: usize,
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
            metrics: Arc::default(),
            warm_total: total,
        }
    }
}

enum Slot {
    Loading,
    Ready(Arc<Tool>),
    /// Recorded in the store, not started since the server started.
    Dormant(Box<Dormant>),
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
    /// Where the registry's changes are recorded.
    store: Store,
    /// The owner's own scripts and the shared ones.
    scripts: Scripts,
    /// Held while a dormant tool starts (one at a time: restarts are rare).
    waking: tokio::sync::Mutex<()>,
    /// Held by a load, unload or reload from its start to its record, and by a sync with the
    /// store: a sync never sees a tool started but not yet recorded.
    changing: tokio::sync::Mutex<()>,
    /// Counts changes to the set of tools or their functions (a load, unload, reload, or a
    /// change followed from another node), for the MCP endpoint's `list_changed`.
    changes: tokio::sync::watch::Sender<u64>,
}

/// The alias of an owner's session interpreter (`inject` without an alias, `execute` in
/// session mode). Not a valid client alias, so no request can name it directly.
pub const SESSION_ALIAS: &str = ".session";

impl Registry {
    /// The owner's id (in the store and in folders).
    pub fn owner(&self) -> &str {
        &self.settings.owner
    }

    /// The server's counters this registry records into.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.shared.metrics
    }

    /// Bytes in this owner's scratch folders (walked now; at most 100,000 entries).
    pub fn scratch_bytes(&self) -> u64 {
        self.settings
            .scratch
            .as_ref()
            .map_or(0, |quota| scratch::bytes_under(&quota.root, 100_000))
    }

    pub fn new(
        sandbox: Sandbox,
        settings: Settings,
        shared: Shared,
        store: Store,
        scripts: Scripts,
    ) -> Self {
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
            store,
            scripts,
            waking: tokio::sync::Mutex::new(()),
            changing: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that is marked changed each time the owner's tools change (one loaded,
    /// unloaded or reloaded here, or followed from another node).
    pub fn tool_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells the watchers of [`Registry::tool_changes`].
    fn tools_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
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

    fn get(&self, alias: &str) -> Result<Arc<Tool>, RegistryError> {
        match self.slots().get(alias) {
            Some(Slot::Ready(tool)) => Ok(Arc::clone(tool)),
            _ => Err(RegistryError::NotFound),
        }
    }

    fn ready_tools(&self) -> Vec<Arc<Tool>> {
        self.slots()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(tool) => Some(Arc::clone(tool)),
                Slot::Loading | Slot::Dormant(_) => None,
            })
            .collect()
    }

    /// How many fresh sandboxes this owner has run.
    pub fn fresh_runs(&self) -> u64 {
        self.fresh_runs.load(Ordering::Relaxed)
    }

    /// Whether `alias` is loaded, started or not (for requests answered before their work
    /// is done).
    pub fn contains(&self, alias: &str) -> bool {
        matches!(
            self.slots().get(alias),
            Some(Slot::Ready(_) | Slot::Dormant(_))
        )
    }

    /// Loaded tools (restored ones not started yet included), by alias.
    pub fn list(&self) -> Vec<ToolInfo> {
        let mut tools: Vec<ToolInfo> = self
            .slots()
            .iter()
            .filter_map(|(alias, slot)| match slot {
                Slot::Ready(tool) if tool.alias != SESSION_ALIAS => Some(tool.info()),
                Slot::Dormant(dormant) => Some(dormant.info(alias)),
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
