//! Making a tenant: its registry (tools, scripts, scratch, quotas), rate limiter, jobs and
//! error strategies, from the config's declaration or from an admin's record; and bringing
//! back what the store recorded for it.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use governor::{Quota, RateLimiter};

use super::{ErrorStrategy, Origin, Strategies, Tenant};
use crate::config::{Config, Policy, Quotas, Role};
use crate::jobs::Jobs;
use crate::native::NativeModules;
use crate::registry::{Registry, ScratchQuota, Settings, Shared};
use crate::sandbox::{LimitOverrides, Limits, Sandbox};
use crate::scripts::Scripts;
use crate::store::Store;

/// The store's setting keys for error strategies: the tenant's default, and per alias.
const STRATEGY: &str = "strategy";
const STRATEGY_OF: &str = "strategy:";

/// What every tenant is built from.
#[derive(Clone)]
pub struct Parts {
    pub config: Config,
    pub sandbox: Sandbox,
    pub shared: Shared,
    pub native: NativeModules,
    pub store: Store,
    pub scripts: Scripts,
    pub packages: std::sync::Arc<crate::packages::Packages>,
    /// The node's outbound HTTP client (each tenant gets its rules on it).
    pub egress: crate::egress::Egress,
}

/// One tenant's own settings.
pub(super) struct Spec<'a> {
    pub(super) id: &'a str,
    pub(super) role: Role,
    pub(super) origin: Origin,
    pub(super) scripts_dir: &'a Path,
    pub(super) quotas: &'a Quotas,
    pub(super) limits: Limits,
    pub(super) defaults: LimitOverrides,
    pub(super) policy: &'a Policy,
}

impl Parts {
    /// A tenant's quotas within the server's totals.
    pub(super) fn within_server(&self, q: &Quotas) -> Quotas {
        Quotas {
            max_tools: q.max_tools.min(self.config.max_tools),
            max_concurrent_calls: q.max_concurrent_calls.min(self.config.max_concurrent_calls),
            max_body_bytes: q.max_body_bytes.min(self.config.max_body_bytes),
            ..q.clone()
        }
    }

    fn data(&self, what: &str, id: &str) -> PathBuf {
        self.config.data_dir.join(what).join(id)
    }

    pub(super) fn make(&self, spec: Spec<'_>) -> anyhow::Result<Tenant> {
        let Spec {
            id,
            role,
            origin,
            scripts_dir,
            quotas,
            limits,
            defaults,
            policy,
        } = spec;
        let quotas = &self.within_server(quotas);
        let shared_scripts = scripts_dir.canonicalize().with_context(|| {
            format!("tenant {id:?}: scripts directory {}", scripts_dir.display())
        })?;
        let scratch = (quotas.scratch_bytes > 0).then(|| ScratchQuota {
            root: self.data("scratch", id),
            max_bytes: quotas.scratch_bytes,
            max_files: quotas.scratch_files,
        });
        let registry = Registry::new(
            self.sandbox.clone(),
            Settings {
                owner: id.to_owned(),
                limits,
                defaults,
                max_tools: quotas.max_tools,
                max_concurrent_calls: quotas.max_concurrent_calls,
                queue_depth: self.config.queue_depth,
                shared_scripts,
                scratch,
                max_open_files: quotas.max_open_files,
                venvs_root: self.data("envs", id),
                egress: match policy.egress.allow.is_empty() {
                    true => None,
                    false => Some(Arc::new(
                        self.egress
                            .for_tenant(id, &policy.egress)
                            .map_err(|why| anyhow::anyhow!("tenant {id:?}: egress: {why}"))?,
                    )),
                },
                native: crate::native::Access {
                    modules: self.native.clone(),
                    policy: policy.clone(),
                    slots: Arc::new(tokio::sync::Semaphore::new(
                        (self.config.native.max_concurrent_calls / 2).max(1),
                    )),
                },
            },
            self.shared.clone(),
            self.store.clone(),
            self.scripts.clone(),
        );
        let per_second =
            NonZeroU32::new(quotas.requests_per_second).context("requests_per_second")?;
        let burst = NonZeroU32::new(quotas.burst).context("burst")?;
        Ok(Tenant {
            id: id.to_owned(),
            role,
            origin,
            registry: Arc::new(registry),
            max_body_bytes: quotas.max_body_bytes,
            jobs: Jobs::new(
                id,
                quotas.max_jobs,
                Duration::from_secs(quotas.job_ttl_s),
                self.store.clone(),
            ),
            strategies: Strategies::default(),
            log_dir: self.data("logs", id),
            max_running_tasks: quotas.max_running_tasks,
            max_tasks: quotas.max_tasks,
            task_store_bytes: quotas.task_store_bytes,
            packages_bytes: quotas.packages_bytes,
            script_quotas: crate::scripts::Quotas {
                max_script_bytes: quotas.max_script_bytes,
                max_total_bytes: quotas.scripts_bytes,
                max_scripts: quotas.max_scripts,
                max_versions: quotas.script_versions,
            },
            policy: policy.clone(),
            rate: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            store: self.store.clone(),
        })
    }

    /// Removes the folders a deleted tenant had: scratch, package environments, logs and its
    /// scripts' files.
    pub(super) fn remove_folders(&self, id: &str) {
        for what in ["scratch", "envs", "logs"] {
            let dir = self.data(what, id);
            if let Err(err) = std::fs::remove_dir_all(&dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(tenant = id, cause = %err, "could not remove a deleted tenant's folder");
            }
        }
        self.scripts.forget_owner(id);
    }
}

impl Tenant {
    /// Brings back what the store recorded for this tenant: its tools (dormant until used),
    /// its registry's settings and its error strategies; and its jobs' records.
    pub async fn restore(&self) {
        let restored = self.registry.restore().await;
        if restored.tools > 0 || restored.skipped > 0 {
            tracing::info!(
                tenant = %self.id,
                tools = restored.tools,
                skipped = restored.skipped,
                "tools restored from the store"
            );
        }
        self.restore_strategies().await;
        self.jobs.restore().await;
    }

    /// The error strategies as recorded.
    pub async fn restore_strategies(&self) {
        match self.store.settings(&self.id).await {
            Ok(settings) => {
                for (key, value) in settings {
                    let alias = match key.strip_prefix(STRATEGY_OF) {
                        Some(alias) => Some(alias),
                        None if key == STRATEGY => None,
                        None => continue,
                    };
                    let parsed = serde_json::from_str(&value)
                        .ok()
                        .and_then(|v| ErrorStrategy::parse(&v));
                    match parsed {
                        Some(strategy) => {
                            self.strategies.set(alias, strategy);
                        }
                        None => {
                            tracing::warn!(tenant = %self.id, key, "a recorded strategy is damaged; skipped")
                        }
                    }
                }
            }
            Err(err) => {
                tracing::error!(tenant = %self.id, cause = %err, "could not read the strategies")
            }
        }
    }

    /// Sets the default error strategy or one alias's, recorded first; `false` when the
    /// per-alias table is full.
    pub async fn set_strategy(
        &self,
        alias: Option<&str>,
        strategy: ErrorStrategy,
    ) -> Result<bool, crate::store::StoreError> {
        let key = match alias {
            Some(alias) => format!("{STRATEGY_OF}{alias}"),
            None => STRATEGY.to_owned(),
        };
        if !self.strategies.can_set(alias) {
            return Ok(false);
        }
        let value = serde_json::to_string(&strategy).unwrap_or_else(|_| "\"throw\"".into());
        self.store.put_setting(&self.id, &key, &value).await?;
        Ok(self.strategies.set(alias, strategy))
    }
}
