//! Building the images: the interpreter before its snapshot (`python.wasm`) is instrumented by
//! Wizer, started once with the stdlib and the driver mounted, made to import the driver (and
//! then numpy and pandas), and its memory and globals are written out as new modules.
//!
//! Three facts about `python.wasm` shape this:
//! * `wizer.initialize` starts CPython; after it, the `turn(ptr, len)` export runs source
//!   text in `__main__` and returns 0 when it ran without an exception. (`run` refuses to
//!   start after a turn, so instances of an image boot with a turn too; see
//!   [`super::boot_source`].)
//! * wasi-libc learns the instance's preopened folders on the first path it resolves and
//!   keeps the table in linear memory. The imports below resolve paths, so the table would be
//!   frozen into the image with the build's folders. `__wasilibc_reset_preopens` (found by
//!   name, exported for this build only) empties it before each snapshot, and instances
//!   learn their own folders.
//! * Everything imported here is shared by every instance of the image, so the driver
//!   reseeds `random` and `numpy.random` when it boots (else each fresh instance would draw
//!   the same numbers).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use wasmtime::{Instance, Linker, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::wasm;
use crate::sandbox::mounts;

/// Source run after the interpreter starts, for the driver image: the driver imported as a
/// module (its `boot` is called by each instance), then every object moved out of the
/// collector's reach so collections in instances do not touch (and copy) the image's pages.
/// Constant text.
pub const DRIVER_PRELOAD: &str = "\
import gc, sys
sys.path.insert(0, '/scriptbox')
try:
    import _scriptbox_driver
finally:
    del sys.path[0]
gc.collect()
gc.freeze()
sys.stdout.flush()
sys.stderr.flush()
";

/// Run after [`DRIVER_PRELOAD`], for the scientific image: the imports, then a few common
/// operations once, so that the work pandas and numpy do on first use (lazy imports, caches,
/// dispatch tables) is in the image rather than in every instance's first call. Constant text.
pub const SCIENTIFIC_PRELOAD: &str = "\
import gc, sys, numpy, pandas
_frame = pandas.DataFrame({'x': numpy.linspace(0.0, 1.0, 8), 'k': list('abababab')})
_seen = (_frame.describe(), _frame.groupby('k').sum(), _frame['x'].mean(), _frame['x'].std(),
         _frame.to_dict(), (_frame['x'] * 2).tolist(), float(numpy.sqrt(_frame['x']).sum()))
del _frame, _seen
gc.collect()
gc.freeze()
sys.stdout.flush()
sys.stderr.flush()
";

/// The longest a build may run its guest code (the compiles come on top).
const BUILD_DEADLINE: Duration = Duration::from_secs(600);

/// The wasi-libc function that forgets the preopened folders, and the name we export it under.
const RESET_PREOPENS: &str = "__wasilibc_reset_preopens";
const RESET_EXPORT: &str = "scriptbox.reset_preopens";

/// The two images, as wasm modules.
pub struct Built {
    pub driver: Vec<u8>,
    pub scientific: Vec<u8>,
}

struct BuildState {
    wasi: WasiP1Ctx,
    /// The guest's stderr, for the log when a preload fails.
    stderr: MemoryOutputPipe,
}

/// Builds both images from `plain` (the bytes of `python.wasm`), mounting `stdlib` and
/// `driver_dir` as instances see them.
pub async fn build(
    engine: &wasmtime::Engine,
    plain: &[u8],
    stdlib: &Path,
    driver_dir: &Path,
) -> anyhow::Result<Built> {
    let started = Instant::now();
    let mut wizer = wasmtime_wizer::Wizer::new();
    wizer.init_func("wizer.initialize");
    let (cx, instrumented) = wizer
        .instrument(plain)
        .map_err(anyhow::Error::from)
        .context("instrumenting python.wasm")?;
    let reset = wasm::function_named(plain, RESET_PREOPENS)?;
    let instrumented = wasm::with_export(&instrumented, reset, RESET_EXPORT)?;
    tracing::info!("compiling the interpreter for the image build (about a minute, once)");
    let module = wasmtime::Module::new(engine, &instrumented)
        .map_err(anyhow::Error::from)
        .context("compiling the instrumented interpreter")?;
    drop(instrumented);
    tracing::info!(
        elapsed_s = started.elapsed().as_secs(),
        "starting the image build"
    );

    let mut store = store(engine, stdlib, driver_dir)?;
    let instance = instantiate(&mut store, &module).await?;
    let run = async {
        turn(
            &mut store,
            &instance,
            DRIVER_PRELOAD,
            "importing the driver",
        )
        .await?;
        reset_preopens(&mut store, &instance).await?;
        let driver = snapshot(&wizer, &cx, &mut store, instance).await?;
        turn(
            &mut store,
            &instance,
            SCIENTIFIC_PRELOAD,
            "importing numpy and pandas",
        )
        .await?;
        reset_preopens(&mut store, &instance).await?;
        let scientific = snapshot(&wizer, &cx, &mut store, instance).await?;
        anyhow::Ok(Built { driver, scientific })
    };
    let built = tokio::time::timeout(BUILD_DEADLINE, run)
        .await
        .map_err(|_| anyhow::anyhow!("the image build took longer than {BUILD_DEADLINE:?}"))??;
    tracing::info!(
        elapsed_s = started.elapsed().as_secs(),
        "built the interpreter images"
    );
    Ok(built)
}

fn store(
    engine: &wasmtime::Engine,
    stdlib: &Path,
    driver_dir: &Path,
) -> anyhow::Result<Store<BuildState>> {
    let stderr = MemoryOutputPipe::new(64 << 10);
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&[mounts::ARGV0])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for (host, guest) in [
        (stdlib, mounts::STDLIB_GUEST),
        (driver_dir, mounts::DRIVER_GUEST),
    ] {
        builder
            .preopened_dir(host, guest, FsPerms::ReadOnly)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("mounting {} at {guest}", host.display()))?;
    }
    let mut store = Store::new(
        engine,
        BuildState {
            wasi: builder.build_p1(),
            stderr,
        },
    );
    // Trusted, constant code: no fuel budget, and the deadline is the timeout around it.
    store.set_fuel(u64::MAX)?;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    Ok(store)
}

async fn instantiate(
    store: &mut Store<BuildState>,
    module: &wasmtime::Module,
) -> anyhow::Result<Instance> {
    let mut linker: Linker<BuildState> = Linker::new(store.engine());
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut BuildState| &mut s.wasi)
        .map_err(anyhow::Error::from)?;
    // The preload code never reaches the host.
    crate::sandbox::host::refuse_host_calls(&mut linker, "no host calls while building an image")?;
    let instance = linker
        .instantiate_async(&mut *store, module)
        .await
        .map_err(anyhow::Error::from)
        .context("instantiating the interpreter")?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
        init.call_async(&mut *store, ())
            .await
            .map_err(anyhow::Error::from)
            .context("initialising the reactor")?;
    }
    instance
        .get_typed_func::<(), ()>(&mut *store, "wizer.initialize")
        .map_err(anyhow::Error::from)?
        .call_async(&mut *store, ())
        .await
        .map_err(anyhow::Error::from)
        .context("starting the interpreter (wizer.initialize)")?;
    Ok(instance)
}

/// Runs `source` as one turn; it must end without an exception.
async fn turn(
    store: &mut Store<BuildState>,
    instance: &Instance,
    source: &str,
    what: &str,
) -> anyhow::Result<()> {
    let value = super::run_turn(&mut *store, instance, source.as_bytes())
        .await
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{what} in the image build"))?;
    // A warning printed here would be printed by no instance (it was shown once, here), and
    // anything left buffered would be flushed by every instance: an image is built silent.
    let stderr = store.data().stderr.contents();
    if value != 0 || !stderr.is_empty() {
        let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(2048)..]);
        bail!("{what} in the image build failed (the turn returned {value}): {tail}");
    }
    Ok(())
}

async fn reset_preopens(store: &mut Store<BuildState>, instance: &Instance) -> anyhow::Result<()> {
    instance
        .get_typed_func::<(), ()>(&mut *store, RESET_EXPORT)
        .map_err(anyhow::Error::from)?
        .call_async(&mut *store, ())
        .await
        .map_err(anyhow::Error::from)
        .context("resetting the preopened folders")
}

async fn snapshot(
    wizer: &wasmtime_wizer::Wizer,
    cx: &wasmtime_wizer::ModuleContext<'_>,
    store: &mut Store<BuildState>,
    instance: Instance,
) -> anyhow::Result<Vec<u8>> {
    let mut state = State { store, instance };
    wizer
        .snapshot(cx, &mut state)
        .await
        .map_err(anyhow::Error::from)
        .context("writing the image")
}

/// What Wizer reads from the instance: its exported globals and memory.
struct State<'a> {
    store: &'a mut Store<BuildState>,
    instance: Instance,
}

impl wasmtime_wizer::InstanceState for State<'_> {
    async fn global_get(
        &mut self,
        name: &str,
        _: wasmtime_wizer::ValType,
    ) -> wasmtime_wizer::SnapshotVal {
        use wasmtime_wizer::SnapshotVal;
        let global = self
            .instance
            .get_global(&mut *self.store, name)
            .expect("Wizer names globals its instrumentation exported");
        match global.get(&mut *self.store) {
            wasmtime::Val::I32(x) => SnapshotVal::I32(x),
            wasmtime::Val::I64(x) => SnapshotVal::I64(x),
            wasmtime::Val::F32(x) => SnapshotVal::F32(x),
            wasmtime::Val::F64(x) => SnapshotVal::F64(x),
            wasmtime::Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => panic!("a global Wizer cannot snapshot: {other:?}"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self
            .instance
            .get_memory(&mut *self.store, name)
            .expect("Wizer names memories its instrumentation exported");
        contents(memory.data(&*self.store))
    }
}
