//! One sandboxed guest: CPython (WASI) running the scriptbox driver with one tool imported.
//!
//! Deny by default: an instance gets no environment but the variables set here, no network
//! (WASI preview 1 has no sockets and none are granted), stdin closed and file-descriptor
//! stdout/stderr discarded (the driver captures `print()` itself) except while a request
//! streams its output ([`tap`]). It sees exactly the
//! read-only [`Mounts`], its tool's read-only scripts and, if granted, one writable scratch
//! folder under the [file-system guard](fs) (byte, file and descriptor quotas, no links).
//! Everything it may consume is bounded: fuel and a wall-clock deadline per call, linear
//! memory per instance, frame size per response.
//!
//! The guest is one future calling the reactor's `run` once; the driver then loops in the
//! [door](door) and the host feeds it requests. The future is not spawned: the task making a
//! call polls it inline, so a warm call costs no thread wake-up (on a 2-core VM each
//! cross-thread wake-up costs tens of microseconds, more than the call itself). Any trap (fuel, deadline, a frame over its
//! cap, a crash) ends the instance for good: its owner spawns a fresh one from the snapshot.
//!
//! The sandbox knows limits and mounts, never tenants or aliases.

mod door;
mod fs;
pub mod host;
pub mod image;
mod instance;
pub mod mounts;
mod outcome;
pub mod snapshot;
pub mod tap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use wasmtime::{
    InstancePre, Linker, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::engine::Engine;
use door::DoorState;
pub use door::{FrameTooLarge, MemoryReport};
use fs::FsGuard;
pub use host::{HostCalls, HostReply, NoHost};
pub use image::{ImageKind, ImagesState, Preload};
// The limits are plain data below the sandbox (config reads them too); the sandbox enforces them.
pub use crate::limits::{LimitError, LimitOverrides, Limits, StartLimits};
use instance::{GuestFuture, Received, boot_image, max_frame, run_guest};
pub use instance::{Instance, RunOptions};
pub use mounts::{Mounts, Scratch, ToolMounts};
use outcome::DeadlineExceeded;
pub use outcome::{Fault, Outcome, SpawnError};
pub use snapshot::SnapshotCell;
use tap::Tap;
pub use tap::{Output, OutputSink, Stream};

/// How long past a deadline the host waits before it stops the guest itself. The epoch
/// callback normally stops a computing guest within one tick; this catches guests blocked in
/// a host call (`time.sleep`), which epochs do not interrupt.
const DEADLINE_GRACE: Duration = Duration::from_millis(20);

/// Room in a response frame beyond the output cap: JSON escaping of the captured text (up to
/// six bytes per character) and the result itself.
const MAX_RESULT_BYTES: usize = 8 << 20;

/// Per-store data.
pub struct GuestState {
    wasi: WasiP1Ctx,
    limits: MemoryCap,
    door: DoorState,
    fs: FsGuard,
}

/// wasmtime's `StoreLimits`, remembering whether a memory growth was refused (the guest saw
/// `MemoryError`): the door reports it, and the owner replaces the instance after that call,
/// because linear memory never shrinks and a grown instance would hold its peak for good.
struct MemoryCap {
    inner: StoreLimits,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Builds instances: the engine, the linked interpreter and the mounts.
#[derive(Clone)]
pub struct Sandbox {
    pre: InstancePre<GuestState>,
    /// Links the images once they are ready.
    linker: Arc<Linker<GuestState>>,
    /// Pre-initialised images instances start from when one suits them ([`image`]).
    images: Arc<image::Images<GuestState>>,
    engine: Engine,
    mounts: Mounts,
    start: StartLimits,
    /// The driver file the interpreter runs, inside the driver mount: its source, or (once
    /// [`Sandbox::use_compiled_driver`] was told) its bytecode, which starts faster.
    driver_entry: Arc<std::sync::RwLock<String>>,
    /// Instances started by this sandbox and its clones.
    started: Arc<std::sync::atomic::AtomicU64>,
}

impl Sandbox {
    pub fn new(engine: Engine, mounts: Mounts, start: StartLimits) -> anyhow::Result<Self> {
        let mut linker: Linker<GuestState> = Linker::new(engine.wasmtime());
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut GuestState| &mut s.wasi)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        fs::shadow(&mut linker).context("linking the file-system guard")?;
        linker
            .func_wrap_async("host", "call", |caller, args| {
                Box::new(door::call(caller, args))
            })
            .map_err(anyhow::Error::from)
            .context("linking the door")?;
        let pre = linker
            .instantiate_pre(engine.module())
            .map_err(anyhow::Error::from)
            .context("pre-instantiating the interpreter")?;
        Ok(Self {
            pre,
            linker: Arc::new(linker),
            images: Arc::default(),
            engine,
            mounts,
            start,
            driver_entry: Arc::new(std::sync::RwLock::new(mounts::DRIVER_FILE.to_owned())),
            started: Arc::default(),
        })
    }

    /// Instances started so far (each spawn, whether it became ready or not).
    pub fn instances_started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// From now on, instances run `file` (a compiled driver in the driver folder) instead
    /// of the driver's source. Shared by every clone of this sandbox.
    pub fn use_compiled_driver(&self, file: &str) {
        *self
            .driver_entry
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = file.to_owned();
    }

    /// The driver folder on the host.
    pub fn driver_dir(&self) -> &std::path::Path {
        &self.mounts.driver
    }

    /// Loads the pre-initialised images from `cache_dir`, or builds them from `plain_wasm`
    /// (`python.wasm`) and caches them; a few minutes on a machine without them, on a thread
    /// of its own. Instances start from the base snapshot until this is done, and for good if
    /// it fails.
    pub async fn prepare_images(&self, plain_wasm: &std::path::Path, cache_dir: &std::path::Path) {
        self.images.set_state(ImagesState::Preparing);
        let loaded = self
            .engine
            .images()
            .get_or_init(|| self.load_images(plain_wasm, cache_dir))
            .await
            .clone()
            .map_err(anyhow::Error::msg);
        match loaded.and_then(|(driver, scientific)| {
            Ok((
                self.link_image(ImageKind::Driver, &driver)?,
                self.link_image(ImageKind::Scientific, &scientific)?,
            ))
        }) {
            Ok((driver, scientific)) => {
                tracing::info!(
                    driver_mib = driver.memory_bytes >> 20,
                    scientific_mib = scientific.memory_bytes >> 20,
                    "interpreter images ready"
                );
                self.images.install(driver, scientific);
            }
            Err(err) => {
                tracing::warn!(cause = ?err, "no interpreter images; instances start from the base snapshot");
                self.images.set_state(ImagesState::Failed);
            }
        }
    }

    /// The images' modules, from a thread of its own (loading hashes hundreds of MB; building
    /// takes minutes).
    async fn load_images(
        &self,
        plain_wasm: &std::path::Path,
        cache_dir: &std::path::Path,
    ) -> Result<crate::engine::ImageModules, String> {
        let engine = self.engine.wasmtime().clone();
        let (plain, cache) = (plain_wasm.to_owned(), cache_dir.to_owned());
        let (stdlib, driver) = (self.mounts.stdlib.clone(), self.mounts.driver.clone());
        let (done, finished) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("scriptbox-images".into())
            .spawn(move || {
                let _ = done.send(image::load_or_build(
                    &engine, &plain, &stdlib, &driver, &cache,
                ));
            });
        let loaded = match spawned {
            Ok(_) => finished
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the image thread ended early"))),
            Err(err) => Err(anyhow::Error::from(err).context("starting the image thread")),
        };
        loaded.map_err(|err| format!("{err:#}"))
    }

    fn link_image(
        &self,
        kind: ImageKind,
        module: &wasmtime::Module,
    ) -> anyhow::Result<image::Ready<GuestState>> {
        let pre = self
            .linker
            .instantiate_pre(module)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("linking the {kind:?} image"))?;
        Ok(image::Ready {
            kind,
            pre,
            memory_bytes: image::starting_memory(module),
        })
    }

    /// Where the pre-initialised images are.
    pub fn images_state(&self) -> ImagesState {
        self.images.state()
    }

    /// Starts an instance with the tool `module` (a checked Python module name) imported,
    /// seeing the shared mounts and `tool`'s.
    pub async fn spawn(
        &self,
        module: &str,
        limits: &Limits,
        tool: &ToolMounts,
    ) -> Result<Instance, SpawnError> {
        self.spawn_with(module, limits, tool, None).await
    }

    /// As [`Sandbox::spawn`], for an isolated tool's pool: from the pool's [snapshot]
    /// (its import copied, not run again) once its first instance took one.
    pub async fn spawn_isolated(
        &self,
        module: &str,
        limits: &Limits,
        tool: &ToolMounts,
        snapshots: &Arc<SnapshotCell>,
    ) -> Result<Instance, SpawnError> {
        self.spawn_with(module, limits, tool, Some(snapshots)).await
    }

    async fn spawn_with(
        &self,
        module: &str,
        limits: &Limits,
        tool: &ToolMounts,
        snapshots: Option<&Arc<SnapshotCell>>,
    ) -> Result<Instance, SpawnError> {
        let started = Instant::now();
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (to_guest, from_host) = mpsc::channel(1);
        let (to_host, from_guest) = mpsc::channel(1);
        let deadline = started + Duration::from_millis(self.start.deadline_ms);
        let tap = Tap::default();
        let store = self
            .store(
                module,
                limits,
                tool,
                &tap,
                DoorState {
                    to_host,
                    from_host,
                    max_frame: max_frame(limits),
                    budget: self.start.fuel,
                    refuel: None,
                    deadline: Some(deadline),
                    parked: (0, None),
                },
            )
            .map_err(SpawnError::Host)?;
        let (kind, guest): (ImageKind, GuestFuture) =
            match self.images.pick(tool.preload, limits.memory_bytes) {
                Some(ready) => (
                    ready.kind,
                    self.image_guest(&ready, store, module, tool, snapshots),
                ),
                None => (
                    ImageKind::Base,
                    Box::pin(run_guest(self.pre.clone(), store)),
                ),
            };
        let mut instance = Instance {
            to_guest,
            from_guest,
            guest: Some(guest),
            next_id: 1,
            limits: *limits,
            image: kind,
            tap,
            cpu: Duration::ZERO,
        };
        match instance.receive(deadline, None).await {
            Received::Frame(frame) => instance.check_ready(&frame.frame),
            Received::Fault(fault) => Err(SpawnError::Faulted(fault)),
        }
        .map(|()| {
            tracing::debug!(
                module,
                image = ?kind,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "instance ready"
            );
            instance
        })
    }

    /// The guest from `ready`: booted, or for a pool, from its snapshot or taking it.
    fn image_guest(
        &self,
        ready: &image::Ready<GuestState>,
        store: Store<GuestState>,
        module: &str,
        tool: &ToolMounts,
        snapshots: Option<&Arc<SnapshotCell>>,
    ) -> GuestFuture {
        let argv = &self.driver_argv(module, tool)[1..];
        let pre = ready.pre.clone();
        match snapshots {
            None => Box::pin(boot_image(pre, store, image::boot_source(argv))),
            Some(cell) => match cell.get(ready.kind) {
                Some(snapshot) => Box::pin(snapshot::boot_restored(pre, store, snapshot)),
                None => Box::pin(snapshot::boot_capturing(
                    pre,
                    store,
                    ready.kind,
                    snapshot::prepare_source(argv),
                    Arc::clone(cell),
                )),
            },
        }
    }

    fn store(
        &self,
        module: &str,
        limits: &Limits,
        tool: &ToolMounts,
        tap: &Tap,
        door: DoorState,
    ) -> anyhow::Result<Store<GuestState>> {
        let wasi = self.wasi_ctx(module, tool, tap)?;
        let fs = FsGuard::new(tool.scratch.as_ref(), tool.max_open_files)?;
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(memory)
            .instances(4)
            .tables(64)
            .memories(4)
            .trap_on_grow_failure(false)
            .build();
        let mut store = Store::new(
            self.engine.wasmtime(),
            GuestState {
                wasi,
                limits: MemoryCap {
                    inner: store_limits,
                    hit: false,
                },
                door,
                fs,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_fuel(self.start.fuel)?;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| match ctx.data().door.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(DeadlineExceeded.into()),
            _ => Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            )),
        });
        store.call_hook(door::call_hook);
        Ok(store)
    }

    /// The interpreter's argv for `module`: the driver file, then the driver's arguments.
    fn driver_argv(&self, module: &str, tool: &ToolMounts) -> Vec<String> {
        let entry = self
            .driver_entry
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let driver = format!("{}/{}", mounts::DRIVER_GUEST, entry);
        let mut args = vec![
            mounts::ARGV0.to_owned(),
            driver,
            module.to_owned(),
            mounts::SCRIPTS_GUEST.to_owned(),
        ];
        if tool.site_packages.is_some() {
            args.push(format!("--path={}", mounts::SITE_PACKAGES_GUEST));
        }
        args.extend(tool.sys_paths.iter().map(|path| format!("--path={path}")));
        args
    }

    fn wasi_ctx(&self, module: &str, tool: &ToolMounts, tap: &Tap) -> anyhow::Result<WasiP1Ctx> {
        let args = self.driver_argv(module, tool);
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&args)
            .stdout(tap.descriptor(Stream::Stdout))
            .stderr(tap.descriptor(Stream::Stderr))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let m = &self.mounts;
        for (host, guest) in [
            (&m.stdlib, mounts::STDLIB_GUEST),
            (&m.driver, mounts::DRIVER_GUEST),
            (&tool.scripts, mounts::SCRIPTS_GUEST),
        ] {
            builder
                .preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("mounting {} at {guest}", host.display()))?;
        }
        if let Some(site) = &tool.site_packages {
            builder
                .preopened_dir(site, mounts::SITE_PACKAGES_GUEST, FsPerms::ReadOnly)
                .map_err(anyhow::Error::from)
                .context("mounting site-packages")?;
        }
        if let Some(scratch) = &tool.scratch {
            builder
                .preopened_dir(&scratch.dir, mounts::SCRATCH_GUEST, FsPerms::ReadWrite)
                .map_err(anyhow::Error::from)
                .context("mounting the scratch folder")?;
        }
        Ok(builder.build_p1())
    }
}
