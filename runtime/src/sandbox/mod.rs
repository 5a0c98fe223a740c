//! One sandboxed guest: CPython (WASI) running the scriptbox driver with one tool imported.
//!
//! Deny by default: an instance gets no environment but the variables set here, no network
//! (WASI preview 1 has no sockets and none are granted), stdin closed and file-descriptor
//! stdout/stderr discarded (the driver captures `print()` itself). It sees exactly the
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
pub mod limits;
pub mod mounts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::value::RawValue;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;
use wasmtime::{
    InstancePre, Linker, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::engine::Engine;
use crate::protocol::{self, GuestError, GuestErrorKind, HostRequest, Op, Request, Response};
use door::{Closed, Delivery, DoorState, GuestFrame, Inspection, ToGuest};
pub use door::{FrameTooLarge, MemoryReport};
use fs::FsGuard;
pub use host::{HostCalls, HostReply, NoHost};
pub use image::{ImageKind, ImagesState, Preload};
pub use limits::{LimitError, LimitOverrides, Limits, StartLimits};
pub use mounts::{Mounts, Scratch, ToolMounts};

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

/// The epoch callback saw the call's deadline pass.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed")]
struct DeadlineExceeded;

/// Why an instance stopped. After any fault the instance is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("the call ran out of fuel")]
    FuelExhausted,
    #[error("the call passed its deadline")]
    DeadlineExceeded,
    #[error("the call's response passed the output cap")]
    OutputLimit,
    #[error("the guest exited with status {0}")]
    Exited(i32),
    #[error("the guest trapped: {0}")]
    Trapped(String),
    #[error("the guest broke the protocol: {0}")]
    Protocol(String),
    #[error("the call was cancelled")]
    Cancelled,
}

/// What one call produced.
#[derive(Debug)]
pub enum Outcome {
    /// The driver answered; the instance lives on. `error` is set for failures the driver
    /// reports itself (a Python exception, an unserializable result, ...).
    Answered {
        result: Option<Box<RawValue>>,
        error: Option<GuestError>,
        stdout: String,
        stderr: String,
        fuel_used: u64,
        elapsed: Duration,
        /// The call hit the memory cap: the instance lives but should be replaced.
        memory_capped: bool,
        /// What tracing recorded (see [`protocol::Debug`]).
        debug: Option<Box<RawValue>>,
    },
    /// The instance stopped; it must be replaced.
    Faulted { fault: Fault, elapsed: Duration },
}

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the tool script failed to import")]
    LoadFailed(GuestError),
    #[error("the instance stopped while starting: {0}")]
    Faulted(Fault),
    #[error("the instance could not be created")]
    Host(#[source] anyhow::Error),
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
        })
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
        let started = Instant::now();
        let (to_guest, from_host) = mpsc::channel(1);
        let (to_host, from_guest) = mpsc::channel(1);
        let deadline = started + Duration::from_millis(self.start.deadline_ms);
        let store = self
            .store(
                module,
                limits,
                tool,
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
                Some(ready) => {
                    let boot = image::boot_source(&self.driver_argv(module, tool)[1..]);
                    (
                        ready.kind,
                        Box::pin(boot_image(ready.pre.clone(), store, boot)),
                    )
                }
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
        };
        match instance.receive(deadline).await {
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

    fn store(
        &self,
        module: &str,
        limits: &Limits,
        tool: &ToolMounts,
        door: DoorState,
    ) -> anyhow::Result<Store<GuestState>> {
        let wasi = self.wasi_ctx(module, tool)?;
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

    fn wasi_ctx(&self, module: &str, tool: &ToolMounts) -> anyhow::Result<WasiP1Ctx> {
        let args = self.driver_argv(module, tool);
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&args)
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

/// The largest response frame for these limits.
fn max_frame(limits: &Limits) -> usize {
    let output = usize::try_from(limits.output_bytes).unwrap_or(usize::MAX);
    output.saturating_mul(6).saturating_add(MAX_RESULT_BYTES)
}

/// The running guest: the whole life of the interpreter as one future.
type GuestFuture = Pin<Box<dyn Future<Output = wasmtime::Result<i32>> + Send>>;

/// The guest: instantiate, initialise the reactor, run the driver until it stops.
async fn run_guest(
    pre: InstancePre<GuestState>,
    mut store: Store<GuestState>,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut store).await?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        init.call_async(&mut store, ()).await?;
    }
    let run = instance.get_typed_func::<(), i32>(&mut store, "run")?;
    run.call_async(&mut store, ()).await
}

/// The guest from an image: instantiate (no `_initialize`: the image is past it) and boot
/// the driver the image imported with one turn, which runs until the driver stops.
async fn boot_image(
    pre: InstancePre<GuestState>,
    mut store: Store<GuestState>,
    boot: Vec<u8>,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut store).await?;
    let value = image::run_turn(&mut store, &instance, &boot).await?;
    // 0: the program ended; 1: an exception escaped it; 256 + status: it called exit.
    Ok(if value >= 256 { value - 256 } else { value })
}

enum Received {
    Frame(GuestFrame),
    Fault(Fault),
}

/// How one request runs besides its op.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// Answers the guest's host calls.
    pub host: &'a dyn HostCalls,
    /// A lower deadline for this request than the instance's (never a higher one).
    pub within: Option<Duration>,
    /// Tracing for this request.
    pub debug: Option<&'a protocol::Debug>,
}

/// A live guest. Dropping it stops the guest.
pub struct Instance {
    to_guest: mpsc::Sender<ToGuest>,
    from_guest: mpsc::Receiver<GuestFrame>,
    /// `None` once the guest has ended or been stopped.
    guest: Option<GuestFuture>,
    next_id: u64,
    limits: Limits,
    image: ImageKind,
}

impl Instance {
    /// The image this instance started from.
    pub fn image(&self) -> ImageKind {
        self.image
    }

    /// Whether the guest can still take calls.
    pub fn is_alive(&self) -> bool {
        self.guest.is_some()
    }

    /// Calls `function(*args, **kwargs)` in the tool. `args` must be a JSON array and
    /// `kwargs` a JSON object (the HTTP layer checks both).
    pub async fn call(&mut self, function: &str, args: &RawValue, kwargs: &RawValue) -> Outcome {
        let op = Op::Call {
            function: function.to_owned(),
            args: args.to_owned(),
            kwargs: kwargs.to_owned(),
        };
        self.run(&op).await
    }

    /// Runs one request in the tool under the call limits, refusing host calls.
    pub async fn run(&mut self, op: &Op) -> Outcome {
        self.run_with(op, &NoHost).await
    }

    /// Runs one request in the tool under the call limits; host calls the guest makes on
    /// the way are answered by `host`, within the request's deadline.
    pub async fn run_with(&mut self, op: &Op, host: &dyn HostCalls) -> Outcome {
        self.run_opts(
            op,
            &RunOptions {
                host,
                within: None,
                debug: None,
            },
        )
        .await
    }

    /// Runs one request with [`RunOptions`].
    pub async fn run_opts(&mut self, op: &Op, options: &RunOptions<'_>) -> Outcome {
        let RunOptions {
            host,
            within,
            debug,
        } = *options;
        let started = Instant::now();
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            v: protocol::PROTOCOL_VERSION,
            id,
            op,
            output_cap: self.limits.output_bytes,
            debug: debug.filter(|d| d.is_on()),
        };
        let frame = match serde_json::to_vec(&request) {
            Ok(frame) => frame,
            Err(err) => {
                return self.faulted(
                    Fault::Protocol(format!("request not encodable: {err}")),
                    started,
                );
            }
        };
        let allowed = within.map_or(self.limits.deadline(), |w| w.min(self.limits.deadline()));
        let deadline = started + allowed;
        let delivery = Delivery {
            frame,
            fuel: self.limits.fuel,
            deadline,
        };
        if self.to_guest.try_send(ToGuest::Request(delivery)).is_err() {
            let fault = self.stopped_with().await;
            return self.faulted(fault, started);
        }
        let mut host_calls = 0u32;
        let mut memory_capped = false;
        loop {
            let frame = match self.receive(deadline).await {
                Received::Frame(frame) => frame,
                Received::Fault(fault) => return self.faulted(fault, started),
            };
            memory_capped |= frame.memory_capped;
            let response: Response = match serde_json::from_slice(&frame.frame) {
                Ok(response) => response,
                Err(err) => {
                    return self.faulted(Fault::Protocol(format!("bad frame: {err}")), started);
                }
            };
            if response.v != protocol::PROTOCOL_VERSION || response.id != id {
                return self.faulted(Fault::Protocol("frame for another request".into()), started);
            }
            let Some(call) = &response.host else {
                return self.answer(response, frame.fuel_used, memory_capped, started);
            };
            host_calls += 1;
            let reply = if host_calls > host::MAX_HOST_CALLS {
                Err(format!(
                    "more than {} host calls in one request",
                    host::MAX_HOST_CALLS
                ))
            } else {
                match HostRequest::parse(call.get()) {
                    Err(err) => Err(format!("bad host call: {err}")),
                    Ok(call) => {
                        let until = tokio::time::Instant::from_std(deadline);
                        match tokio::time::timeout_at(until, host.handle(call)).await {
                            Ok(reply) => reply,
                            Err(_) => return self.faulted(Fault::DeadlineExceeded, started),
                        }
                    }
                }
            };
            let reply = ToGuest::Reply(host::reply_frame(&reply));
            if self.to_guest.try_send(reply).is_err() {
                let fault = self.stopped_with().await;
                return self.faulted(fault, started);
            }
        }
    }

    /// Looks at the idle guest's linear memory from the host: its size, and whether `needle`
    /// occurs in it. `None` if the guest is not alive or does not answer within ten seconds.
    pub async fn inspect_memory(&mut self, needle: Vec<u8>) -> Option<MemoryReport> {
        let (reply, report) = tokio::sync::oneshot::channel();
        self.to_guest
            .try_send(ToGuest::Inspect(Inspection { needle, reply }))
            .ok()?;
        let running = self.guest.as_mut()?;
        tokio::select! {
            biased;
            report = report => report.ok(),
            _ = running => {
                self.guest = None;
                None
            }
            () = tokio::time::sleep(Duration::from_secs(10)) => None,
        }
    }

    fn faulted(&mut self, fault: Fault, started: Instant) -> Outcome {
        self.stop();
        Outcome::Faulted {
            fault,
            elapsed: started.elapsed(),
        }
    }

    fn answer(
        &mut self,
        response: Response,
        fuel_used: u64,
        memory_capped: bool,
        started: Instant,
    ) -> Outcome {
        let elapsed = started.elapsed();
        // The driver enforces the output cap, but it shares its interpreter with the tool:
        // the host checks again and treats a frame past the cap as tampering.
        let output = response.stdout.len().saturating_add(response.stderr.len());
        if output as u64 > self.limits.output_bytes {
            return self.faulted(Fault::OutputLimit, started);
        }
        let error = match (response.ok, response.error) {
            (true, _) => None,
            (false, Some(error)) => Some(error),
            (false, None) => Some(GuestError {
                kind: GuestErrorKind::BadRequest,
                exc_type: None,
                message: "the driver reported an unnamed failure".into(),
                traceback: None,
            }),
        };
        Outcome::Answered {
            result: if error.is_none() {
                response.result
            } else {
                None
            },
            error,
            stdout: response.stdout,
            stderr: response.stderr,
            fuel_used,
            elapsed,
            memory_capped,
            debug: response.debug,
        }
    }

    /// The first frame: `ready`, or the import's failure.
    fn check_ready(&mut self, frame: &[u8]) -> Result<(), SpawnError> {
        let response: Response = serde_json::from_slice(frame).map_err(|err| {
            SpawnError::Faulted(Fault::Protocol(format!("bad ready frame: {err}")))
        })?;
        if response.v != protocol::PROTOCOL_VERSION || response.id != 0 {
            return Err(SpawnError::Faulted(Fault::Protocol(
                "bad ready frame".into(),
            )));
        }
        match (response.ok, response.error) {
            (true, _) => Ok(()),
            (false, Some(error)) => Err(SpawnError::LoadFailed(error)),
            (false, None) => Err(SpawnError::Faulted(Fault::Protocol(
                "no ready frame".into(),
            ))),
        }
    }

    /// The guest's next frame, or why it stopped. Polls the guest inline until it hands out a
    /// frame, ends, or passes `deadline` (plus a grace for the epoch callback to act), in
    /// which case the host stops it.
    async fn receive(&mut self, deadline: Instant) -> Received {
        let sleep =
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline + DEADLINE_GRACE));
        tokio::pin!(sleep);
        let Self {
            from_guest, guest, ..
        } = self;
        loop {
            let Some(running) = guest.as_mut() else {
                return Received::Fault(Fault::Trapped("the instance was already stopped".into()));
            };
            tokio::select! {
                biased;
                frame = from_guest.recv() => {
                    if let Some(frame) = frame {
                        return Received::Frame(frame);
                    }
                }
                ended = running => {
                    *guest = None;
                    return Received::Fault(ended_with(ended));
                }
                () = &mut sleep => {
                    *guest = None;
                    return Received::Fault(Fault::DeadlineExceeded);
                }
            }
        }
    }

    fn stop(&mut self) {
        self.guest = None;
    }

    /// Runs a guest that stopped taking requests to its end, and names why it ended.
    async fn stopped_with(&mut self) -> Fault {
        let Some(running) = self.guest.take() else {
            return Fault::Trapped("the instance was already stopped".into());
        };
        match tokio::time::timeout(Duration::from_secs(1), running).await {
            Ok(ended) => ended_with(ended),
            Err(_) => Fault::Protocol("the guest stopped taking requests".into()),
        }
    }
}

fn ended_with(ended: wasmtime::Result<i32>) -> Fault {
    match ended {
        Ok(code) => Fault::Exited(code),
        Err(err) => classify(&err),
    }
}

/// Names a guest error.
fn classify(err: &wasmtime::Error) -> Fault {
    if err.downcast_ref::<DeadlineExceeded>().is_some() {
        return Fault::DeadlineExceeded;
    }
    if err.downcast_ref::<FrameTooLarge>().is_some() {
        return Fault::OutputLimit;
    }
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Fault::Exited(exit.0);
    }
    if err.downcast_ref::<Closed>().is_some() {
        return Fault::Trapped("the instance was closed".into());
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Fault::FuelExhausted,
        Some(Trap::Interrupt) => Fault::DeadlineExceeded,
        Some(trap) => Fault::Trapped(trap.to_string()),
        None => {
            tracing::warn!(cause = ?err, "guest stopped with a host error");
            Fault::Trapped("host error".into())
        }
    }
}
