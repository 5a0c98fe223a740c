//! Packages for the sandbox (`installPackage`, `uninstallPackage`, `packages`): the
//! `scriptbox-packages` crate does the work (requirement checks, pip without a shell for pure
//! wheels only, safe atomic unpacking); this module decides where packages go (a tenant's
//! environment), bounds pip runs server-wide, and enforces the tenant's size quota.
//!
//! Everything here is blocking file and process work, run on blocking threads.

mod requirements;

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

/// Why a package request failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the install thread failed: {0}")]
    Thread(String),
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
}

impl Packages {
    pub fn new(config: &PackagesConfig, data_dir: &std::path::Path) -> Self {
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
        // under one lock; and at most `max_concurrent_installs` pip runs server-wide. Both
        // guards move into the blocking work: a client that hangs up does not free them
        // while pip still runs.
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
        let this = Arc::clone(self);
        let env_name = venv.name.clone();
        blocking(move || {
            let _turn = tenant_turn;
            let _slot = slot;
            let used_elsewhere = sites_bytes(&others)?;
            std::fs::create_dir_all(&this.downloads).map_err(|source| PackageError::Io {
                what: "preparing the download folder",
                source,
            })?;
            let folder =
                tempfile::tempdir_in(&this.downloads).map_err(|source| PackageError::Io {
                    what: "preparing the download folder",
                    source,
                })?;
            let wheels = this.fetcher.download(&requirement, folder.path())?;
            let site = Site::open(&venv.site_packages)?;
            let installed = site.install(
                &wheels,
                &this.limits,
                quota_bytes.saturating_sub(used_elsewhere),
            )?;
            let total_bytes = used_elsewhere + site.total_bytes()?;
            Ok(InstallReport {
                env_name,
                installed,
                total_bytes,
            })
        })
        .await
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
        blocking(move || {
            let _turn = turn;
            let removed = Site::open(&venv.site_packages)?.uninstall(&name)?;
            Ok((venv.name, removed))
        })
        .await
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
