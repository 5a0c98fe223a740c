//! `scriptbox bench`: warm-call latency of `my_calc.add(a, b)` three ways, printed as a table.
//!
//! * in-process: the sandbox API directly (no HTTP), one instance, calls back to back;
//! * HTTP: the real server on 127.0.0.1, keep-alive hyper connections in the same process, first
//!   sequential (latency), then `--concurrency` clients (throughput);
//! * native: the same guest driver under the machine's `python3`, frames over OS pipes —
//!   the reference for what the sandbox costs.
//!
//! Numbers, not assertions: docs/performance.md records the runs and the ratios.
//!
//! `scriptbox bench --hostile` runs the load check instead (see [`hostile`]), and
//! `scriptbox bench --cluster` the cluster bench (see [`cluster`]).

mod cluster;
mod concurrency;
mod hostile;
mod limits_cost;
mod record;
pub mod services;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::value::RawValue;

use crate::config::{Config, SOURCE_ROOT};
use crate::engine::Engine;
use crate::sandbox::Outcome;
use crate::server::Server;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Timed calls per measurement (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 20_000)]
    pub calls: usize,
    /// Concurrent HTTP clients for the throughput run.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Native interpreter for the reference run.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Run the cluster bench instead: three nodes on one PostgreSQL behind Caddy (fetched
    /// like the tests' services), one node direct and through the proxy side by side, task
    /// claim throughput and a node's death (see --cluster-s, --concurrency).
    #[arg(long)]
    pub cluster: bool,
    /// Seconds of calls per row of the cluster bench.
    #[arg(long, default_value_t = 10)]
    pub cluster_s: u64,
    /// Run the load check instead: many clients, some of them hostile (see --clients,
    /// --duration-s, --hostile-percent).
    #[arg(long)]
    pub hostile: bool,
    /// Concurrent clients for the load check.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Seconds of mixed traffic in the load check (the unloaded baseline runs a third as long).
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
    /// Share of the load check's calls that are hostile.
    #[arg(long, default_value_t = 10)]
    pub hostile_percent: u32,
    /// Loaded idle tools at which memory per tool is measured (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 100, 1000])]
    pub memory_tools: Vec<usize>,
    /// Only the first table (warm calls), as before the performance record.
    #[arg(long)]
    pub warm_only: bool,
    /// Only the isolated-against-persistent table under concurrency (1, 4, 8 clients on 1
    /// and 4 tools; see --load-s).
    #[arg(long)]
    pub isolated_load: bool,
    /// Seconds of calls per row of the isolated-against-persistent table.
    #[arg(long, default_value_t = 3)]
    pub load_s: u64,
    /// Also run the CPU cases on engines without fuel metering and without epochs, to show
    /// what the per-call limits cost (compiles the interpreter twice more, once per machine).
    #[arg(long)]
    pub limits_cost: bool,
}

/// Latency samples of one measurement.
struct Measured {
    name: &'static str,
    samples: Vec<Duration>,
    calls_per_s: f64,
}

impl Measured {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(at).copied().unwrap_or_default()
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.calls == 0 || args.concurrency == 0 {
        bail!("--calls and --concurrency must be above 0");
    }
    if args.hostile {
        return hostile::run(&args).await;
    }
    if args.cluster {
        if args.cluster_s == 0 {
            bail!("--cluster-s must be above 0");
        }
        return cluster::run(&args).await;
    }
    let data = std::env::temp_dir().join(format!("scriptbox-bench-{}", std::process::id()));
    let config = Config {
        port: 0,
        scripts_dir: Path::new(SOURCE_ROOT).join("scripts"),
        data_dir: data.clone(),
        // a measurement, not a tenant: no request-rate quota in the way
        quotas: crate::config::Quotas {
            requests_per_second: 1_000_000,
            burst: 1_000_000,
            ..Default::default()
        },
        ..Config::default()
    };
    let engine = crate::server::load_engine(&config).await?;
    if args.isolated_load {
        concurrency::run(&config, engine, args.load_s).await?;
        let _ = std::fs::remove_dir_all(&data);
        return Ok(());
    }
    // First, with nothing else in the process yet: start-up to the first call.
    let mut record_rows = Vec::new();
    if !args.warm_only {
        record::start_to_first_call(&config, &mut record_rows).await?;
    }
    let in_process = in_process(&config, engine.clone(), args.calls).await?;
    let (http_seq, http_par, http_floor) = over_http(&config, engine.clone(), &args).await?;
    let driver = crate::guest::install_driver(&data)?.join(crate::sandbox::mounts::DRIVER_FILE);
    let native = {
        let args = args.clone();
        let scripts = config.scripts_dir.clone();
        tokio::task::spawn_blocking(move || native(&args, &driver, &scripts)).await??
    };
    print_table(&[in_process, http_seq, http_par, http_floor, native]);
    if !args.warm_only {
        record::isolated(&config, engine.clone(), &mut record_rows).await?;
        if record::has_dataframe_tool(&config.scripts_dir) {
            record::numpy_pandas(&config, engine.clone(), &args.python, &mut record_rows).await?;
        }
        record::pooling(&config, engine.clone(), &mut record_rows).await?;
        record::cpu(&config, engine.clone(), &args.python, &mut record_rows).await?;
        if args.limits_cost {
            limits_cost::limits_cost(&config, &args.python, &mut record_rows).await?;
        }
        record::memory(
            &config,
            engine.clone(),
            &args.memory_tools,
            &mut record_rows,
        )
        .await?;
        record::print(&record_rows);
        concurrency::run(&config, engine, args.load_s).await?;
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

fn args_raw(a: usize) -> anyhow::Result<(Box<RawValue>, Box<RawValue>)> {
    Ok((
        RawValue::from_string(format!("[{a}, 1]"))?,
        RawValue::from_string("{}".to_owned())?,
    ))
}

async fn in_process(config: &Config, engine: Engine, calls: usize) -> anyhow::Result<Measured> {
    let sandbox = record::sandbox(config, engine, true).await?;
    let tool = record::tool_mounts(config)?;
    let mut instance = sandbox
        .spawn("my_calc", &config.limits, &tool)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (args, kwargs) = args_raw(2)?;
    // One request built once, as the registry's jobs carry theirs.
    let op = crate::protocol::Op::Call {
        function: "add".to_owned(),
        args,
        kwargs,
    };
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls / 10 + calls {
        let started = Instant::now();
        let outcome = instance.run(&op).await;
        let took = started.elapsed();
        if !matches!(outcome, Outcome::Answered { error: None, .. }) {
            bail!("in-process call failed: {outcome:?}");
        }
        if i >= calls / 10 {
            samples.push(took);
        }
    }
    let total: Duration = samples.iter().sum();
    Ok(Measured {
        name: "in-process (sandbox API)",
        calls_per_s: samples.len() as f64 / total.as_secs_f64(),
        samples,
    })
}

async fn over_http(
    config: &Config,
    engine: Engine,
    args: &BenchArgs,
) -> anyhow::Result<(Measured, Measured, Measured)> {
    let server = Server::with_engine(config, engine).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let mut client = RawClient::connect(addr).await?;
    let load = r#"{"script_name": "my_calc", "alias": "calc"}"#;
    if !client.request("POST", "/python/load", load).await? {
        bail!("loading my_calc failed");
    }
    let body = r#"{"alias": "calc", "function_name": "add", "args": [2, 1]}"#;
    let sequential = raw_sequential(
        "HTTP, 1 client",
        addr,
        "POST",
        "/python/call",
        body,
        args.calls,
    )
    .await?;
    let parallel = http_parallel(addr, body, args).await?;
    let floor = raw_sequential(
        "HTTP floor: GET /health",
        addr,
        "GET",
        "/health",
        "",
        args.calls,
    )
    .await?;
    drop(client);
    let _ = stop.send(());
    task.await.context("server task")??;
    Ok((sequential, parallel, floor))
}

async fn http_parallel(
    addr: std::net::SocketAddr,
    body: &'static str,
    args: &BenchArgs,
) -> anyhow::Result<Measured> {
    let per_client = args.calls / args.concurrency + 1;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.concurrency {
        clients.push(tokio::spawn(async move {
            let mut client = RawClient::connect(addr).await?;
            let mut samples = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                if !client.request("POST", "/python/call", body).await? {
                    bail!("HTTP call failed");
                }
                samples.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for client in clients {
        samples.extend(client.await??);
    }
    let wall = started.elapsed();
    Ok(Measured {
        name: "HTTP, concurrent clients",
        calls_per_s: samples.len() as f64 / wall.as_secs_f64(),
        samples,
    })
}

/// One keep-alive HTTP/1 connection driven by hyper directly: the leanest client, so the
/// table shows the server's cost rather than a client pool's.
pub(crate) struct RawClient {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: String,
    /// Sent as `X-API-Key` on every request.
    key: Option<String>,
    _conn: tokio::task::JoinHandle<()>,
}

impl RawClient {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            send,
            host: addr.to_string(),
            key: None,
            _conn: conn,
        })
    }

    /// As [`RawClient::connect`], each request with `key`.
    pub(crate) async fn with_key(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<Self> {
        let mut client = Self::connect(addr).await?;
        client.key = Some(key.to_owned());
        Ok(client)
    }

    /// Sends one request and reads the whole response; returns whether it was a 2xx.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &'static str,
    ) -> anyhow::Result<bool> {
        let (status, _) = self
            .exchange(method, path, bytes::Bytes::from_static(body.as_bytes()))
            .await?;
        Ok((200..300).contains(&status))
    }

    /// Sends one request; returns the status and the body.
    pub(crate) async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: bytes::Bytes,
    ) -> anyhow::Result<(u16, bytes::Bytes)> {
        self.exchange_as(method, path, "application/json", body)
            .await
    }

    /// As [`RawClient::exchange`], with a body of `content_type`.
    pub(crate) async fn exchange_as(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: bytes::Bytes,
    ) -> anyhow::Result<(u16, bytes::Bytes)> {
        use http_body_util::BodyExt as _;
        self.send.ready().await?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.host.as_str())
            .header("content-type", content_type);
        if let Some(key) = &self.key {
            request = request.header("x-api-key", key.as_str());
        }
        let request = request.body(http_body_util::Full::new(body))?;
        let response = self.send.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Sequential calls over one raw connection.
async fn raw_sequential(
    name: &'static str,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &'static str,
    calls: usize,
) -> anyhow::Result<Measured> {
    let mut client = RawClient::connect(addr).await?;
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls / 10 + calls {
        let started = Instant::now();
        if !client.request(method, path, body).await? {
            bail!("{name}: request failed");
        }
        if i >= calls / 10 {
            samples.push(started.elapsed());
        }
    }
    let total: Duration = samples.iter().sum();
    Ok(Measured {
        name,
        calls_per_s: samples.len() as f64 / total.as_secs_f64(),
        samples,
    })
}

/// The reference: the same driver under native CPython, length-prefixed frames over pipes.
fn native(args: &BenchArgs, driver: &Path, scripts: &Path) -> anyhow::Result<Measured> {
    let mut child = Command::new(&args.python)
        .arg(driver)
        .arg("my_calc")
        .arg(scripts)
        .arg("--pipes")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.python))?;
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("no pipes to the native driver");
    };
    read_frame(&mut stdout)?; // ready
    let mut samples = Vec::with_capacity(args.calls);
    for i in 0..args.calls / 10 + args.calls {
        let frame = format!(
            r#"{{"v":1,"id":{},"op":"call","function":"add","args":[2,1],"kwargs":{{}},"output_cap":1048576}}"#,
            i + 1
        );
        let started = Instant::now();
        stdin.write_all(&(frame.len() as u32).to_le_bytes())?;
        stdin.write_all(frame.as_bytes())?;
        stdin.flush()?;
        let reply = read_frame(&mut stdout)?;
        if i >= args.calls / 10 {
            samples.push(started.elapsed());
        }
        if !reply.windows(9).any(|w| w == br#""ok":true"#) {
            bail!("native call failed: {}", String::from_utf8_lossy(&reply));
        }
    }
    drop(stdin);
    let _ = child.wait();
    let total: Duration = samples.iter().sum();
    Ok(Measured {
        name: "native python3, OS pipes",
        calls_per_s: samples.len() as f64 / total.as_secs_f64(),
        samples,
    })
}

fn read_frame(from: &mut impl Read) -> anyhow::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    from.read_exact(&mut head)?;
    let mut frame = vec![0u8; u32::from_le_bytes(head) as usize];
    from.read_exact(&mut frame)?;
    Ok(frame)
}

fn print_table(rows: &[Measured]) {
    let native_p50 = rows
        .iter()
        .find(|r| r.name.starts_with("native"))
        .map(|r| r.percentile(0.5).as_secs_f64())
        .unwrap_or(f64::NAN);
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>16}",
        "warm call add(a, b)", "p50 us", "p99 us", "calls/s", "p50 vs native"
    );
    for row in rows {
        let p50 = row.percentile(0.5).as_secs_f64();
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>12.0} {:>15.2}x",
            row.name,
            p50 * 1e6,
            row.percentile(0.99).as_secs_f64() * 1e6,
            row.calls_per_s,
            p50 / native_p50,
        );
    }
}
