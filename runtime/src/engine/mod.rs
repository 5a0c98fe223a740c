//! The wasmtime policy: one place decides fuel, epochs, stacks, wasm features and the
//! compiled-module cache, so no other module can forget them (after Spin's `spin-core`).
//!
//! * Fuel metering is on: every call gets a budget (`sandbox` sets it per request).
//! * Epoch interruption is on; [`ticker::EpochTicker`] advances the epoch every
//!   [`EPOCH_TICK`] and holds only a weak reference, so it stops when the engine goes.
//! * Calls are async (`call_async`); the guest yields to tokio every tick.
//! * Exceptions are enabled (the interpreter is built with wasm exception handling).
//! * The compiled interpreter is cached on disk ([`cache`]), keyed by the wasm's SHA-256,
//!   the wasmtime version and these settings.

pub mod cache;
mod ticker;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub use ticker::EpochTicker;

/// How often the epoch advances. A deadline is noticed within one tick, and a busy guest
/// yields to the async executor once per tick. 1 ms rather than 10: with 10 ms slices a few
/// spinning tools held the 2 worker threads long enough to quadruple other tenants' latency
/// (the hostile load check in docs/security.md); warm calls are far shorter than a tick and do not
/// notice it.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The deepest wasm stack a guest may use. CPython's recursion limit is reached long before
/// this (a RecursionError, not a trap) at the interpreter's default settings.
pub const MAX_WASM_STACK: usize = 8 << 20;

/// The fiber stack a guest runs on must hold the wasm stack plus host frames.
pub const ASYNC_STACK: usize = MAX_WASM_STACK + (2 << 20);

/// The pre-initialised images' compiled modules: (driver, scientific).
pub type ImageModules = (wasmtime::Module, wasmtime::Module);

/// A configured engine with its epoch ticker and the compiled interpreter.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    module: wasmtime::Module,
    /// The images, loaded (or built) once per engine and shared by every sandbox on it;
    /// `sandbox::image` fills it. A failure is kept too, so it is not retried per server.
    images: Arc<tokio::sync::OnceCell<Result<ImageModules, String>>>,
    _ticker: Arc<EpochTicker>,
}

impl Engine {
    /// The engine policy as a wasmtime `Config`.
    pub fn config() -> wasmtime::Config {
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK)
            .async_stack_size(ASYNC_STACK)
            .wasm_exceptions(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        config
    }

    /// A text naming every engine setting above; part of the compiled-module cache key, so a
    /// change of policy never loads code compiled under another.
    pub fn settings_fingerprint() -> String {
        format!(
            "fuel=1;epoch=1;max_wasm_stack={MAX_WASM_STACK};async_stack={ASYNC_STACK};exceptions=1;opt=speed"
        )
    }

    /// [`Engine::config`] with wasmtime's pooling instance allocator, sized for `slots`
    /// instances at once of at most `max_memory` bytes of linear memory each. Not the server's
    /// default: the bench measures it against the on-demand allocator (docs/performance.md).
    pub fn pooling_config(slots: u32, max_memory: usize) -> wasmtime::Config {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            // exceptions give every instance a GC heap beside its memory
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(2))
            .total_stacks(slots)
            .total_gc_heaps(slots)
            .max_memory_size(max_memory)
            .max_core_instance_size(4 << 20)
            // the interpreter's function table has about 47,000 entries
            .table_elements(1 << 16)
            .linear_memory_keep_resident(128 << 20)
            .table_keep_resident(1 << 20)
            .async_stack_keep_resident(1 << 20)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Self::config();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        config
    }

    /// Builds the engine, starts its ticker and loads the interpreter from `wasm`, using (or
    /// filling) the compiled-module cache in `cache_dir`.
    pub fn load(wasm: &Path, cache_dir: &Path) -> anyhow::Result<Self> {
        Self::load_with(&Self::config(), wasm, cache_dir)
    }

    /// As [`Engine::load`], with `config` ([`Engine::config`] or a variant of it).
    pub fn load_with(
        config: &wasmtime::Config,
        wasm: &Path,
        cache_dir: &Path,
    ) -> anyhow::Result<Self> {
        let inner = wasmtime::Engine::new(config)
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;
        let module = cache::load_or_compile(&inner, wasm, cache_dir)?;
        let ticker = Arc::new(EpochTicker::start(&inner, EPOCH_TICK));
        Ok(Self {
            inner,
            module,
            images: Arc::default(),
            _ticker: ticker,
        })
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    pub fn module(&self) -> &wasmtime::Module {
        &self.module
    }

    pub fn images(&self) -> &tokio::sync::OnceCell<Result<ImageModules, String>> {
        &self.images
    }
}
