//! Packages across nodes: an install is recorded in the store with the wheels it came from
//! ([`records`], [`read_wheels`]), and every other node makes its copy of the tenant's
//! environments what the store says ([`Packages::materialize`]): missing packages are
//! installed from the stored wheels (each checked against its SHA-256 before it is
//! unpacked, with the same checks as a download), removed ones removed. pip does not run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::{InstallError, Installed, PackageError, Packages, Site, blocking};
use crate::registry::{DEFAULT_VENV, Registry, Venv};
use crate::store::packages::{PackageRecord, Wheel};

/// The store's rows for packages installed into `env`.
pub(super) fn records(env: &str, installed: &[Installed]) -> Vec<PackageRecord> {
    installed
        .iter()
        .map(|p| PackageRecord {
            env: env.to_owned(),
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
            bytes: p.bytes,
            removed: false,
        })
        .collect()
}

/// The downloaded wheels' contents, to store.
pub(super) fn read_wheels(paths: &[PathBuf]) -> Result<Vec<Wheel>, PackageError> {
    paths
        .iter()
        .map(|path| {
            let content = std::fs::read(path).map_err(|source| PackageError::Io {
                what: "reading a downloaded wheel",
                source,
            })?;
            Ok(Wheel {
                sha256: hex::encode(Sha256::digest(&content)),
                file: path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("package.whl")
                    .to_owned(),
                content,
            })
        })
        .collect()
}

/// What [`Packages::materialize`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Materialized {
    pub installed: usize,
    pub removed: usize,
}

/// One environment's difference from the store.
struct Plan {
    venv: Venv,
    install: Vec<PackageRecord>,
    remove: Vec<String>,
}

impl Packages {
    /// Makes this node's copy of the owner's environments what the store records: packages
    /// installed through another node are installed from their stored wheels, removed ones
    /// removed. A package this node has that the store never knew of is left alone.
    pub async fn materialize(
        self: &Arc<Self>,
        registry: &Registry,
    ) -> Result<Materialized, InstallError> {
        let _turn = Arc::clone(&registry.install_lock).lock_owned().await;
        let records = self.store.package_records(registry.owner()).await?;
        let mut done = Materialized::default();
        let mut envs: Vec<&str> = records.iter().map(|r| r.env.as_str()).collect();
        envs.dedup();
        for env in envs {
            let rows: Vec<PackageRecord> =
                records.iter().filter(|r| r.env == env).cloned().collect();
            let Some(plan) = self.plan(registry, env, rows).await? else {
                continue;
            };
            let mut wheels = Vec::with_capacity(plan.install.len());
            for record in &plan.install {
                match self.store.wheel(&record.sha256).await? {
                    Some(wheel) => wheels.push(wheel),
                    // Removed meanwhile: the next change says so.
                    None => {
                        tracing::warn!(package = %record.name, "a recorded package's wheel is gone")
                    }
                }
            }
            let (limits, downloads) = (self.limits.clone(), self.downloads.clone());
            let step = blocking(move || apply(&plan, &wheels, &limits, &downloads)).await?;
            done.installed += step.installed;
            done.removed += step.removed;
        }
        Ok(done)
    }

    /// What `env` lacks or has too many of, compared with the store's `rows` (`None`: it
    /// matches).
    async fn plan(
        &self,
        registry: &Registry,
        env: &str,
        rows: Vec<PackageRecord>,
    ) -> Result<Option<Plan>, InstallError> {
        let any_live = rows.iter().any(|r| !r.removed);
        let venv = if env == DEFAULT_VENV && any_live {
            registry.package_env(None)?
        } else if any_live {
            registry.create_venv(env)?.0
        } else {
            match registry.package_env(Some(env)) {
                Ok(venv) => venv,
                Err(_) => return Ok(None), // nothing to remove from an environment it lacks
            }
        };
        let site_dir = venv.site_packages.clone();
        let local = blocking(move || Site::open(&site_dir)?.installed()).await?;
        let has = |name: &str| local.iter().find(|p| p.name == name);
        let install: Vec<PackageRecord> = rows
            .iter()
            .filter(|r| !r.removed && has(&r.name).is_none_or(|p| p.sha256 != r.sha256))
            .cloned()
            .collect();
        let remove: Vec<String> = rows
            .iter()
            .filter(|r| r.removed && has(&r.name).is_some())
            .map(|r| r.name.clone())
            .collect();
        Ok((!install.is_empty() || !remove.is_empty()).then_some(Plan {
            venv,
            install,
            remove,
        }))
    }
}

/// Installs the plan's stored wheels (hash-checked) and removes what it says (blocking).
fn apply(
    plan: &Plan,
    wheels: &[Wheel],
    limits: &scriptbox_packages::Limits,
    downloads: &Path,
) -> Result<Materialized, PackageError> {
    let site = Site::open(&plan.venv.site_packages)?;
    let mut done = Materialized::default();
    for name in &plan.remove {
        site.uninstall(name)?;
        done.removed += 1;
    }
    if wheels.is_empty() {
        return Ok(done);
    }
    let io = |what| move |source| PackageError::Io { what, source };
    std::fs::create_dir_all(downloads).map_err(io("preparing the download folder"))?;
    let folder = tempfile::tempdir_in(downloads).map_err(io("preparing the download folder"))?;
    let mut paths = Vec::with_capacity(wheels.len());
    for (i, wheel) in wheels.iter().enumerate() {
        if hex::encode(Sha256::digest(&wheel.content)) != wheel.sha256 {
            return Err(PackageError::InvalidWheel(format!(
                "the stored wheel {} does not match its SHA-256",
                wheel.sha256
            )));
        }
        // The stored file name is not trusted as a path: a fixed one of ours is used.
        let path = folder.path().join(format!("{i}.whl"));
        std::fs::write(&path, &wheel.content).map_err(io("writing a stored wheel"))?;
        paths.push(path);
    }
    // The quota was checked when the tenant installed them through another node.
    done.installed += site.install(&paths, limits, u64::MAX)?.len();
    Ok(done)
}
