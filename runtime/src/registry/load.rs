//! Loading, reloading and unloading tools: a slot reserved under the quotas, the first
//! instance started (it proves the script imports), then the tool's actor; each change
//! recorded in the store before it is answered.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::actor::{Actor, Stats, Tool, script_hash};
use super::job::Job;
use super::scratch::ScratchDir;
use super::{Mode, Registry, RegistryError, Slot, ToolInfo, lock, pool};
use crate::names::check_alias;
use crate::protocol::Debug;
use crate::sandbox::{LimitOverrides, Limits, Preload, Scratch, ToolMounts};
use crate::scripts::ScriptRef;

/// What a tool starts from.
pub(super) struct Start<'a> {
    pub(super) script: ScriptRef,
    pub(super) alias: &'a str,
    pub(super) limits: Limits,
    pub(super) mode: Mode,
    /// For a tool re-established from the store: when, and its recorded tracing.
    pub(super) restored: Option<(f64, Debug)>,
}

impl Registry {
    /// Loads `script_name` (the owner's own script at `version`, else its latest; or the
    /// shared one) under `alias`, importing it in a new instance, and records the load.
    pub async fn load(
        self: &Arc<Self>,
        script_name: &str,
        version: Option<&str>,
        alias: &str,
        overrides: &LimitOverrides,
        mode: Mode,
    ) -> Result<ToolInfo, RegistryError> {
        check_alias(alias)?;
        let _changing = self.changing.lock().await;
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
        if self.slots().contains_key(alias) {
            return Err(RegistryError::AliasExists);
        }
        let script = self
            .scripts
            .resolve(
                &self.settings.owner,
                &self.settings.shared_scripts,
                script_name,
                version,
            )
            .await?;
        let info = self
            .start_tool(Start {
                script,
                alias,
                limits,
                mode,
                restored: None,
            })
            .await?;
        let debug = self.get(alias).map(|tool| lock(&tool.debug).clone())?;
        match self.record_new_tool(&info, &debug).await {
            Ok(true) => Ok(info),
            // Not recorded: not loaded either.
            Ok(false) => {
                self.drop_slot(alias);
                Err(RegistryError::TooManyTools(self.settings.max_tools))
            }
            Err(err) => {
                self.drop_slot(alias);
                Err(err)
            }
        }
    }

    /// Starts `start.script` (a resolved script, or the empty namespace) under its alias.
    pub(super) async fn start_tool(
        self: &Arc<Self>,
        start: Start<'_>,
    ) -> Result<ToolInfo, RegistryError> {
        let Start {
            script,
            alias,
            limits,
            mode,
            restored,
        } = start;
        let module = script.name.clone();
        let mut reservation = self.reserve(alias, restored.is_some())?;
        let scratch = match mode {
            Mode::Persistent => self.make_scratch(alias)?,
            Mode::Isolated => None, // nothing may survive a call, files included
        };
        let mut mounts = self.tool_mounts(&script.dir, scratch);
        mounts.preload = Preload::for_script(&mounts.scripts, &module);
        let scratch = mounts.scratch.as_ref().map(|s| ScratchDir(s.dir.clone()));
        // Starting an instance is work like a call: it holds call permits while it runs.
        let permits = self.admit_call()?;
        let instance = self.sandbox.spawn(&module, &limits, &mounts).await?;
        let image = instance.image();
        drop(permits);
        let hash = script_hash(&mounts.scripts, &module);
        let pool = match mode {
            Mode::Persistent => None,
            Mode::Isolated => self.start_pool(&module, limits, &mounts),
        };
        let (restored_at, debug) = match restored {
            Some((at, debug)) => (Some(at), debug),
            None => (
                None,
                Debug {
                    trace: *lock(&self.trace_default),
                    breakpoints: Default::default(),
                },
            ),
        };
        let tool = Arc::new(Tool::start(
            Actor {
                sandbox: self.sandbox.clone(),
                script_name: module,
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
                debug: Arc::new(Mutex::new(debug)),
                script_hash: Arc::new(Mutex::new(hash)),
                script: Arc::new(Mutex::new(script)),
                restored_at: Arc::new(Mutex::new(restored_at)),
                // A restored persistent tool's first answer says its state was reset.
                state_lost: restored_at.is_some() && mode == Mode::Persistent,
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

    /// What an instance of this owner sees besides the shared mounts, with `scripts` at
    /// `/scripts`.
    pub(super) fn tool_mounts(&self, scripts: &Path, scratch: Option<Scratch>) -> ToolMounts {
        let mut mounts = ToolMounts {
            scripts: scripts.to_path_buf(),
            scratch,
            max_open_files: self.settings.max_open_files,
            sys_paths: Vec::new(),
            site_packages: None,
            preload: Default::default(),
        };
        lock(&self.paths).apply(&mut mounts);
        mounts
    }

    /// Holds `alias` while its first instance starts (`wake`: in place of its dormant slot).
    /// If the start fails, or its request is dropped mid-way (a client that hangs up), the
    /// slot is given back on drop.
    fn reserve<'a>(&'a self, alias: &str, wake: bool) -> Result<Reservation<'a>, RegistryError> {
        let mut slots = self.slots();
        let previous = match slots.get(alias) {
            Some(Slot::Dormant(_)) if wake => slots.remove(alias),
            Some(_) => return Err(RegistryError::AliasExists),
            None if slots.len() >= self.settings.max_tools => {
                return Err(RegistryError::TooManyTools(self.settings.max_tools));
            }
            None => None,
        };
        let Ok(permit) = Arc::clone(&self.shared.tools).try_acquire_owned() else {
            if let Some(previous) = previous {
                slots.insert(alias.to_owned(), previous);
            }
            return Err(RegistryError::Overloaded);
        };
        slots.insert(alias.to_owned(), Slot::Loading);
        Ok(Reservation {
            registry: self,
            alias: Some(alias.to_owned()),
            previous,
            permit: Some(permit),
        })
    }

    /// Unloads a tool at once, once the store has recorded it: its instance is dropped, and
    /// a call running or queued for it is answered `tool_unloaded`. (Letting them finish
    /// would let unload/load cycles keep more instances alive than `max_tools`.)
    pub async fn unload(&self, alias: &str) -> Result<(), RegistryError> {
        let _changing = self.changing.lock().await;
        if !matches!(
            self.slots().get(alias),
            Some(Slot::Ready(_) | Slot::Dormant(_))
        ) {
            return Err(RegistryError::NotFound);
        }
        self.forget_tool(alias).await?;
        self.drop_slot(alias);
        Ok(())
    }

    /// Drops `alias`'s slot (and its instance) from memory only.
    pub(super) fn drop_slot(&self, alias: &str) {
        let removed = {
            let mut slots = self.slots();
            match slots.get(alias) {
                Some(Slot::Ready(_) | Slot::Dormant(_)) => slots.remove(alias),
                _ => None,
            }
        };
        if let Some(Slot::Ready(tool)) = &removed {
            tool.close();
        }
        self.cache.invalidate(alias);
        if removed.is_some() && alias != super::SESSION_ALIAS {
            self.tools_changed();
        }
    }

    /// Re-imports the tool's script in a fresh instance, from its newest version (the
    /// owner's latest, or the shared file as it is now), and records the move. If the new
    /// import fails, the old instance and version stay.
    pub async fn reload(self: &Arc<Self>, alias: &str) -> Result<ToolInfo, RegistryError> {
        let _changing = self.changing.lock().await;
        let tool = self.ready(alias).await?;
        let name = tool.script_name.clone();
        let script = self
            .scripts
            .resolve(
                &self.settings.owner,
                &self.settings.shared_scripts,
                &name,
                None,
            )
            .await?;
        let permits = self.admit_call()?;
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::Reload {
            script,
            reply,
            permits,
        })?;
        let reloaded = answer.await.map_err(|_| RegistryError::Unloaded)?;
        self.cache.invalidate(alias);
        reloaded?;
        self.tools_changed();
        let info = tool.info();
        let debug = lock(&tool.debug).clone();
        self.record_tool(&info, &debug).await?;
        Ok(info)
    }
}

struct Reservation<'a> {
    registry: &'a Registry,
    alias: Option<String>,
    /// The dormant slot a wake replaced, put back if the start fails.
    previous: Option<Slot>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation<'_> {
    fn take_permit(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permit.take()
    }

    fn fill(mut self, tool: Arc<Tool>) {
        if let Some(alias) = self.alias.take() {
            // A wake starts a tool that was listed already; a new one changes the list.
            let new = self.previous.is_none() && alias != super::SESSION_ALIAS;
            self.registry.slots().insert(alias, Slot::Ready(tool));
            if new {
                self.registry.tools_changed();
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(alias) = self.alias.take() {
            let mut slots = self.registry.slots();
            if matches!(slots.get(&alias), Some(Slot::Loading)) {
                match self.previous.take() {
                    Some(previous) => slots.insert(alias, previous),
                    None => slots.remove(&alias),
                };
            }
        }
    }
}
