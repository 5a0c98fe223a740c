//! Packages for the sandbox (`installPackage`, `uninstallPackage`, `packages`): the
//! `scriptbox-packages` crate does the work (requirement checks, pip without a shell for pure
//! wheels only, safe atomic unpacking); this module decides where packages go (a tenant's
//! environment), bounds pip runs server-wide, and enforces the tenant's size quota.
//!
//! Everything here is blocking file and process work, run on blocking threads.

mod requirements;
mod shared;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;

pub use requirements::RequirementsError;
use scriptbox_packages::{Fetcher, Limits, Site, Source, built_in};
pub use scriptbox_packages::{Installed, PackageError, Requirement, parse_requirement};

use crate::config::PackagesConfig;
use crate::registry::{Registry, RegistryError, Venv};
use crate::store::{Store, StoreError};

/// Why a package request failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the install thread failed: {0}")]
    Thread(String),
    #[error("recording the packages failed: {0}")]
    Store(#[from] StoreError),
}

/// What an install did.
#[derive(Debug, Serialize)]
pub struct InstallReport {
    /// The environment it went to.
    pub env_name: String,
    /// The packages written, the requested one and its dependencies.
    pub installed: Vec<Installed>,
    /// Bytes of packages in all the tenant's environments afterwards.
    pub total_bytes: u64,
}

/// One environment's packages.
#[derive(Debug, Serialize)]
pub struct EnvPackages {
    pub env_name: String,
    pub packages: Vec<Installed>,
    pub bytes: u64,
}

/// The server's package installer.
pub struct Packages {
    fetcher: Fetcher,
    limits: Limits,
    pip_runs: Arc<Semaphore>,
    /// Where downloads land before they are unpacked (one fresh folder per install).
    downloads: PathBuf,
    /// Where installs are recorded with their wheels, for the other nodes and restarts.
    store: Store,
}

impl Packages {
    pub fn new(config: &PackagesConfig, data_dir: &std::path::Path, store: Store) -> Self {
        Self {
            fetcher: Fetcher {
                python: config.python.clone(),
                source: config
                    .find_links
                    .clone()
                    .map_or(Source::Index, Source::Local),
                timeout: Duration::from_secs(config.timeout_s),
                max_download_bytes: config.max_download_bytes,
                ..Fetcher::default()
            },
            limits: Limits::default(),
            pip_runs: Arc::new(Semaphore::new(config.max_concurrent_installs)),
            downloads: data_dir.join("downloads"),
            store,
        }
    }

    /// Installs `requirement` (checked by [`parse_requirement`]) and its dependencies into
    /// environment `env` (`None`: the tenant's `default` one), within `quota_bytes` for all the
    /// tenant's environments together.
    pub async fn install(
        self: &Arc<Self>,
        registry: &Registry,
        env: Option<&str>,
        requirement: Requirement,
        quota_bytes: u64,
    ) -> Result<InstallReport, InstallError> {
        if built_in(&requirement.name) {
            return Err(PackageError::AlreadyAvailable {
                name: requirement.name,
            }
            .into());
        }
        // One install or uninstall per tenant at a time, so the quota is summed and spent
        // under one lock; and at most `max_concurrent_installs` pip runs server-wide. The
        // work runs in a task of its own with both guards: a client that hangs up neither
        // frees them while pip still runs nor stops the install between the site and the
        // store.
        let tenant_turn = Arc::clone(&registry.install_lock).lock_owned().await;
        let slot = Arc::clone(&self.pip_runs)
            .acquire_owned()
            .await
            .map_err(|err| InstallError::Thread(err.to_string()))?;
        // Without a name, the environment the tenant's tools mount (else `default`).
        let env = env
            .map(str::to_owned)
            .or_else(|| registry.mounted_venv().map(|v| v.name));
        let venv = registry.package_env(env.as_deref())?;
        let others = other_envs(registry, &venv);
        let owner = registry.owner().to_owned();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _turn = tenant_turn;
            let _slot = slot;
            // Other environments' bytes as this node has them or as the store records them
            // (installed through another node), whichever is more.
            let recorded = this.store.packages_bytes_except(&owner, &venv.name).await?;
            let worker = Arc::clone(&this);
            let env_name = venv.name.clone();
            let (report, wheels) = blocking(move || {
                let used_elsewhere = sites_bytes(&others)?.max(recorded);
                worker.download_and_install(&requirement, &venv, quota_bytes, used_elsewhere)
            })
            .await?;
            let records = shared::records(&env_name, &report.installed);
            if let Err(err) = this.store.record_install(&owner, &records, &wheels).await {
                tracing::error!(tenant = %owner, cause = %err, "an install was not recorded; the other nodes will not have it");
                return Err(err.into());
            }
            Ok(report)
        })
        .await
        .map_err(|err| InstallError::Thread(err.to_string()))?
    }

    /// Downloads `requirement` and installs it into `venv` (blocking); the report and the
    /// wheels it came from.
    fn download_and_install(
        &self,
        requirement: &Requirement,
        venv: &Venv,
        quota_bytes: u64,
        used_elsewhere: u64,
    ) -> Result<(InstallReport, Vec<crate::store::packages::Wheel>), PackageError> {
        std::fs::create_dir_all(&self.downloads).map_err(|source| PackageError::Io {
            what: "preparing the download folder",
            source,
        })?;
        let folder = tempfile::tempdir_in(&self.downloads).map_err(|source| PackageError::Io {
            what: "preparing the download folder",
            source,
        })?;
        let wheels = self.fetcher.download(requirement, folder.path())?;
        let site = Site::open(&venv.site_packages)?;
        let installed = site.install(
            &wheels,
            &self.limits,
            quota_bytes.saturating_sub(used_elsewhere),
        )?;
        let blobs = shared::read_wheels(&wheels)?;
        let total_bytes = used_elsewhere + site.total_bytes()?;
        Ok((
            InstallReport {
                env_name: venv.name.clone(),
                installed,
                total_bytes,
            },
            blobs,
        ))
    }

    /// Removes package `name` from environment `env` (`None`: `default`).
    pub async fn uninstall(
        &self,
        registry: &Registry,
        env: Option<&str>,
        name: &str,
    ) -> Result<(String, Installed), InstallError> {
        let name = scriptbox_packages::normalize_name(name)?;
        let turn = Arc::clone(&registry.install_lock).lock_owned().await;
        let env = env
            .map(str::to_owned)
            .or_else(|| registry.mounted_venv().map(|v| v.name));
        let venv = match env.as_deref() {
            Some(env) => registry.package_env(Some(env))?,
            None => registry
                .all_venvs()
                .into_iter()
                .find(|v| v.name == crate::registry::DEFAULT_VENV)
                .ok_or(PackageError::NotInstalled { name: name.clone() })?,
        };
        let owner = registry.owner().to_owned();
        let store = self.store.clone();
        tokio::spawn(async move {
            let _turn = turn;
            let (env, removed) = blocking(move || {
                let removed = Site::open(&venv.site_packages)?.uninstall(&name)?;
                Ok((venv.name, removed))
            })
            .await?;
            store.record_uninstall(&owner, &env, &removed.name).await?;
            Ok((env, removed))
        })
        .await
        .map_err(|err| InstallError::Thread(err.to_string()))?
    }

    /// The packages of every environment of the tenant, or of `env` only.
    pub async fn list(
        &self,
        registry: &Registry,
        env: Option<&str>,
    ) -> Result<Vec<EnvPackages>, InstallError> {
        let venvs = match env {
            Some(_) => vec![registry.package_env(env)?],
            None => registry.all_venvs(),
        };
        blocking(move || {
            venvs
                .into_iter()
                .map(|venv| {
                    let site = Site::open(&venv.site_packages)?;
                    Ok(EnvPackages {
                        env_name: venv.name,
                        bytes: site.total_bytes()?,
                        packages: site.installed()?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Whether `name` (a normalised distribution name) is usable by tools mounting `venv`:
    /// built in, or installed there.
    pub async fn available(&self, venv: Option<Venv>, name: String) -> bool {
        if built_in(&name) {
            return true;
        }
        let Some(venv) = venv else {
            return false;
        };
        blocking(move || Ok(Site::open(&venv.site_packages)?.get(&name)?.is_some()))
            .await
            .unwrap_or(false)
    }
}

fn other_envs(registry: &Registry, venv: &Venv) -> Vec<Venv> {
    registry
        .all_venvs()
        .into_iter()
        .filter(|v| v.name != venv.name)
        .collect()
}

fn sites_bytes(venvs: &[Venv]) -> Result<u64, PackageError> {
    venvs.iter().try_fold(0u64, |sum, venv| {
        Ok(sum + Site::open(&venv.site_packages)?.total_bytes()?)
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PackageError> + Send + 'static,
) -> Result<T, InstallError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| InstallError::Thread(err.to_string()))?
        .map_err(InstallError::from)
}
