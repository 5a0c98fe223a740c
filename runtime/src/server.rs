//! Server assembly: artifacts -> engine -> sandbox -> tenants (one registry each) -> router,
//! and `run`, which serves a bound listener until the shutdown future resolves.
//!
//! Connections are served with hyper directly rather than `axum::serve`, because the
//! connection-level defences live there: a cap on open connections, a deadline for the
//! request head (slow clients), and caps on head size and header count (431 past them).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::config::{Config, HttpLimits};
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::native::NativeModules;
use crate::registry::Shared;
use crate::sandbox::{Mounts, Sandbox};
use crate::scripts::Scripts;
use crate::store::{Location, Store};
use crate::tenants::{Tenants, address_key};
use crate::{artifacts, guest};

/// Everything a running server holds.
#[derive(Clone)]
pub struct Server {
    /// The configuration it was built from.
    pub config: Config,
    pub tenants: Arc<Tenants>,
    /// Every tenant's tasks (in the store).
    pub tasks: Arc<crate::tasks::Service>,
    /// Where the change log stood when the records were restored (followed from there).
    mark: crate::cluster::Mark,
    pub max_body_bytes: usize,
    pub http: HttpLimits,
    /// The trusted native modules (`modules/`).
    pub native: NativeModules,
    /// `installPackage`'s installer.
    pub packages: Arc<crate::packages::Packages>,
    /// What every instance is built from (for the driver's bytecode at start).
    pub sandbox: Sandbox,
    /// The tenants' scripts.
    pub scripts: Scripts,
    /// The durable store.
    pub store: Store,
    /// The node's audit log writer.
    audit: crate::store::audit::AuditLog,
    /// The budgets every registry draws from, and the server's metrics.
    pub shared: Shared,
    /// Where the driver's bytecode is kept between servers.
    pub cache_dir: PathBuf,
    /// `python.wasm`, when the pre-initialised images are on (`images = true`).
    pub images: Option<PathBuf>,
}

impl Server {
    /// Prepares the interpreter (fetching it if allowed and missing), the engine and the
    /// tenants. Blocking work (hashing, the first compile) runs off the async threads.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        config.validate()?;
        let engine = load_engine(config).await?;
        Self::with_engine(config, engine).await
    }

    /// As [`Server::build`], with an engine already loaded (tests share one).
    pub async fn with_engine(config: &Config, engine: Engine) -> anyhow::Result<Self> {
        Self::with_kinds(config, engine, crate::tasks::Kinds::builtin()).await
    }

    /// As [`Server::with_engine`], with the task step kinds to offer (the built-in ones
    /// plus a library user's own, see `runtime/examples/custom_task.rs`).
    pub async fn with_kinds(
        config: &Config,
        engine: Engine,
        kinds: crate::tasks::Kinds,
    ) -> anyhow::Result<Self> {
        config.validate()?;
        let node = crate::cluster::node_id(config)?;
        let location = match &config.store.url {
            Some(url) => Location::Postgres(url.clone()),
            None => Store::in_data_dir(&config.data_dir),
        };
        let store = Store::open(&location).await?.for_node(&node);
        let now = crate::store::now();
        let lease = Duration::from_secs(config.cluster.task_lease_s);
        let interrupted = store.interrupt_jobs(now, now - lease.as_secs_f64()).await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "callAsync jobs left running by a stopped process are marked interrupted"
            );
        }
        let driver = guest::install_driver(&config.data_dir)?;
        reset_scratch(&config.data_dir.join("scratch"))?;
        let mounts = Mounts {
            stdlib: config.stdlib_dir(),
            driver,
        };
        let sandbox = Sandbox::new(engine, mounts, config.start)?;
        let shared = Shared::with_pools(
            config.max_tools,
            config.max_concurrent_calls,
            config.isolated_pool_per_tool,
            config.isolated_pool_total,
        );
        let native = NativeModules::new(crate::native::Settings {
            dir: config.native.modules_dir.clone(),
            data_dir: config.data_dir.clone(),
            max_concurrent_calls: config.native.max_concurrent_calls,
            call_timeout: Duration::from_millis(config.native.call_timeout_ms),
        });
        let scripts = Scripts::new(store.clone(), sandbox.clone(), &config.data_dir)
            .context("preparing the scripts folder")?;
        let packages = Arc::new(crate::packages::Packages::new(
            &config.packages,
            &config.data_dir,
            store.clone(),
        ));
        let audit = crate::store::audit::AuditLog::start(store.clone());
        let tenants = Tenants::build(crate::tenants::Parts {
            config: config.clone(),
            sandbox: sandbox.clone(),
            shared: shared.clone(),
            native: native.clone(),
            store: store.clone(),
            scripts: scripts.clone(),
            packages: Arc::clone(&packages),
            egress: crate::egress::Egress::new(audit.clone())?,
        })?;
        let mark = crate::cluster::mark(&store).await;
        tenants.restore().await;
        let tasks = crate::tasks::Service::open(store.clone(), kinds, lease);
        Ok(Self {
            tenants: Arc::new(tenants),
            config: config.clone(),
            tasks,
            mark,
            max_body_bytes: config.max_body_bytes,
            http: config.http.clone(),
            native,
            packages,
            sandbox,
            scripts,
            store,
            audit,
            shared,
            cache_dir: config.cache_dir.clone(),
            images: config.images.then(|| config.plain_wasm()),
        })
    }

    /// Serves `listener` until `shutdown` resolves; open requests then finish (each call is
    /// bounded by its deadline) and every tool is dropped.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        crate::guest::precompile_driver(&self.sandbox, &self.cache_dir).await;
        if let Some(plain) = self.images.clone() {
            let (sandbox, cache_dir) = (self.sandbox.clone(), self.cache_dir.clone());
            // In the background: serving starts at once, from the base snapshot until then.
            tokio::spawn(async move { sandbox.prepare_images(&plain, &cache_dir).await });
        }
        self.native.restore().await;
        // Heartbeat, changes from other nodes, task leases: until this function returns.
        let _background = crate::cluster::start(
            &self.config,
            &self.store,
            &self.tenants,
            &self.tasks,
            self.mark,
        )
        .await;
        let app = http::router(AppState {
            tenants: Arc::clone(&self.tenants),
            max_body_bytes: self.max_body_bytes,
            body_timeout: Duration::from_millis(self.http.body_read_timeout_ms),
            tasks: Arc::clone(&self.tasks),
            native: self.native.clone(),
            packages: Arc::clone(&self.packages),
            sandbox: self.sandbox.clone(),
            scripts: self.scripts.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            shared: self.shared.clone(),
        });
        let connections = Arc::new(Semaphore::new(self.http.max_connections));
        let per_address = PerAddress::new(self.http.max_connections_per_ip);
        let trusted: Arc<[IpAddr]> = self.http.trusted_proxies.clone().into();
        let graceful = GracefulShutdown::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.http.header_read_timeout_ms))
            .max_buf_size(self.http.max_header_bytes)
            .max_headers(self.http.max_headers);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => permit.context("connection limit")?,
                () = &mut shutdown => break,
            };
            let (stream, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(cause = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // A trusted proxy carries many clients: the per-address cap is for them, not it.
            let slot = if trusted.contains(&addr.ip()) {
                None
            } else {
                let Some(slot) = per_address.enter(addr.ip()) else {
                    tracing::debug!(client = %addr.ip(), "too many connections from one address; closing");
                    drop(stream);
                    continue;
                };
                Some(slot)
            };
            let app = app.clone();
            let trusted = Arc::clone(&trusted);
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    let client = http::forwarded::client_address(addr, request.headers(), &trusted);
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(client));
                    app.clone().oneshot(request)
                });
            let connection =
                graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(cause = %err, "connection ended with an error");
                }
                drop(permit);
                drop(slot);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        self.tenants.clear();
        Ok(())
    }
}

/// Open connections per client address.
#[derive(Clone)]
struct PerAddress {
    limit: usize,
    open: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`PerAddress`], given back on drop.
struct AddressSlot {
    owner: PerAddress,
    key: IpAddr,
}

impl PerAddress {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    fn enter(&self, ip: IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Empties the scratch area: folders left by a previous run (a crash) belong to no tool.
fn reset_scratch(root: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(root) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err).with_context(|| format!("clearing {}", root.display()));
        }
    }
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("creating {}", root.display()))
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
