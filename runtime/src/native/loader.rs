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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::abi::Answer;
use super::bridge::{Bridge, Dependencies};
use super::error::NativeError;
use super::files::{discover, open};
use super::manifest::Manifest;
use super::order;
use super::table::{Entry, Loaded, State, Status, Table, lock, status_of};

/// The longest a module's open and init may take before its load is given up.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// What the loader's handles share: the settings, the admin lock, the table, the call slots.
pub(super) struct Shared {
    pub(super) settings: Settings,
    admin: tokio::sync::Mutex<()>,
    pub(super) table: Mutex<Table>,
    pub(super) permits: Arc<Semaphore>,
}

/// The loader. Cheap to clone.
#[derive(Clone)]
pub struct NativeModules {
    pub(super) shared: Arc<Shared>,
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

    pub(super) fn count(&self, name: &str, failed: bool) {
        if let Some(entry) = lock(&self.table).entries.get_mut(name) {
            entry.calls += 1;
            entry.failures += u64::from(failed);
        }
    }
}

impl Dependencies for Shared {
    fn call(&self, module: &str, function: &str, args: &str) -> Answer {
        match self.loaded(module) {
            Ok(loaded) => loaded.library.call(function, args).unwrap_or_else(|| {
                Answer::Err(format!("module {module:?} has no function {function:?}"))
            }),
            Err(err) => Answer::Err(err.to_string()),
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
            let dependencies: Arc<dyn Dependencies> = self.shared.clone();
            let bridge = Bridge::new(&step, &manifest, Arc::downgrade(&dependencies));
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
}

async fn finish<T>(
    task: tokio::task::JoinHandle<Result<T, NativeError>>,
) -> Result<T, NativeError> {
    task.await
        .map_err(|err| NativeError::Host(format!("the module operation failed: {err}")))?
}
