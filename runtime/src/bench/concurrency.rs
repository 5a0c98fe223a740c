//! Isolated against persistent calls under concurrency (issue 23): `add(2, 3)` of `my_calc`
//! over HTTP, one keep-alive connection per client, 1, 4 and 8 clients on 1 and 4 tools,
//! both modes in the same run and the same server. Client `i` calls tool `i % tools`.
//!
//! Per row: calls/s, p50 and p99, and the process's CPU per call (the clients run in this
//! process too, so it is an upper bound of the server's). Then the memory the pooled
//! instances hold (resident set with every isolated pool full, against none loaded).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::RawClient;
use crate::config::Config;
use crate::engine::Engine;
use crate::server::Server;

/// Clients and tools of each row.
const SHAPES: [(usize, usize); 6] = [(1, 1), (4, 1), (8, 1), (1, 4), (4, 4), (8, 4)];

struct Line {
    mode: &'static str,
    clients: usize,
    tools: usize,
    per_s: f64,
    p50: Duration,
    p99: Duration,
    cpu_per_call: Duration,
}

pub async fn run(config: &Config, engine: Engine, seconds: u64) -> anyhow::Result<()> {
    let server = Server::with_engine(config, engine).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pools = config.isolated_pool_per_tool;
    let task = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let mut admin = RawClient::connect(addr).await?;
    let before = resident_bytes();
    let mut pooled = 0;
    for mode in ["isolated", "persistent"] {
        for tool in 0..4 {
            let body = format!(
                r#"{{"script_name": "my_calc", "alias": "{}{tool}", "mode": "{mode}"}}"#,
                &mode[..3]
            );
            let (status, answer) = admin.exchange("POST", "/python/load", body.into()).await?;
            if status != 200 {
                bail!("loading my_calc: {}", String::from_utf8_lossy(&answer));
            }
        }
        if mode == "isolated" {
            tokio::time::sleep(Duration::from_secs(1)).await; // the pools fill
            pooled = resident_bytes().saturating_sub(before);
        }
    }
    let run = Duration::from_secs(seconds.max(1));
    let mut lines = Vec::new();
    for (clients, tools) in SHAPES {
        for mode in ["isolated", "persistent"] {
            tokio::time::sleep(Duration::from_millis(300)).await; // pools refill between rows
            lines.push(measure(addr, mode, clients, tools, run).await?);
        }
    }
    drop(admin);
    let _ = stop.send(());
    task.await.context("server task")??;
    print(&lines, pooled, 4 * pools);
    Ok(())
}

async fn measure(
    addr: std::net::SocketAddr,
    mode: &'static str,
    clients: usize,
    tools: usize,
    run: Duration,
) -> anyhow::Result<Line> {
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let body = format!(
            r#"{{"alias": "{}{}", "function_name": "add", "args": [2, 3]}}"#,
            &mode[..3],
            client % tools
        );
        tasks.push(tokio::spawn(async move {
            let mut http = RawClient::connect(addr).await?;
            let body = bytes::Bytes::from(body);
            let mut samples = Vec::new();
            while started.elapsed() < run {
                let t = Instant::now();
                let (status, answer) = http.exchange("POST", "/python/call", body.clone()).await?;
                if status != 200 {
                    bail!("{mode} call: {}", String::from_utf8_lossy(&answer));
                }
                samples.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let wall = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    let calls = u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX);
    Ok(Line {
        mode,
        clients,
        tools,
        per_s: samples.len() as f64 / wall.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        cpu_per_call: cpu / calls,
    })
}

fn print(lines: &[Line], pooled: u64, instances: usize) {
    println!();
    println!(
        "{:<11} {:>7} {:>5} {:>9} {:>9} {:>9} {:>12}  vs persistent",
        "mode", "clients", "tools", "calls/s", "p50 ms", "p99 ms", "CPU ms/call"
    );
    for pair in lines.chunks(2) {
        let persistent = pair.get(1).map_or(0.0, |l| l.per_s);
        for line in pair {
            let ratio = if line.mode == "isolated" && persistent > 0.0 {
                format!("{:.2}x the calls/s", line.per_s / persistent)
            } else {
                String::new()
            };
            println!(
                "{:<11} {:>7} {:>5} {:>9.0} {:>9.2} {:>9.2} {:>12.2}  {ratio}",
                line.mode,
                line.clients,
                line.tools,
                line.per_s,
                line.p50.as_secs_f64() * 1e3,
                line.p99.as_secs_f64() * 1e3,
                line.cpu_per_call.as_secs_f64() * 1e3,
            );
        }
    }
    println!("goals (8 clients, isolated): >= 1000 calls/s, p99 <= 10 ms; 1 client: p50 <= 1 ms");
    let per_instance = pooled / u64::try_from(instances.max(1)).unwrap_or(1);
    println!(
        "memory: {:.1} MiB more resident with 4 isolated tools loaded and their {instances} pooled \
         instances ready: {:.1} MiB per pooled instance, at most",
        pooled as f64 / f64::from(1 << 20),
        per_instance as f64 / f64::from(1 << 20)
    );
}

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name's closing parenthesis; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// This process's resident set, from `/proc/self/statm` (pages of 4 KiB).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
