//! The load check: `--clients` concurrent HTTP clients against the real server, first benign
//! only (the unloaded baseline), then with `--hostile-percent` of the clients hostile: busy
//! loops, memory bombs and output floods (the attack suite's fixture), back to back. Clients
//! are closed-loop (each waits for its answer), so hostile clients are a fixed share of the
//! clients and the report gives the share of calls that results. Reports benign latency
//! against the baseline, benign failures (the goal is none), what the hostile calls got, and
//! the process's resident memory after loading, after the baseline and at two points of the
//! hostile run (the memory a hostile tool may hold is bounded by its `memory_bytes`, and
//! wasm memory does not shrink, so RSS should step up once and then stay flat).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;

use super::{BenchArgs, RawClient};
use crate::config::{Config, HttpLimits, Quotas, SOURCE_ROOT};
use crate::server::Server;

/// Benign tools (each a `my_calc`), so benign calls are not serialised behind one queue.
const BENIGN_TOOLS: usize = 8;
/// Hostile tools (each the attack fixture, with tight limits).
const HOSTILE_TOOLS: usize = 4;
const HOSTILE_CALLS: [&str; 3] = ["spin", "memory_bomb", "flood"];

#[derive(Default)]
struct Phase {
    benign: Vec<Duration>,
    benign_failures: BTreeMap<String, u64>,
    hostile: BTreeMap<String, u64>,
    wall: Duration,
}

impl Phase {
    fn merge(&mut self, other: Phase) {
        self.benign.extend(other.benign);
        for (k, v) in other.benign_failures {
            *self.benign_failures.entry(k).or_default() += v;
        }
        for (k, v) in other.hostile {
            *self.hostile.entry(k).or_default() += v;
        }
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.benign.clone();
        sorted.sort_unstable();
        let at = ((sorted.len().max(1) as f64 - 1.0) * p).round() as usize;
        sorted.get(at).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.duration_s == 0 || args.hostile_percent > 100 {
        bail!("--clients and --duration-s must be above 0, --hostile-percent at most 100");
    }
    let dir = tempfile_dir()?;
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts)?;
    for (from, name) in [
        ("scripts/my_calc.py", "my_calc.py"),
        ("tests/scripts/attacker.py", "attacker.py"),
    ] {
        std::fs::copy(Path::new(SOURCE_ROOT).join(from), scripts.join(name))
            .with_context(|| format!("copying {from}"))?;
    }
    let calls = args.clients * 4;
    let config = Config {
        port: 0,
        scripts_dir: scripts,
        data_dir: dir.join("data"),
        max_concurrent_calls: calls,
        queue_depth: args.clients,
        http: HttpLimits {
            max_connections: args.clients + 64,
            max_connections_per_ip: args.clients + 64,
            ..HttpLimits::default()
        },
        quotas: Quotas {
            max_concurrent_calls: calls,
            requests_per_second: 1_000_000,
            burst: 1_000_000,
            ..Quotas::default()
        },
        ..Config::default()
    };
    let engine = crate::server::load_engine(&config).await?;
    let server = Server::with_engine(&config, engine).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    load_tools(addr).await?;
    let rss_start = rss_kib();
    let baseline_for = Duration::from_secs(args.duration_s.div_ceil(3));
    let baseline = phase(addr, args.clients, baseline_for, 0).await?;
    let rss_mid = rss_kib();
    let half = Duration::from_secs(args.duration_s.div_ceil(2));
    let mut loaded = phase(addr, args.clients, half, args.hostile_percent).await?;
    let rss_half = rss_kib();
    let second = phase(addr, args.clients, half, args.hostile_percent).await?;
    let wall = loaded.wall + second.wall;
    loaded.merge(second);
    loaded.wall = wall;
    let rss_end = rss_kib();
    let _ = stop.send(());
    task.await.context("server task")??;
    let _ = std::fs::remove_dir_all(&dir);
    print_report(
        args,
        &baseline,
        &loaded,
        [rss_start, rss_mid, rss_half, rss_end],
    );
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("scriptbox-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn load_tools(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut client = RawClient::connect(addr).await?;
    for i in 0..BENIGN_TOOLS {
        let body = format!(r#"{{"script_name": "my_calc", "alias": "calc{i}"}}"#);
        let (status, reply) = client.exchange("POST", "/python/load", body.into()).await?;
        if status != 200 {
            bail!(
                "loading calc{i}: {status} {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
    for i in 0..HOSTILE_TOOLS {
        let body = format!(
            r#"{{"script_name": "attacker", "alias": "evil{i}", "limits": {{"fuel": 300000000, "deadline_ms": 1000, "memory_bytes": 134217728, "output_bytes": 65536}}}}"#
        );
        let (status, reply) = client.exchange("POST", "/python/load", body.into()).await?;
        if status != 200 {
            bail!(
                "loading evil{i}: {status} {}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
    Ok(())
}

/// `clients` clients for `length`, `hostile_percent` of calls hostile.
async fn phase(
    addr: std::net::SocketAddr,
    clients: usize,
    length: Duration,
    hostile_percent: u32,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let until = started + length;
    let hostile_clients = clients * hostile_percent as usize / 100;
    let mut tasks = Vec::with_capacity(clients);
    for id in 0..clients {
        tasks.push(tokio::spawn(client(addr, id, until, id < hostile_clients)));
    }
    let mut total = Phase::default();
    for task in tasks {
        total.merge(task.await??);
    }
    total.wall = started.elapsed();
    Ok(total)
}

async fn client(
    addr: std::net::SocketAddr,
    id: usize,
    until: Instant,
    hostile: bool,
) -> anyhow::Result<Phase> {
    let mut phase = Phase::default();
    let mut conn = RawClient::connect(addr).await?;
    let mut n = 0usize;
    while Instant::now() < until {
        n += 1;
        if hostile {
            let function = HOSTILE_CALLS[n % HOSTILE_CALLS.len()];
            let body = format!(
                r#"{{"alias": "evil{}", "function_name": "{function}"}}"#,
                (id + n) % HOSTILE_TOOLS
            );
            let outcome = match conn.exchange("POST", "/python/call", body.into()).await {
                Ok((status, reply)) => format!("{function}: {status} {}", error_code(&reply)),
                Err(_) => {
                    conn = RawClient::connect(addr).await?;
                    format!("{function}: connection error")
                }
            };
            *phase.hostile.entry(outcome).or_default() += 1;
        } else {
            let body = Bytes::from(format!(
                r#"{{"alias": "calc{}", "function_name": "add", "args": [2, 1]}}"#,
                id % BENIGN_TOOLS
            ));
            let sent = Instant::now();
            match conn.exchange("POST", "/python/call", body).await {
                Ok((200, _)) => phase.benign.push(sent.elapsed()),
                Ok((status, reply)) => {
                    *phase
                        .benign_failures
                        .entry(format!("{status} {}", error_code(&reply)))
                        .or_default() += 1;
                }
                Err(_) => {
                    *phase
                        .benign_failures
                        .entry("connection error".into())
                        .or_default() += 1;
                    conn = RawClient::connect(addr).await?;
                }
            }
        }
    }
    Ok(phase)
}

fn error_code(reply: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// This process's resident set size in KiB (Linux), or 0.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn print_report(args: &BenchArgs, baseline: &Phase, loaded: &Phase, rss: [u64; 4]) {
    let hostile_calls: u64 = loaded.hostile.values().sum();
    let all_calls = hostile_calls as f64 + loaded.benign.len() as f64;
    println!(
        "load check: {} clients; baseline {:.0} s benign only, then {:.0} s with {}% of the clients hostile ({:.1}% of the calls)",
        args.clients,
        baseline.wall.as_secs_f64(),
        loaded.wall.as_secs_f64(),
        args.hostile_percent,
        100.0 * hostile_calls as f64 / all_calls.max(1.0),
    );
    println!();
    println!(
        "| run | benign calls | benign p50 ms | benign p99 ms | benign calls/s | benign failures |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, phase) in [
        ("unloaded (benign only)", baseline),
        ("with hostile calls", loaded),
    ] {
        let failures: u64 = phase.benign_failures.values().sum();
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.0} | {failures} |",
            phase.benign.len(),
            phase.percentile_ms(0.5),
            phase.percentile_ms(0.99),
            phase.benign.len() as f64 / phase.wall.as_secs_f64(),
        );
    }
    let p50 = |p: &Phase| p.percentile_ms(0.5);
    let p99 = |p: &Phase| p.percentile_ms(0.99);
    if p50(baseline) > 0.0 && p99(baseline) > 0.0 {
        println!();
        println!(
            "benign p50 {:.2}x and p99 {:.2}x the unloaded run",
            p50(loaded) / p50(baseline),
            p99(loaded) / p99(baseline)
        );
    }
    for (name, phase) in [("unloaded", baseline), ("hostile", loaded)] {
        for (what, count) in &phase.benign_failures {
            println!("benign failure ({name}): {what} x{count}");
        }
    }
    println!();
    println!("| hostile call: status code | count |");
    println!("|---|---|");
    for (outcome, count) in &loaded.hostile {
        println!("| {outcome} | {count} |");
    }
    println!();
    println!(
        "RSS: {} MiB after loading, {} MiB after the baseline, {} MiB halfway through the hostile run, {} MiB at its end",
        rss[0] / 1024,
        rss[1] / 1024,
        rss[2] / 1024,
        rss[3] / 1024
    );
}
