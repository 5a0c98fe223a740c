//! The performance record's second table (issue 8): isolated calls, a fresh numpy+pandas
//! tool, CPU-bound work against native `python3`, memory per idle tool, and start-up time.
//! Each row prints what was measured, the native reference where there is one, the ratio, and
//! the goal with whether it was met. Numbers, not assertions: `docs/performance.md` records a
//! run and explains the misses.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::value::RawValue;

use crate::config::Config;
use crate::engine::Engine;
use crate::protocol::Op;
use crate::registry::{Mode, Registry};
use crate::sandbox::{Mounts, Outcome, Sandbox, ToolMounts};
use crate::server::Server;

/// One line of the table.
pub struct Row {
    pub name: String,
    pub sandbox: String,
    pub native: String,
    pub ratio: String,
    pub goal: String,
}

impl Row {
    pub(super) fn new(name: impl Into<String>, sandbox: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sandbox: sandbox.into(),
            native: "-".into(),
            ratio: "-".into(),
            goal: "-".into(),
        }
    }

    fn goal(mut self, goal: impl Into<String>) -> Self {
        self.goal = goal.into();
        self
    }
}

pub fn print(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|row| row.name.len())
        .max()
        .unwrap_or(0)
        .max(11);
    println!();
    println!(
        "{:<width$} {:>12} {:>12} {:>8}  goal",
        "measurement", "sandbox", "native", "ratio"
    );
    for row in rows {
        println!(
            "{:<width$} {:>12} {:>12} {:>8}  {}",
            row.name, row.sandbox, row.native, row.ratio, row.goal
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(at).copied().unwrap_or_default()
}

fn verdict(value: f64, goal: f64, unit: &str) -> String {
    if value <= goal {
        format!("<= {goal} {unit}: met")
    } else {
        format!("<= {goal} {unit}: missed by {:.1}x", value / goal)
    }
}

/// A registry of the local tenant of a server built on `engine` (its driver precompiled, as
/// a running server has it).
async fn registry(config: &Config, engine: Engine) -> anyhow::Result<(Server, Arc<Registry>)> {
    let server = Server::with_engine(config, engine).await?;
    crate::guest::precompile_driver(&server.sandbox, &server.cache_dir).await;
    if config.images {
        server
            .sandbox
            .prepare_images(&config.plain_wasm(), &config.cache_dir)
            .await;
    }
    let registry = server
        .tenants
        .get(crate::config::LOCAL_TENANT)
        .context("the local tenant")?
        .registry
        .clone();
    Ok((server, registry))
}

fn call_op(function: &str) -> anyhow::Result<Op> {
    Ok(Op::Call {
        function: function.to_owned(),
        args: RawValue::from_string("[]".to_owned())?,
        kwargs: RawValue::from_string("{}".to_owned())?,
    })
}

async fn call_ok(registry: &Arc<Registry>, alias: &str, op: Op) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let report = registry
        .run(alias, op)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let took = started.elapsed();
    match report.outcome {
        Outcome::Answered { error: None, .. } => Ok(took),
        other => bail!("call failed: {other:?}"),
    }
}

/// Isolated calls of `counter.increment`: at a moderate rate (one call every 25 ms, the pool
/// keeps up) and back to back (the pool's refill is the limit).
pub async fn isolated(config: &Config, engine: Engine, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (_server, registry) = registry(config, engine.clone()).await?;
    registry
        .load("counter", None, "iso", &Default::default(), Mode::Isolated)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::time::sleep(Duration::from_millis(500)).await; // the pool fills
    let mut samples = Vec::new();
    for _ in 0..200 {
        samples.push(call_ok(&registry, "iso", call_op("increment")?).await?);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    rows.push(
        Row::new(
            "isolated call p50, 40 calls/s",
            format!("{:.2} ms", ms(p50)),
        )
        .goal(verdict(ms(p50), 5.0, "ms")),
    );
    rows.push(Row::new(
        "isolated call p99, 40 calls/s",
        format!("{:.2} ms", ms(p99)),
    ));
    rows.push(Row::new(
        "isolated calls/s, back to back, one tool",
        format!("{:.0} /s", back_to_back(&registry, "iso").await?),
    ));
    // What an isolated call costs without a pool: a start plus the tool's import, from the
    // driver image and from the base snapshot.
    for (images, what) in [(true, "driver image"), (false, "base snapshot")] {
        let sandbox = sandbox(config, engine.clone(), images).await?;
        rows.push(Row::new(
            format!("instance start + tool import (no pool), {what}, p50"),
            format!("{:.2} ms", ms(start_p50(config, &sandbox, 20).await?)),
        ));
    }
    Ok(())
}

/// The pooling instance allocator against the on-demand one (the server's default): starts
/// from the driver image and back-to-back isolated calls, each on an engine of its own.
pub async fn pooling(
    config: &Config,
    on_demand: Engine,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let pooled = {
        let (wasm, cache) = (config.snapshot_wasm(), config.cache_dir.clone());
        let memory = usize::try_from(config.limits.memory_bytes).unwrap_or(usize::MAX);
        let pool = Engine::pooling_config(64, memory);
        tokio::task::spawn_blocking(move || Engine::load_with(&pool, &wasm, &cache)).await??
    };
    for (engine, what) in [(on_demand, "on-demand"), (pooled, "pooling")] {
        let sandbox = sandbox(config, engine.clone(), true).await?;
        rows.push(Row::new(
            format!("instance start + tool import, driver image, {what} allocator, p50"),
            format!("{:.2} ms", ms(start_p50(config, &sandbox, 100).await?)),
        ));
        let (_server, registry) = registry(config, engine).await?;
        registry
            .load("counter", None, "iso", &Default::default(), Mode::Isolated)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows.push(Row::new(
            format!("isolated calls/s, back to back, {what} allocator"),
            format!("{:.0} /s", back_to_back(&registry, "iso").await?),
        ));
    }
    Ok(())
}

/// The p50 of `count` starts of the `counter` tool (instance, boot, import), each dropped.
async fn start_p50(config: &Config, sandbox: &Sandbox, count: usize) -> anyhow::Result<Duration> {
    let mounts = tool_mounts(config)?;
    let mut starts = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let instance = sandbox
            .spawn("counter", &config.limits, &mounts)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        starts.push(started.elapsed());
        drop(instance);
    }
    Ok(percentile(&mut starts, 0.5))
}

/// Calls per second of `alias`'s `increment`, back to back for 3 s.
async fn back_to_back(registry: &Arc<Registry>, alias: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut done = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        call_ok(registry, alias, call_op("increment")?).await?;
        done += 1;
    }
    Ok(f64::from(done) / started.elapsed().as_secs_f64())
}

pub(super) fn tool_mounts(config: &Config) -> anyhow::Result<ToolMounts> {
    Ok(ToolMounts {
        scripts: config.scripts_dir.canonicalize()?,
        scratch: None,
        max_open_files: config.quotas.max_open_files,
        sys_paths: Vec::new(),
        site_packages: None,
        preload: Default::default(),
    })
}

/// A sandbox as the server builds it: the driver precompiled and, with `images` (and the
/// config's `images` on), the pre-initialised images ready.
pub(super) async fn sandbox(
    config: &Config,
    engine: Engine,
    images: bool,
) -> anyhow::Result<Sandbox> {
    let mounts = Mounts {
        stdlib: config.stdlib_dir(),
        driver: crate::guest::install_driver(&config.data_dir)?,
    };
    let sandbox = Sandbox::new(engine, mounts, config.start)?;
    crate::guest::precompile_driver(&sandbox, &config.cache_dir).await;
    if images && config.images {
        sandbox
            .prepare_images(&config.plain_wasm(), &config.cache_dir)
            .await;
    }
    Ok(sandbox)
}

/// The numpy+pandas tool's first call in a fresh instance (start, imports, call), against
/// native `python3` doing the same imports and call in a new process.
pub async fn numpy_pandas(
    config: &Config,
    engine: Engine,
    python: &str,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut mounts = tool_mounts(config)?;
    mounts.preload = crate::sandbox::Preload::for_script(&mounts.scripts, "dataframe_tool");
    let mut p50s = Vec::new();
    for images in [true, false] {
        let sandbox = sandbox(config, engine.clone(), images).await?;
        let mut samples = Vec::new();
        for _ in 0..if images { 20 } else { 3 } {
            let started = Instant::now();
            let mut instance = sandbox
                .spawn("dataframe_tool", &config.limits, &mounts)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let outcome = instance.run(&call_op("summary")?).await;
            if !matches!(outcome, Outcome::Answered { error: None, .. }) {
                bail!("the numpy+pandas tool failed: {outcome:?}");
            }
            samples.push(started.elapsed());
        }
        p50s.push(ms(percentile(&mut samples, 0.5)));
    }
    let script = config.scripts_dir.join("dataframe_tool.py");
    let native = native_seconds(
        python,
        &format!(
            "import time, runpy\nt = time.perf_counter()\nns = runpy.run_path({:?})\nns['summary']()\nprint(time.perf_counter() - t)",
            script.display()
        ),
    );
    for (p50, what) in p50s
        .into_iter()
        .zip(["numpy+pandas image", "base snapshot"])
    {
        let mut row = Row::new(
            format!("fresh call of a numpy+pandas tool, {what}, p50"),
            format!("{p50:.1} ms"),
        )
        .goal(verdict(p50, 15.0, "ms"));
        if let Some(native) = native {
            row.native = format!("{:.1} ms", native * 1e3);
            row.ratio = format!("{:.2}x", p50 / (native * 1e3));
        }
        rows.push(row);
    }
    Ok(())
}

/// Runs `code` under native `python3`; the last line it prints, as seconds. `None` when the
/// reference cannot run (numpy missing natively, say).
pub(super) fn native_seconds(python: &str, code: &str) -> Option<f64> {
    let output = Command::new(python).args(["-c", code]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// CPU-bound work, timed inside Python (best of 7, `time.perf_counter`) in the sandbox and
/// natively.
pub(super) const CPU_CASES: [(&str, &str); 5] = [
    (
        "fib(25), recursive",
        "def f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\nwork = lambda: f(25)",
    ),
    (
        "pure-Python loop, 10^6 additions",
        "def work():\n    t = 0\n    for i in range(1_000_000):\n        t += i\n    return t",
    ),
    (
        "nested loops, small ints, 10^6 iterations",
        "def work():\n    t = 0\n    for i in range(1000):\n        for j in range(1000):\n            t = (t + j) & 0x3fff\n    return t",
    ),
    (
        "json dumps+loads, 10k-item list x10",
        "import json\ndata = [{'i': i, 's': str(i), 'f': i / 3} for i in range(10_000)]\ndef work():\n    for _ in range(10):\n        json.loads(json.dumps(data))",
    ),
    (
        "numpy: (arange(10^6)**2).sum() x20",
        "import numpy as np\ndef work():\n    a = np.arange(1_000_000, dtype=np.float64)\n    for _ in range(20):\n        (a * a).sum()",
    ),
];

pub(super) fn timed(case: &str) -> String {
    format!(
        "{case}\nimport time as _t\n_best = None\nfor _ in range(7):\n    _s = _t.perf_counter()\n    work()\n    _d = _t.perf_counter() - _s\n    _best = _d if _best is None or _d < _best else _best\n"
    )
}

pub async fn cpu(
    config: &Config,
    engine: Engine,
    python: &str,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let sandbox = sandbox(config, engine, true).await?;
    let mut limits = config.limits;
    limits.fuel = limits.fuel.saturating_mul(50);
    limits.deadline_ms = 120_000;
    for (name, case) in CPU_CASES {
        let mut instance = sandbox
            .spawn(
                crate::protocol::SCRATCH_MODULE,
                &limits,
                &tool_mounts(config)?,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let outcome = instance.run(&Op::Exec { code: timed(case) }).await;
        if !matches!(outcome, Outcome::Answered { error: None, .. }) {
            bail!("{name} failed in the sandbox: {outcome:?}");
        }
        let outcome = instance
            .run(&Op::Eval {
                expression: "_best".to_owned(),
            })
            .await;
        let Outcome::Answered {
            result: Some(best),
            error: None,
            ..
        } = outcome
        else {
            bail!("{name}: no timing from the sandbox: {outcome:?}");
        };
        let sandboxed: f64 = serde_json::from_str(best.get())?;
        let mut row = Row::new(name, format!("{:.1} ms", sandboxed * 1e3));
        if let Some(native) = native_seconds(python, &format!("{}\nprint(_best)", timed(case))) {
            let ratio = sandboxed / native;
            row.native = format!("{:.1} ms", native * 1e3);
            row.ratio = format!("{ratio:.2}x");
            row.goal = verdict(ratio, 2.0, "x native");
        } else {
            row.native = "n/a".into();
        }
        rows.push(row);
    }
    Ok(())
}

/// This process's proportional set size, in bytes (Linux).
fn pss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory per idle persistent tool: PSS growth after loading `count` tools, divided by
/// `count`, for each count.
pub async fn memory(
    config: &Config,
    engine: Engine,
    counts: &[usize],
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    for &count in counts {
        let mut config = config.clone();
        config.max_tools = count + 1;
        config.max_concurrent_calls = config.max_concurrent_calls.max(count + 1);
        config.quotas.max_tools = count + 1;
        config.quotas.max_concurrent_calls = config.max_concurrent_calls;
        let (server, registry) = registry(&config, engine.clone()).await?;
        let before = pss().context("reading /proc/self/smaps_rollup")?;
        for i in 0..count {
            registry
                .load(
                    "counter",
                    None,
                    &format!("idle{i}"),
                    &Default::default(),
                    Mode::Persistent,
                )
                .await
                .map_err(|e| anyhow::anyhow!("tool {i}: {e}"))?;
        }
        let after = pss().context("reading /proc/self/smaps_rollup")?;
        let per_tool = after.saturating_sub(before) as f64 / count as f64 / (1 << 20) as f64;
        rows.push(
            Row::new(
                format!("PSS per idle persistent tool, {count} loaded"),
                format!("{per_tool:.2} MiB"),
            )
            .goal(verdict(per_tool, 4.0, "MiB")),
        );
        drop(registry);
        drop(server);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// From nothing to the first served call: the engine from the warm compile cache, the server,
/// a `load` and a `call` over HTTP.
pub async fn start_to_first_call(config: &Config, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let started = Instant::now();
    let engine = crate::server::load_engine(config).await?;
    let engine_loaded = started.elapsed();
    let server = Server::with_engine(config, engine).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let load = http_post(
        addr,
        "/python/load",
        r#"{"script_name": "my_calc", "alias": "calc"}"#,
    )
    .await?;
    let call = http_post(
        addr,
        "/python/call",
        r#"{"alias": "calc", "function_name": "add", "args": [2, 1]}"#,
    )
    .await?;
    let total = started.elapsed();
    if !load.contains("\"success\":true") || !call.contains("\"result\":3") {
        bail!("start-up run failed: {load} / {call}");
    }
    let _ = stop.send(());
    let _ = serving.await;
    rows.push(Row::new(
        "start: engine from the warm compile cache",
        format!("{:.0} ms", ms(engine_loaded)),
    ));
    rows.push(
        Row::new(
            "start to first served call (load + call)",
            format!("{:.0} ms", ms(total)),
        )
        .goal(verdict(total.as_secs_f64(), 1.0, "s")),
    );
    Ok(())
}

/// A minimal HTTP/1.1 POST on a new connection; the whole answer as text.
async fn http_post(addr: std::net::SocketAddr, path: &str, body: &str) -> anyhow::Result<String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
    .await?
}

/// The numpy+pandas example tool must exist for [`numpy_pandas`].
pub fn has_dataframe_tool(scripts: &Path) -> bool {
    scripts.join("dataframe_tool.py").is_file()
}
