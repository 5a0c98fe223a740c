//! What the per-call limits cost CPU-bound code (`scriptbox bench --limits-cost`): the record's
//! CPU cases run by the bare interpreter (`python-snapshot.wasm`, `-c` source, no driver, no
//! sandbox) on three engines that differ only in instrumentation — fuel metering and epoch
//! interruption (the server's), epochs only, fuel only, and neither. The first agrees with the record's
//! sandboxed rows; the gap to the last is what the limits cost, and the rest of the gap to
//! native is the interpreter compiled to wasm.
//!
//! Each engine other than the server's compiles the interpreter once more (about a minute on
//! 2 cores, then cached in `cache_dir` by its settings), which is why this is a flag.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use wasmtime::{Linker, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::record::{CPU_CASES, Row, native_seconds, timed};
use crate::config::Config;
use crate::engine::{EPOCH_TICK, Engine, EpochTicker, cache};
use crate::sandbox::mounts;

/// The longest one case may run on one engine.
const CASE_DEADLINE: Duration = Duration::from_secs(300);

/// An engine variant: what it instruments the interpreter with.
struct Variant {
    name: &'static str,
    fuel: bool,
    epochs: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "fuel + epochs (the server's)",
        fuel: true,
        epochs: true,
    },
    Variant {
        name: "epochs only",
        fuel: false,
        epochs: true,
    },
    Variant {
        name: "fuel only",
        fuel: true,
        epochs: false,
    },
    Variant {
        name: "neither",
        fuel: false,
        epochs: false,
    },
];

/// Appends a row per case and variant: the best time, native's, and the ratio.
pub async fn limits_cost(config: &Config, python: &str, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let natives: Vec<Option<f64>> = CPU_CASES
        .iter()
        .map(|(_, case)| native_seconds(python, &format!("{}\nprint(_best)", timed(case))))
        .collect();
    let stdlib = config.stdlib_dir();
    for variant in &VARIANTS {
        let (engine, module, _ticker) = {
            let mut settings = Engine::config();
            settings
                .consume_fuel(variant.fuel)
                .epoch_interruption(variant.epochs);
            let (wasm, cache_dir) = (config.snapshot_wasm(), config.cache_dir.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let engine = wasmtime::Engine::new(&settings).map_err(anyhow::Error::from)?;
                let module = cache::load_or_compile(&engine, &wasm, &cache_dir)?;
                let ticker = EpochTicker::start(&engine, EPOCH_TICK);
                Ok((engine, module, ticker))
            })
            .await??
        };
        for ((name, case), native) in CPU_CASES.iter().zip(&natives) {
            let source = format!("{}\nprint(_best)", timed(case));
            let run = run_source(&engine, &module, variant, &stdlib, &source);
            let best = tokio::time::timeout(CASE_DEADLINE, run)
                .await
                .map_err(|_| anyhow::anyhow!("{name} took over {CASE_DEADLINE:?}"))?
                .with_context(|| format!("{name} on the engine with {}", variant.name))?;
            let mut row = Row::new(
                format!("{name}: bare interpreter, {}", variant.name),
                format!("{:.1} ms", best * 1e3),
            );
            if let Some(native) = native {
                row.native = format!("{:.1} ms", native * 1e3);
                row.ratio = format!("{:.2}x", best / native);
            }
            rows.push(row);
        }
    }
    Ok(())
}

/// Runs `source` with `python -c` in a fresh instance; the last line it printed, as seconds.
async fn run_source(
    engine: &wasmtime::Engine,
    module: &wasmtime::Module,
    variant: &Variant,
    stdlib: &Path,
    source: &str,
) -> anyhow::Result<f64> {
    let stdout = MemoryOutputPipe::new(4 << 10);
    let stderr = MemoryOutputPipe::new(64 << 10);
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&[mounts::ARGV0, "-c", source])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .preopened_dir(stdlib, mounts::STDLIB_GUEST, FsPerms::ReadOnly)
        .map_err(anyhow::Error::from)?;
    let mut store: Store<WasiP1Ctx> = Store::new(engine, builder.build_p1());
    if variant.fuel {
        store.set_fuel(u64::MAX)?;
    }
    if variant.epochs {
        // As the server runs guests: a deadline every tick that yields to the executor.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    }
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |wasi| wasi)
        .map_err(anyhow::Error::from)?;
    crate::sandbox::host::refuse_host_calls(&mut linker, "no host calls in this measurement")?;
    let instance = linker
        .instantiate_async(&mut store, module)
        .await
        .map_err(anyhow::Error::from)?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        init.call_async(&mut store, ())
            .await
            .map_err(anyhow::Error::from)?;
    }
    let run = instance
        .get_typed_func::<(), i32>(&mut store, "run")
        .map_err(anyhow::Error::from)?;
    let status = match run.call_async(&mut store, ()).await {
        Ok(status) => status,
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => return Err(anyhow::Error::from(err)),
        },
    };
    let printed = String::from_utf8_lossy(&stdout.contents()).into_owned();
    if status != 0 {
        let errors = stderr.contents();
        let tail = String::from_utf8_lossy(&errors[errors.len().saturating_sub(2048)..]);
        bail!("the interpreter exited with {status}: {tail}");
    }
    printed
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .with_context(|| format!("no timing in the output: {printed:?}"))
}
