//! The registry's record in the store: what is written when, and how a restart reads it
//! back.
//!
//! A load is recorded once its tool has started (a crash before that leaves the old state,
//! and the client was never answered); an unload is recorded before the tool goes; a reload
//! records the version it moved to; tracing, sys paths and the cache are the owner's
//! settings. At start every recorded tool becomes a dormant slot: listed with its limits at
//! once, started on its first use from the version it ran (a shared script from its current
//! content). A record that cannot be read, or whose script is gone, is logged and skipped;
//! it never stops the server.

use std::collections::HashMap;
use std::sync::Arc;

use super::actor::Tool;
use super::{Mode, Registry, RegistryError, Slot, ToolInfo, lock};
use crate::protocol::Debug;
use crate::sandbox::Limits;
use crate::scripts::{ScriptError, ScriptRef, Source};
use crate::store::tools::ToolRecord;

/// Settings keys of the registry's own.
const SYS_PATHS: &str = "sys_paths";
const TRACE: &str = "trace";
const CACHE: &str = "cache";

/// A tool recorded in the store and not started since the server started.
#[derive(Debug, Clone)]
pub(super) struct Dormant {
    pub(super) script_name: String,
    pub(super) source: Source,
    pub(super) version: String,
    pub(super) mode: Mode,
    pub(super) limits: Limits,
    pub(super) debug: Debug,
    pub(super) restored_at: f64,
}

impl Dormant {
    /// Whether a tool showing `info` runs what this record says (script version, limits,
    /// mode).
    fn runs_as(&self, info: &ToolInfo) -> bool {
        info.script_version == self.version
            && info.script_source == self.source
            && info.limits == self.limits
            && info.mode == self.mode
    }

    pub(super) fn info(&self, alias: &str) -> ToolInfo {
        ToolInfo {
            alias: alias.to_owned(),
            script_name: self.script_name.clone(),
            script_version: self.version.clone(),
            script_source: self.source,
            limits: self.limits,
            mode: self.mode,
            image: None,
            calls: 0,
            resets: 0,
            restored_at: Some(self.restored_at),
        }
    }

    fn from_record(record: &ToolRecord, restored_at: f64) -> Result<Self, String> {
        let source = match record.source.as_str() {
            "tenant" => Source::Tenant,
            "shared" => Source::Shared,
            other => return Err(format!("unknown script source {other:?}")),
        };
        let mode = match record.mode.as_str() {
            "persistent" => Mode::Persistent,
            "isolated" => Mode::Isolated,
            other => return Err(format!("unknown mode {other:?}")),
        };
        let limits = serde_json::from_str(&record.limits).map_err(|e| format!("limits: {e}"))?;
        let debug = serde_json::from_str(&record.debug).map_err(|e| format!("debug: {e}"))?;
        Ok(Self {
            script_name: record.script_name.clone(),
            source,
            version: record.version.clone(),
            mode,
            limits,
            debug,
            restored_at,
        })
    }
}

/// What a restore found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub tools: usize,
    pub skipped: usize,
}

/// What the store keeps of a loaded tool.
fn record_of(info: &ToolInfo, debug: &Debug) -> ToolRecord {
    ToolRecord {
        alias: info.alias.clone(),
        script_name: info.script_name.clone(),
        source: info.script_source.as_str().to_owned(),
        version: info.script_version.clone(),
        mode: match info.mode {
            Mode::Persistent => "persistent",
            Mode::Isolated => "isolated",
        }
        .to_owned(),
        limits: json(&info.limits),
        debug: json(debug),
        loaded_at: crate::store::now(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn store_error(err: crate::store::StoreError) -> RegistryError {
    RegistryError::Host(anyhow::Error::from(err).context("recording the registry's change"))
}

impl Registry {
    /// Records a newly loaded tool, if the owner's recorded tools (on every node) leave
    /// room for it under `max_tools`; whether it was recorded.
    pub(super) async fn record_new_tool(
        &self,
        info: &ToolInfo,
        debug: &Debug,
    ) -> Result<bool, RegistryError> {
        self.store
            .put_new_tool(
                &self.settings.owner,
                &record_of(info, debug),
                self.settings.max_tools,
            )
            .await
            .map_err(store_error)
    }

    /// Records a tool as loaded (after a reload that moved it).
    pub(super) async fn record_tool(
        &self,
        info: &ToolInfo,
        debug: &Debug,
    ) -> Result<(), RegistryError> {
        self.store
            .put_tool(&self.settings.owner, &record_of(info, debug))
            .await
            .map_err(store_error)
    }

    /// Makes this node's tools and settings what the store records for the owner (after a
    /// change another node made): tools loaded there become dormant slots here, tools
    /// unloaded there go, tools moved to another version or limits start over from the
    /// record on their next use, and tracing follows.
    pub async fn sync(self: &Arc<Self>) {
        let owner = &self.settings.owner;
        let _changing = self.changing.lock().await;
        if let Ok(settings) = self.store.settings(owner).await {
            for (key, value) in settings {
                self.apply_setting(&key, &value);
            }
        }
        let records = match self.store.tools(owner).await {
            Ok(records) => records,
            Err(err) => {
                tracing::warn!(owner, cause = %err, "could not read the owner's tools to follow a change");
                return;
            }
        };
        let _one = self.waking.lock().await;
        let now = crate::store::now();
        let wanted: HashMap<String, Dormant> = records
            .iter()
            .filter_map(|r| Some((r.alias.clone(), Dormant::from_record(r, now).ok()?)))
            .collect();
        let closing = self.follow(&wanted);
        for tool in closing {
            self.cache.invalidate(&tool.alias);
            tool.close();
        }
    }

    /// Makes the slots what `wanted` says (telling the watchers of `tool_changes` when that
    /// changed them); the tools to close.
    fn follow(&self, wanted: &HashMap<String, Dormant>) -> Vec<Arc<Tool>> {
        let mut closing = Vec::new();
        let mut changed = false;
        let mut slots = self.slots();
        let aliases: Vec<String> = slots.keys().cloned().collect();
        for alias in aliases {
            if alias == super::SESSION_ALIAS || matches!(slots.get(&alias), Some(Slot::Loading)) {
                continue;
            }
            let Some(want) = wanted.get(&alias) else {
                // Unloaded on another node.
                if let Some(Slot::Ready(tool)) = slots.remove(&alias) {
                    closing.push(tool);
                }
                changed = true;
                continue;
            };
            let keep = match slots.get(&alias) {
                Some(Slot::Ready(tool)) => {
                    let info = tool.info();
                    let same = want.runs_as(&info);
                    if same {
                        *lock(&tool.debug) = want.debug.clone();
                    }
                    same
                }
                Some(Slot::Dormant(have)) => {
                    have.runs_as(&want.info(&alias)) && have.debug == want.debug
                }
                _ => true,
            };
            if !keep {
                changed = true;
                if let Some(Slot::Ready(tool)) =
                    slots.insert(alias.clone(), Slot::Dormant(Box::new(want.clone())))
                {
                    closing.push(tool);
                }
            }
        }
        for (alias, want) in wanted {
            if !slots.contains_key(alias) && slots.len() < self.settings.max_tools {
                slots.insert(alias.clone(), Slot::Dormant(Box::new(want.clone())));
                changed = true;
            }
        }
        drop(slots);
        if changed {
            self.tools_changed();
        }
        closing
    }

    /// Records that `alias` is unloaded.
    pub(super) async fn forget_tool(&self, alias: &str) -> Result<(), RegistryError> {
        self.store
            .delete_tool(&self.settings.owner, alias)
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// Records a tool's tracing settings.
    pub(super) async fn record_debug(
        &self,
        alias: &str,
        debug: &Debug,
    ) -> Result<(), RegistryError> {
        self.store
            .set_tool_debug(&self.settings.owner, alias, &json(debug))
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// Records one of the registry's settings.
    pub(super) async fn record_setting(
        &self,
        key: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), RegistryError> {
        self.store
            .put_setting(&self.settings.owner, key, &json(value))
            .await
            .map_err(store_error)
    }

    pub(super) async fn record_sys_paths(&self, paths: &[String]) -> Result<(), RegistryError> {
        self.record_setting(SYS_PATHS, &paths).await
    }

    pub(super) async fn record_trace(&self, on: bool) -> Result<(), RegistryError> {
        self.record_setting(TRACE, &on).await
    }

    /// Records the result cache's switch and time to live.
    pub async fn record_cache(&self, enabled: bool, ttl_s: u64) -> Result<(), RegistryError> {
        self.record_setting(
            CACHE,
            &serde_json::json!({"enabled": enabled, "ttl_s": ttl_s}),
        )
        .await
    }

    /// Re-establishes the owner's recorded tools (as dormant slots) and settings, once, at
    /// start.
    pub async fn restore(&self) -> Restored {
        let owner = &self.settings.owner;
        let mut report = Restored::default();
        match self.store.settings(owner).await {
            Ok(settings) => {
                for (key, value) in settings {
                    self.apply_setting(&key, &value);
                }
            }
            Err(err) => tracing::error!(owner, cause = %err, "could not read the owner's settings"),
        }
        let records = match self.store.tools(owner).await {
            Ok(records) => records,
            Err(err) => {
                tracing::error!(owner, cause = %err, "could not read the owner's tools");
                return report;
            }
        };
        let now = crate::store::now();
        let mut found = Vec::new();
        for record in records {
            match Dormant::from_record(&record, now) {
                Ok(dormant) if self.script_for(&dormant).await.is_ok() => {
                    found.push((record.alias, dormant));
                }
                Ok(_) => {
                    tracing::warn!(owner, alias = %record.alias, script = %record.script_name,
                        "a recorded tool's script is gone; skipped");
                    report.skipped += 1;
                }
                Err(why) => {
                    tracing::warn!(owner, alias = %record.alias, %why, "a recorded tool is damaged; skipped");
                    report.skipped += 1;
                }
            }
        }
        let mut slots = self.slots();
        for (alias, dormant) in found {
            if slots.len() >= self.settings.max_tools {
                tracing::warn!(owner, %alias, "recorded tool past max_tools; skipped");
                report.skipped += 1;
                continue;
            }
            slots.insert(alias, Slot::Dormant(Box::new(dormant)));
            report.tools += 1;
        }
        report
    }

    fn apply_setting(&self, key: &str, value: &str) {
        let owner = &self.settings.owner;
        let applied = match key {
            SYS_PATHS => serde_json::from_str::<Vec<String>>(value)
                .map(|paths| {
                    let mut paths: Vec<String> = paths
                        .into_iter()
                        .filter_map(|p| {
                            crate::names::granted_guest_path(
                                &p,
                                &[
                                    crate::sandbox::mounts::SCRIPTS_GUEST,
                                    crate::sandbox::mounts::SCRATCH_GUEST,
                                ],
                            )
                        })
                        .take(super::MAX_SYS_PATHS)
                        .collect();
                    paths.dedup();
                    lock(&self.paths).sys_paths = paths;
                })
                .is_ok(),
            TRACE => serde_json::from_str::<bool>(value)
                .map(|on| *lock(&self.trace_default) = on)
                .is_ok(),
            CACHE => serde_json::from_str::<serde_json::Value>(value)
                .ok()
                .and_then(|v| Some((v["enabled"].as_bool()?, v["ttl_s"].as_u64()?)))
                .map(|(enabled, ttl_s)| {
                    let ttl =
                        std::time::Duration::from_secs(ttl_s.clamp(1, super::MAX_TTL.as_secs()));
                    self.cache.configure(enabled, Some(ttl));
                })
                .is_some(),
            _ => true, // another layer's setting
        };
        if !applied {
            tracing::warn!(owner, key, "a recorded setting is damaged; skipped");
        }
    }

    /// Before the owner's script `name` is deleted: the aliases of the tools that run it
    /// (recorded ones included), unloaded when `force`, else refused with
    /// [`RegistryError::ScriptInUse`].
    pub async fn unload_users_of(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let users = self
            .store
            .tools_using(&self.settings.owner, name)
            .await
            .map_err(store_error)?;
        if users.is_empty() {
            return Ok(users);
        }
        if !force {
            return Err(RegistryError::ScriptInUse(users));
        }
        for alias in &users {
            match self.unload(alias).await {
                Ok(()) | Err(RegistryError::NotFound) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(users)
    }

    /// Starts the dormant tool `alias` (or finds it started by a concurrent request).
    pub(super) async fn wake(self: &Arc<Self>, alias: &str) -> Result<(), RegistryError> {
        let _one = self.waking.lock().await;
        let dormant = match self.slots().get(alias) {
            Some(Slot::Dormant(dormant)) => dormant.clone(),
            Some(Slot::Ready(_)) => return Ok(()),
            _ => return Err(RegistryError::NotFound),
        };
        let script = self.script_for(&dormant).await?;
        if script.version != dormant.version {
            tracing::info!(alias, "the shared script changed since the tool was loaded");
        }
        self.start_tool(super::load::Start {
            script,
            alias,
            limits: dormant.limits,
            mode: dormant.mode,
            restored: Some((dormant.restored_at, dormant.debug.clone())),
        })
        .await
        .map(|_| ())
    }

    /// The script a dormant tool starts from: its recorded version of the owner's script,
    /// or the shared script as it is now.
    async fn script_for(&self, dormant: &Dormant) -> Result<ScriptRef, RegistryError> {
        let found = match dormant.source {
            Source::Tenant => {
                self.scripts
                    .resolve(
                        &self.settings.owner,
                        &self.settings.shared_scripts,
                        &dormant.script_name,
                        Some(&dormant.version),
                    )
                    .await
            }
            Source::Shared => self.scripts.resolve_shared(
                &self.settings.shared_scripts,
                &dormant.script_name,
                None,
            ),
        };
        found.map_err(RegistryError::from)
    }
}

impl From<ScriptError> for RegistryError {
    fn from(err: ScriptError) -> Self {
        match err {
            ScriptError::NotFound => Self::ScriptNotFound,
            ScriptError::UnknownVersion => Self::UnknownVersion,
            ScriptError::BadName(why) => Self::BadScript(why),
            other => Self::Host(anyhow::Error::from(other).context("finding the tool's script")),
        }
    }
}
