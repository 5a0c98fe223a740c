//! Server assembly: artifacts -> engine -> sandbox -> registry -> router, and `run`, which
//! serves a bound listener until the shutdown future resolves.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::registry::{Registry, Settings};
use crate::sandbox::{Mounts, Sandbox};
use crate::{artifacts, guest};

/// Everything a running server holds.
#[derive(Clone)]
pub struct Server {
    pub registry: Arc<Registry>,
    pub max_body_bytes: usize,
}

impl Server {
    /// Prepares the interpreter (fetching it if allowed and missing), the engine and the
    /// registry. Blocking work (hashing, the first compile) runs off the async threads.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        let engine = load_engine(config).await?;
        Self::with_engine(config, engine)
    }

    /// As [`Server::build`], with an engine already loaded (tests share one).
    pub fn with_engine(config: &Config, engine: Engine) -> anyhow::Result<Self> {
        config.validate()?;
        let driver = guest::install_driver(&config.data_dir)?;
        let scripts = config
            .scripts_dir
            .canonicalize()
            .with_context(|| format!("scripts directory {}", config.scripts_dir.display()))?;
        let mounts = Mounts {
            stdlib: config.stdlib_dir(),
            driver,
            scripts,
        };
        let sandbox = Sandbox::new(engine, mounts, config.start)?;
        let registry = Registry::new(
            sandbox,
            Settings {
                limits: config.limits,
                max_tools: config.max_tools,
                queue_depth: config.queue_depth,
            },
        );
        Ok(Self {
            registry: Arc::new(registry),
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// Serves `listener` until `shutdown` resolves; in-flight requests then finish (each
    /// call is bounded by its deadline) and every tool is dropped.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = http::router(AppState {
            registry: Arc::clone(&self.registry),
            max_body_bytes: self.max_body_bytes,
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        self.registry.clear();
        Ok(())
    }
}

/// Fetches (if needed and allowed) and loads the interpreter.
pub async fn load_engine(config: &Config) -> anyhow::Result<Engine> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        artifacts::ensure(&config.artifacts_dir, config.fetch_if_missing)?;
        Engine::load(&config.snapshot_wasm(), &config.cache_dir)
    })
    .await
    .context("loading the engine")?
}
