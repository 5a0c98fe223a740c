//! What an owner's instances find on `sys.path` besides their scripts: extra paths
//! (addSysPath) and the mounted package environment, shared by the registry and its actors
//! so respawns see them too.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{CallReport, Registry, RegistryError, lock, venvs};
use crate::protocol::Op;
use crate::sandbox::{Outcome, ToolMounts};
use venvs::check_venv;

/// What an owner's instances find on `sys.path` besides their scripts, shared by a registry
/// and its actors.
pub(super) type SharedPaths = Arc<Mutex<GuestPaths>>;

#[derive(Debug, Default, Clone)]
pub(super) struct GuestPaths {
    pub(super) sys_paths: Vec<String>,
    pub(super) venv: Option<Venv>,
}

impl GuestPaths {
    pub(super) fn apply(&self, mounts: &mut ToolMounts) {
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

/// Most extra `sys.path` entries per owner.
pub const MAX_SYS_PATHS: usize = 16;

impl Registry {
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

    /// Adds a guest path (already checked to lie inside the mounts) to `sys.path` of every
    /// instance from now on (recorded first), and of the live ones now. Returns the aliases
    /// that failed to take it at once (they get it at their next start); `None` when the
    /// list is full.
    pub async fn add_sys_path(
        self: &Arc<Self>,
        path: &str,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let paths = {
            let paths = &mut lock(&self.paths).sys_paths;
            if !paths.iter().any(|p| p == path) {
                if paths.len() >= MAX_SYS_PATHS {
                    return Ok(None);
                }
                paths.push(path.to_owned());
            }
            paths.clone()
        };
        self.record_sys_paths(&paths).await?;
        let mut failed = Vec::new();
        for tool in self.ready_tools() {
            if tool.alias == super::SESSION_ALIAS {
                continue;
            }
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
                failed.push(tool.alias.clone());
            }
        }
        failed.sort();
        Ok(Some(failed))
    }

    /// The extra `sys.path` entries.
    pub fn sys_paths(&self) -> Vec<String> {
        lock(&self.paths).sys_paths.clone()
    }
}
