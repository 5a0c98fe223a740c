//! The loader's table of modules: each module's manifest, state, library and counters, and
//! what `status` and `list` report of them. Guarded by one plain mutex ([`lock`]), never held
//! across library code, a thread hop or an `.await` (see the loader's lock discipline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::abi::Library;
use super::bridge::Bridge;
use super::manifest::Manifest;
use super::order;

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

/// A loaded module: its library, and the host table it was initialised with. The library is
/// declared first so that it is shut down and closed before the table is freed.
pub(super) struct Loaded {
    pub(super) library: Library,
    pub(super) _bridge: Box<Bridge>,
}

pub(super) struct Entry {
    pub(super) manifest: Manifest,
    pub(super) folder: PathBuf,
    pub(super) state: State,
    pub(super) error: Option<String>,
    pub(super) module: Option<Arc<Loaded>>,
    pub(super) calls: u64,
    pub(super) failures: u64,
}

#[derive(Default)]
pub(super) struct Table {
    pub(super) entries: BTreeMap<String, Entry>,
    /// Disabled module names: kept apart from the entries, so a module whose folder is
    /// broken for a while is still disabled once it is fixed.
    pub(super) disabled: std::collections::BTreeSet<String>,
    /// Folders whose manifest could not be read, with the reason.
    pub(super) invalid: BTreeMap<String, String>,
}

impl Table {
    /// Every known module's manifest, by name (what the load order is computed from).
    pub(super) fn manifests(&self) -> BTreeMap<String, Manifest> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.clone(), entry.manifest.clone()))
            .collect()
    }
}

pub(super) fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|poison| poison.into_inner())
}

pub(super) fn status_of(table: &Table, name: &str) -> Option<Status> {
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
