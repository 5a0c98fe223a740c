//! Loading, reloading and unloading tools: a slot reserved under the quotas, the first
//! instance started (it proves the script imports), then the tool's actor.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::actor::{Actor, Stats, Tool, script_hash};
use super::job::Job;
use super::scratch::ScratchDir;
use super::{Mode, Registry, RegistryError, Slot, ToolInfo, lock, pool, scripts};
use crate::names::{check_alias, check_script};
use crate::protocol::Debug;
use crate::sandbox::{LimitOverrides, Limits, Preload, Scratch, ToolMounts};

impl Registry {
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
        if !scripts::script_exists(&self.settings.scripts, script_name) {
            return Err(RegistryError::ScriptNotFound);
        }
        self.start_tool(script_name, alias, limits, mode).await
    }

    /// Starts `module` (a checked, existing script, or the empty namespace) under `alias`.
    pub(super) async fn start_tool(
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
    pub(super) fn tool_mounts(&self, scratch: Option<Scratch>) -> ToolMounts {
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
