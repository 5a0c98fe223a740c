//! The native-module loader: discovers `modules/<name>/module.json`, loads libraries in
//! dependency order, keeps each module's state, and runs calls on blocking threads.
//!
//! **Lock discipline** (the original deadlocked on its own lock):
//! * `admin` (async) serialises load, unload, reload, enable and disable. Calls never take it.
//! * `table` (a plain mutex) guards the map of modules. It is only held to read or change the
//!   map: never across library code, a thread hop or an `.await`. A module's init may call
//!   its dependencies through the host, which takes `table` briefly: that is why it is never
//!   held while library code runs.
//!
//! The order is always `admin` then `table`. A call clones the module's `Arc` out of the table
//! and drops the lock before entering the library, so unloading never waits for calls: the
//! library is shut down and closed when the last call that holds it returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::abi::{Answer, Library};
use super::bridge::Bridge;
use super::manifest::{Manifest, ManifestError};
use super::order::{self, OrderError};

/// Most module folders looked at under the modules folder.
pub const MAX_MODULES: usize = 256;
/// The largest library whose hash is checked (and so the largest loaded with a `sha256`).
pub const MAX_LIBRARY_BYTES: u64 = 512 << 20;
/// The largest `configFile` read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
const STATE_FILE: &str = "native-modules.json";
/// The longest a module's open and init may take before its load is given up.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a module is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Unloaded,
    Loading,
    Loaded,
    /// The last load failed (`error` says why) or the manifest is invalid.
    Error,
    /// Refused until enabled again.
    Disabled,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unloaded => "unloaded",
            Self::Loading => "loading",
            Self::Loaded => "loaded",
            Self::Error => "in the error state",
            Self::Disabled => "disabled",
        })
    }
}

/// Why a module operation or call was refused.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("no native module is named {0:?}")]
    Unknown(String),
    #[error("module {name:?} has an invalid manifest: {error}")]
    InvalidManifest { name: String, error: String },
    #[error("{0}")]
    Order(#[from] OrderError),
    #[error("module {name:?} is needed by {} (loaded); unload them first", .dependents.join(", "))]
    InUse {
        name: String,
        dependents: Vec<String>,
    },
    #[error("module {name:?} is not loaded (it is {state})")]
    NotLoaded { name: String, state: State },
    #[error("module {name:?} is disabled; enable it first")]
    Disabled { name: String },
    #[error("module {name:?} failed to load: {error}")]
    LoadFailed { name: String, error: String },
    #[error("module {module:?} has no function {function:?}")]
    UnknownFunction { module: String, function: String },
    #[error("{module}.{function} failed: {message}")]
    Failed {
        module: String,
        function: String,
        message: String,
    },
    #[error("{module}.{function} did not answer within {ms} ms")]
    Timeout {
        module: String,
        function: String,
        ms: u128,
    },
    #[error("every native-call thread is busy; try again later")]
    Busy,
    #[error("the path must be a module folder inside the modules folder")]
    ForbiddenPath,
    #[error("{0}")]
    Host(String),
}

/// What `status` and `list` report about a module.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub functions: Vec<String>,
    pub dependencies: Vec<String>,
    /// Modules that depend on this one.
    pub dependents: Vec<String>,
    pub calls: u64,
    pub failures: u64,
}

/// Settings of the loader.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The modules folder (`modules/`).
    pub dir: PathBuf,
    /// Where the loaded and disabled sets are kept across restarts.
    pub data_dir: PathBuf,
    /// Native calls running at once.
    pub max_concurrent_calls: usize,
    /// The longest a REST call waits for a module.
    pub call_timeout: Duration,
}

/// A loaded module: its library, and the host table it was initialised with. The library is
/// declared first so that it is shut down and closed before the table is freed.
pub(super) struct Loaded {
    pub(super) library: Library,
    _bridge: Box<Bridge>,
}

struct Entry {
    manifest: Manifest,
    folder: PathBuf,
    state: State,
    error: Option<String>,
    module: Option<Arc<Loaded>>,
    calls: u64,
    failures: u64,
}

#[derive(Default)]
struct Table {
    entries: BTreeMap<String, Entry>,
    /// Disabled module names: kept apart from the entries, so a module whose folder is
    /// broken for a while is still disabled once it is fixed.
    disabled: std::collections::BTreeSet<String>,
    /// Folders whose manifest could not be read, with the reason.
    invalid: BTreeMap<String, String>,
}

impl Table {
    /// Every known module's manifest, by name (what the load order is computed from).
    fn manifests(&self) -> BTreeMap<String, Manifest> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.clone(), entry.manifest.clone()))
            .collect()
    }
}

/// What survives a restart.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    loaded: Vec<String>,
    disabled: Vec<String>,
}

pub(super) struct Shared {
    settings: Settings,
    admin: tokio::sync::Mutex<()>,
    table: Mutex<Table>,
    permits: Arc<Semaphore>,
}

/// The loader. Cheap to clone.
#[derive(Clone)]
pub struct NativeModules {
    shared: Arc<Shared>,
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Shared {
    /// The loaded module `name`, for a call (the table lock is released on return).
    pub(super) fn loaded(&self, name: &str) -> Result<Arc<Loaded>, NativeError> {
        let table = lock(&self.table);
        let entry = table
            .entries
            .get(name)
            .ok_or_else(|| NativeError::Unknown(name.to_owned()))?;
        match (&entry.module, entry.state) {
            (Some(module), State::Loaded) => Ok(Arc::clone(module)),
            (_, State::Disabled) => Err(NativeError::Disabled {
                name: name.to_owned(),
            }),
            (_, state) => Err(NativeError::NotLoaded {
                name: name.to_owned(),
                state,
            }),
        }
    }

    fn count(&self, name: &str, failed: bool) {
        if let Some(entry) = lock(&self.table).entries.get_mut(name) {
            entry.calls += 1;
            entry.failures += u64::from(failed);
        }
    }
}

impl NativeModules {
    /// Discovers the modules (nothing is loaded yet: see [`NativeModules::restore`]).
    pub fn new(settings: Settings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_concurrent_calls.max(1)));
        let this = Self {
            shared: Arc::new(Shared {
                settings,
                admin: tokio::sync::Mutex::new(()),
                table: Mutex::new(Table::default()),
                permits,
            }),
        };
        this.rescan();
        this
    }

    /// Disables and loads again what was disabled and loaded before the last stop. A module
    /// that fails is logged and shown in the `error` state; it never stops the server.
    pub async fn restore(&self) {
        let _admin = self.shared.admin.lock().await;
        self.rescan();
        let saved = self.read_saved();
        {
            let mut table = lock(&self.shared.table);
            table.disabled = saved.disabled.iter().cloned().collect();
            for name in &saved.disabled {
                if let Some(entry) = table.entries.get_mut(name) {
                    entry.state = State::Disabled;
                }
            }
        }
        for name in &saved.loaded {
            if let Err(err) = self.load_locked(name).await {
                tracing::warn!(module = %name, error = %err, "native module not restored");
            }
        }
    }

    /// Every module found (valid or not), by name.
    pub fn list(&self) -> Vec<Status> {
        let table = lock(&self.shared.table);
        let mut all: Vec<Status> = table
            .entries
            .keys()
            .filter_map(|name| status_of(&table, name))
            .collect();
        all.extend(table.invalid.iter().map(|(folder, error)| Status {
            name: folder.clone(),
            state: State::Error,
            version: None,
            error: Some(error.clone()),
            functions: Vec::new(),
            dependencies: Vec::new(),
            dependents: Vec::new(),
            calls: 0,
            failures: 0,
        }));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Re-reads the modules folder, so a module dropped in (or fixed) is seen.
    pub async fn refresh(&self) {
        let _admin = self.shared.admin.lock().await;
        self.rescan();
    }

    /// One module's status, after a [`NativeModules::refresh`].
    pub async fn status(&self, name: &str) -> Result<Status, NativeError> {
        self.refresh().await;
        let table = lock(&self.shared.table);
        if let Some(error) = table.invalid.get(name) {
            return Err(NativeError::InvalidManifest {
                name: name.to_owned(),
                error: error.clone(),
            });
        }
        status_of(&table, name).ok_or_else(|| NativeError::Unknown(name.to_owned()))
    }

    /// Whether `name` is loaded and exports `function`.
    pub fn has_function(&self, name: &str, function: &str) -> Result<bool, NativeError> {
        let table = lock(&self.shared.table);
        let entry = table
            .entries
            .get(name)
            .ok_or_else(|| NativeError::Unknown(name.to_owned()))?;
        Ok(entry
            .module
            .as_ref()
            .is_some_and(|module| module.library.has(function)))
    }

    async fn load_now(
        &self,
        name: &str,
        folder: Option<&Path>,
    ) -> Result<Vec<String>, NativeError> {
        let _admin = self.shared.admin.lock().await;
        if let Some(folder) = folder {
            self.check_folder(name, folder)?;
        }
        self.rescan();
        let loaded = self.load_locked(name).await;
        self.save();
        loaded
    }

    /// Unloads `name`; refused while a loaded module depends on it.
    async fn unload_now(&self, name: &str) -> Result<(), NativeError> {
        let _admin = self.shared.admin.lock().await;
        self.known(name)?;
        self.not_disabled(name)?;
        let dependents = self.loaded_dependents(name);
        if !dependents.is_empty() {
            return Err(NativeError::InUse {
                name: name.to_owned(),
                dependents,
            });
        }
        self.unload_locked(name, State::Unloaded).await;
        self.save();
        Ok(())
    }

    /// Unloads `name` and the loaded modules depending on it, re-reads its manifest, and
    /// loads it and those dependents again, so they never see an old copy. Returns what was
    /// loaded again, in order.
    async fn reload_now(&self, name: &str) -> Result<Vec<String>, NativeError> {
        let _admin = self.shared.admin.lock().await;
        self.known(name)?;
        self.not_disabled(name)?;
        let dependents = self.loaded_dependents_in_order(name);
        for dependent in dependents.iter().rev() {
            self.unload_locked(dependent, State::Unloaded).await;
        }
        self.unload_locked(name, State::Unloaded).await;
        self.rescan();
        let mut reloaded = self.load_locked(name).await;
        for dependent in &dependents {
            reloaded = match reloaded {
                Ok(mut done) => self.load_locked(dependent).await.map(|more| {
                    done.extend(more);
                    done
                }),
                Err(err) => Err(err),
            };
        }
        self.save();
        reloaded
    }

    /// Lets `name` be loaded again (it stays unloaded).
    async fn enable_now(&self, name: &str) -> Result<(), NativeError> {
        let _admin = self.shared.admin.lock().await;
        self.known(name)?;
        {
            let mut table = lock(&self.shared.table);
            table.disabled.remove(name);
            if let Some(entry) = table.entries.get_mut(name)
                && entry.state == State::Disabled
            {
                entry.state = State::Unloaded;
            }
        }
        self.save();
        Ok(())
    }

    /// Unloads `name` (refused while loaded modules depend on it) and refuses loads until it
    /// is enabled again.
    async fn disable_now(&self, name: &str) -> Result<(), NativeError> {
        let _admin = self.shared.admin.lock().await;
        self.known(name)?;
        let dependents = self.loaded_dependents(name);
        if !dependents.is_empty() {
            return Err(NativeError::InUse {
                name: name.to_owned(),
                dependents,
            });
        }
        lock(&self.shared.table).disabled.insert(name.to_owned());
        self.unload_locked(name, State::Disabled).await;
        self.save();
        Ok(())
    }

    /// Loads `name` and what it depends on, in order. `folder`: the module's folder, which
    /// must be inside the modules folder (the `{path, name}` form). Returns the modules this
    /// call loaded, in order. Like every lifecycle operation it runs to its end on a task of
    /// its own, holding the admin lock, even if the request that asked for it goes away.
    pub async fn load(
        &self,
        name: &str,
        folder: Option<&Path>,
    ) -> Result<Vec<String>, NativeError> {
        let (this, name, folder) = (self.clone(), name.to_owned(), folder.map(Path::to_path_buf));
        finish(tokio::spawn(async move {
            this.load_now(&name, folder.as_deref()).await
        }))
        .await
    }

    /// Unloads `name`; refused while a loaded module depends on it, or while it is disabled.
    pub async fn unload(&self, name: &str) -> Result<(), NativeError> {
        let (this, name) = (self.clone(), name.to_owned());
        finish(tokio::spawn(async move { this.unload_now(&name).await })).await
    }

    /// Unloads `name` and the loaded modules depending on it, and loads them again (see
    /// `reload_now`).
    pub async fn reload(&self, name: &str) -> Result<Vec<String>, NativeError> {
        let (this, name) = (self.clone(), name.to_owned());
        finish(tokio::spawn(async move { this.reload_now(&name).await })).await
    }

    /// Lets a disabled `name` be loaded again.
    pub async fn enable(&self, name: &str) -> Result<(), NativeError> {
        let (this, name) = (self.clone(), name.to_owned());
        finish(tokio::spawn(async move { this.enable_now(&name).await })).await
    }

    /// Unloads `name` and refuses loads until it is enabled.
    pub async fn disable(&self, name: &str) -> Result<(), NativeError> {
        let (this, name) = (self.clone(), name.to_owned());
        finish(tokio::spawn(async move { this.disable_now(&name).await })).await
    }

    /// Calls `module.function` with `args` (JSON text) on a blocking thread, waiting at most
    /// `within` (or the configured call timeout, whichever is shorter). The answer is JSON.
    ///
    /// `share`: a slot of the caller's own share of native calls (a tenant's), held like the
    /// server-wide one until the library returns, so a tenant whose guests give up on slow
    /// calls cannot take every slot.
    pub async fn call(
        &self,
        module: &str,
        function: &str,
        args: &str,
        within: Option<Duration>,
        share: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Box<RawValue>, NativeError> {
        let limit = within.map_or(self.shared.settings.call_timeout, |w| {
            w.min(self.shared.settings.call_timeout)
        });
        let started = tokio::time::Instant::now();
        let timeout = || NativeError::Timeout {
            module: module.to_owned(),
            function: function.to_owned(),
            ms: limit.as_millis(),
        };
        // The slot first, then the module: a call waiting for a slot must not keep an
        // unloaded module's library alive.
        let permit = tokio::time::timeout(limit, Arc::clone(&self.shared.permits).acquire_owned())
            .await
            .map_err(|_| NativeError::Busy)?
            .map_err(|_| NativeError::Busy)?;
        let loaded = self.shared.loaded(module)?;
        if !loaded.library.has(function) {
            // Dropped off the async threads, in case it is the last hold on an unloaded
            // module (whose shutdown is module code).
            tokio::task::spawn_blocking(move || drop((loaded, permit, share)));
            return Err(NativeError::UnknownFunction {
                module: module.to_owned(),
                function: function.to_owned(),
            });
        }
        let (name, args) = (function.to_owned(), args.to_owned());
        // The thread holds its permit until the library returns, even after the caller gave
        // up: a module that hangs keeps using its slot, so hung calls cannot pile up threads.
        let task = tokio::task::spawn_blocking(move || {
            let _permit = (permit, share);
            loaded.library.call(&name, &args)
        });
        let answer = tokio::time::timeout(limit.saturating_sub(started.elapsed()), task).await;
        let answer = match answer {
            Err(_) => {
                self.shared.count(module, true);
                return Err(timeout());
            }
            Ok(Err(join)) => Err(NativeError::Host(format!(
                "native call thread failed: {join}"
            ))),
            Ok(Ok(None)) => Err(NativeError::UnknownFunction {
                module: module.to_owned(),
                function: function.to_owned(),
            }),
            Ok(Ok(Some(Answer::Ok(text)))) => {
                RawValue::from_string(text).map_err(|_| NativeError::Failed {
                    module: module.to_owned(),
                    function: function.to_owned(),
                    message: "the module answered text that is not JSON".to_owned(),
                })
            }
            Ok(Ok(Some(Answer::Err(message)))) => Err(NativeError::Failed {
                module: module.to_owned(),
                function: function.to_owned(),
                message,
            }),
        };
        self.shared.count(module, answer.is_err());
        answer
    }

    fn not_disabled(&self, name: &str) -> Result<(), NativeError> {
        if lock(&self.shared.table).disabled.contains(name) {
            return Err(NativeError::Disabled {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn known(&self, name: &str) -> Result<(), NativeError> {
        self.rescan();
        let table = lock(&self.shared.table);
        if let Some(error) = table.invalid.get(name) {
            return Err(NativeError::InvalidManifest {
                name: name.to_owned(),
                error: error.clone(),
            });
        }
        if table.entries.contains_key(name) {
            Ok(())
        } else {
            Err(NativeError::Unknown(name.to_owned()))
        }
    }

    fn check_folder(&self, name: &str, folder: &Path) -> Result<(), NativeError> {
        let root = self
            .shared
            .settings
            .dir
            .canonicalize()
            .map_err(|_| NativeError::ForbiddenPath)?;
        let folder = if folder.is_absolute() {
            folder.to_path_buf()
        } else {
            self.shared.settings.dir.join(folder)
        };
        let folder = folder
            .canonicalize()
            .map_err(|_| NativeError::ForbiddenPath)?;
        if folder.parent() != Some(root.as_path()) || folder.file_name() != Some(name.as_ref()) {
            return Err(NativeError::ForbiddenPath);
        }
        Ok(())
    }

    /// Re-reads the manifests of modules that are not loaded (a loaded module keeps the
    /// manifest it was loaded with until it is unloaded or reloaded).
    fn rescan(&self) {
        let found = discover(&self.shared.settings.dir);
        let mut table = lock(&self.shared.table);
        table.invalid.clear();
        let present: Vec<String> = found.keys().cloned().collect();
        for (folder, read) in found {
            match read {
                Err(error) => {
                    // A loaded module keeps running on the manifest it was loaded with; the
                    // broken one shows up when it is unloaded or reloaded.
                    if table
                        .entries
                        .get(&folder)
                        .is_none_or(|e| e.module.is_none())
                    {
                        table.entries.remove(&folder);
                        table.invalid.insert(folder, error.to_string());
                    }
                }
                Ok(manifest) => match table.entries.get_mut(&folder) {
                    Some(entry) if entry.module.is_some() => {}
                    Some(entry) => entry.manifest = manifest,
                    None => {
                        let state = if table.disabled.contains(&folder) {
                            State::Disabled
                        } else {
                            State::Unloaded
                        };
                        table.entries.insert(
                            folder.clone(),
                            Entry {
                                manifest,
                                folder: self.shared.settings.dir.join(&folder),
                                state,
                                error: None,
                                module: None,
                                calls: 0,
                                failures: 0,
                            },
                        );
                    }
                },
            }
        }
        // A module whose folder went away is forgotten unless it is still loaded.
        table
            .entries
            .retain(|name, entry| entry.module.is_some() || present.contains(name));
    }

    fn manifests(&self) -> BTreeMap<String, Manifest> {
        lock(&self.shared.table).manifests()
    }

    fn loaded_dependents(&self, name: &str) -> Vec<String> {
        let table = lock(&self.shared.table);
        order::dependents(name, &table.manifests())
            .into_iter()
            .filter(|d| table.entries.get(d).is_some_and(|e| e.module.is_some()))
            .collect()
    }

    /// The loaded dependents of `name`, each after the ones it depends on.
    fn loaded_dependents_in_order(&self, name: &str) -> Vec<String> {
        let dependents = self.loaded_dependents(name);
        let manifests = self.manifests();
        let mut ordered: Vec<String> = Vec::new();
        for dependent in &dependents {
            if let Ok(chain) = order::load_order(dependent, &manifests) {
                for step in chain {
                    if dependents.contains(&step) && !ordered.contains(&step) {
                        ordered.push(step);
                    }
                }
            }
        }
        ordered
    }

    /// Loads `name` and its dependencies; the caller holds `admin`.
    async fn load_locked(&self, name: &str) -> Result<Vec<String>, NativeError> {
        self.known(name)?;
        let order = order::load_order(name, &self.manifests())?;
        let mut done = Vec::new();
        for step in order {
            let (manifest, folder) = {
                let mut table = lock(&self.shared.table);
                let disabled = table.disabled.contains(&step);
                let Some(entry) = table.entries.get_mut(&step) else {
                    return Err(NativeError::Unknown(step));
                };
                if entry.state == State::Loaded {
                    continue;
                }
                if disabled {
                    return Err(NativeError::Disabled { name: step });
                }
                entry.state = State::Loading;
                entry.error = None;
                (entry.manifest.clone(), entry.folder.clone())
            };
            let bridge = Bridge::new(&step, &manifest, Arc::downgrade(&self.shared));
            let copies = self.shared.settings.data_dir.join("native-copies");
            let opened = tokio::time::timeout(
                INIT_TIMEOUT,
                tokio::task::spawn_blocking(move || open(&manifest, &folder, &copies, bridge)),
            )
            .await
            .unwrap_or_else(|_| {
                // The thread cannot be stopped; it keeps its library open if it ever returns.
                Ok(Err(format!(
                    "its init did not return within {} s",
                    INIT_TIMEOUT.as_secs()
                )))
            });
            let opened =
                opened.unwrap_or_else(|join| Err(format!("the loader thread failed: {join}")));
            let mut table = lock(&self.shared.table);
            let Some(entry) = table.entries.get_mut(&step) else {
                return Err(NativeError::Unknown(step));
            };
            match opened {
                Ok(module) => {
                    entry.module = Some(Arc::new(module));
                    entry.state = State::Loaded;
                    tracing::info!(module = %step, "native module loaded");
                    done.push(step);
                }
                Err(error) => {
                    entry.state = State::Error;
                    entry.error = Some(error.clone());
                    tracing::warn!(module = %step, %error, "native module failed to load");
                    return Err(NativeError::LoadFailed { name: step, error });
                }
            }
        }
        Ok(done)
    }

    /// Takes `name` out of the table (its library closes when the last call holding it
    /// returns) and leaves it in `state`; the caller holds `admin`.
    async fn unload_locked(&self, name: &str, state: State) {
        let module = {
            let mut table = lock(&self.shared.table);
            let Some(entry) = table.entries.get_mut(name) else {
                return;
            };
            entry.state = state;
            entry.error = None;
            entry.module.take()
        };
        if let Some(module) = module {
            // Shutdown runs module code: off the async threads, and without any lock held.
            let _ = tokio::task::spawn_blocking(move || drop(module)).await;
            tracing::info!(module = %name, "native module unloaded");
        }
    }

    fn state_path(&self) -> PathBuf {
        self.shared.settings.data_dir.join(STATE_FILE)
    }

    fn read_saved(&self) -> Saved {
        std::fs::read(self.state_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records the loaded (in load order) and disabled modules.
    fn save(&self) {
        let saved = {
            let table = lock(&self.shared.table);
            let mut loaded: Vec<String> = Vec::new();
            let manifests = table.manifests();
            for (name, entry) in &table.entries {
                if entry.module.is_some()
                    && let Ok(chain) = order::load_order(name, &manifests)
                {
                    for step in chain {
                        if !loaded.contains(&step) {
                            loaded.push(step);
                        }
                    }
                }
            }
            Saved {
                loaded,
                disabled: table.disabled.iter().cloned().collect(),
            }
        };
        let write = || -> std::io::Result<()> {
            let path = self.state_path();
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&saved)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(err) = write() {
            tracing::warn!(error = %err, "could not record the native modules' states");
        }
    }
}

async fn finish<T>(
    task: tokio::task::JoinHandle<Result<T, NativeError>>,
) -> Result<T, NativeError> {
    task.await
        .map_err(|err| NativeError::Host(format!("the module operation failed: {err}")))?
}

fn status_of(table: &Table, name: &str) -> Option<Status> {
    let entry = table.entries.get(name)?;
    let manifests = table.manifests();
    Some(Status {
        name: name.to_owned(),
        state: entry.state,
        version: Some(entry.manifest.version.to_string()),
        error: entry.error.clone(),
        functions: entry.manifest.functions.clone(),
        dependencies: entry
            .manifest
            .dependencies
            .iter()
            .map(|d| format!("{}@{}", d.name, d.version))
            .collect(),
        dependents: order::dependents(name, &manifests),
        calls: entry.calls,
        failures: entry.failures,
    })
}

/// Reads every `<dir>/<folder>/module.json` (at most [`MAX_MODULES`] folders).
fn discover(dir: &Path) -> BTreeMap<String, Result<Manifest, ManifestError>> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.filter_map(Result::ok).take(MAX_MODULES) {
        let path = entry.path();
        if !path.join("module.json").is_file() {
            continue;
        }
        let Ok(folder) = entry.file_name().into_string() else {
            continue;
        };
        let read = Manifest::read(&path).and_then(|manifest| {
            if manifest.name == folder {
                Ok(manifest)
            } else {
                Err(ManifestError(format!(
                    "{folder}/module.json: name {:?} does not match its folder {folder:?}",
                    manifest.name
                )))
            }
        });
        found.insert(folder, read);
    }
    found
}

/// Opens, checks and initialises one module's library (blocking).
fn open(
    manifest: &Manifest,
    folder: &Path,
    copies: &Path,
    bridge: Box<Bridge>,
) -> Result<Loaded, String> {
    let path = folder.join(&manifest.library);
    // Each load opens a private copy of the library. The dynamic loader shares one image per
    // file, so opening the installed file again while an old copy still serves a call (a
    // reload) would hand back the old code and its statics; a copy of its own gives every
    // load its own image. The hash is checked on the copy, the bytes that are opened.
    let copy = private_copy(&path, &manifest.name, copies)?;
    let opened = check_hash(&copy, manifest.sha256.as_deref())
        .and_then(|()| Library::open(&copy, &manifest.functions));
    // Open (or refused): the file itself is not needed any more.
    let _ = std::fs::remove_file(&copy);
    let mut library = opened?;
    let config = match &manifest.config_file {
        None => "null".to_owned(),
        Some(file) => read_config(&folder.join(file))?,
    };
    library.init(bridge.api(), &config)?;
    Ok(Loaded {
        library,
        _bridge: bridge,
    })
}

/// Copies the library (at most [`MAX_LIBRARY_BYTES`]) to a new private file under `copies`.
fn private_copy(path: &Path, name: &str, copies: &Path) -> Result<PathBuf, String> {
    use std::io::Read as _;
    let source = std::fs::File::open(path).map_err(|_| {
        format!(
            "the library {} is missing",
            path.file_name().unwrap_or_default().to_string_lossy()
        )
    })?;
    std::fs::create_dir_all(copies).map_err(|err| format!("cannot prepare the library: {err}"))?;
    let copy = copies.join(format!(
        "{name}-{}{}",
        uuid::Uuid::new_v4().simple(),
        std::env::consts::DLL_SUFFIX
    ));
    let mut target =
        std::fs::File::create(&copy).map_err(|err| format!("cannot prepare the library: {err}"))?;
    let copied = std::io::copy(&mut source.take(MAX_LIBRARY_BYTES + 1), &mut target);
    match copied {
        Ok(bytes) if bytes <= MAX_LIBRARY_BYTES => Ok(copy),
        Ok(_) => {
            let _ = std::fs::remove_file(&copy);
            Err(format!(
                "the library is larger than {MAX_LIBRARY_BYTES} bytes"
            ))
        }
        Err(err) => {
            let _ = std::fs::remove_file(&copy);
            Err(format!("cannot read the library: {err}"))
        }
    }
}

fn check_hash(copy: &Path, expected: Option<&str>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let mut file =
        std::fs::File::open(copy).map_err(|err| format!("cannot read the library: {err}"))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|err| format!("cannot read the library: {err}"))?;
    let found = hex::encode(hasher.finalize());
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "the library's SHA-256 is {found}, but module.json says {expected}"
        ))
    }
}

fn read_config(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path)
        .map_err(|_| format!("the config file {} is missing", path.display()))?;
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "the config file is larger than {MAX_CONFIG_BYTES} bytes"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the config file: {err}"))?;
    serde_json::from_str::<&RawValue>(&text)
        .map_err(|err| format!("the config file is not JSON: {err}"))?;
    Ok(text)
}
