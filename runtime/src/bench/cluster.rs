//! `scriptbox bench --cluster`: three nodes of this binary on one PostgreSQL behind Caddy
//! (`deploy/Caddyfile`), all started here on 127.0.0.1 (PostgreSQL and Caddy fetched as the
//! tests fetch them) and stopped at the end. One table, side by side:
//!
//! * warm calls (`my_calc.add`) with `--concurrency` clients spread over six tenants: one
//!   node direct, one node through Caddy, three nodes through Caddy. On 2 cores the nodes
//!   share the cores, so the last rows show what the proxy and the store cost, not a speed-up;
//! * task claim throughput: one-step tasks submitted through Caddy, run by all three nodes;
//! * failover: a node running a task is killed (SIGKILL); how long until its task runs on
//!   another node (the default 10 s lease), and until its tenants' calls are answered again.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::services::{Caddy, Postgres};
use super::{BenchArgs, Measured, RawClient};
use crate::config::SOURCE_ROOT;

const ADMIN_KEY: &str = "bench-admin-key-0123456789abcdef";
const TENANTS: usize = 6;
const TASKS: usize = 240;

const WORK: &str = "import time\n\ndef slow(s):\n    time.sleep(s)\n    return s\n";

/// One node: a child process of this binary, and where it listens.
struct Node {
    id: String,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Node {
    fn start(root: &Path, id: &str, url: &str) -> anyhow::Result<Self> {
        let dir = root.join(id);
        std::fs::create_dir_all(dir.join("ops-scripts"))?;
        let config = format!(
            "port = 0\nscripts_dir = {:?}\ndata_dir = {:?}\nimages = false\n\
             [http]\nauth_failures_per_minute = 100000\ntrusted_proxies = [\"127.0.0.1\"]\n\
             [store]\nurl = {url:?}\n[cluster]\nnode_id = {id:?}\n\
             [[tenants]]\nid = \"ops\"\nrole = \"admin\"\napi_key_sha256 = [{:?}]\nscripts_dir = {:?}\n",
            Path::new(SOURCE_ROOT).join("scripts"),
            dir.join("data"),
            crate::tenants::hash_key(ADMIN_KEY),
            dir.join("ops-scripts"),
        );
        let file = dir.join("scriptbox.toml");
        std::fs::write(&file, config)?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--config"])
            .arg(&file)
            .env("SCRIPTBOX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a node")?;
        let started = Instant::now();
        let addr = loop {
            let said = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            if let Some(addr) = said
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                break addr.parse().context("the node's address")?;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let lines: Vec<&str> = said.lines().collect();
                let tail = &lines[lines.len().saturating_sub(5)..];
                bail!("node {id} exited ({status}); its log ends: {tail:?}");
            }
            if started.elapsed() > Duration::from_secs(600) {
                let _ = child.kill();
                bail!("node {id} did not listen; its log: {}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Self {
            id: id.to_owned(),
            addr,
            child: Some(child),
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request's status and JSON body.
async fn ask(
    client: &mut RawClient,
    method: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let payload = if body.is_null() {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from(body.to_string())
    };
    let (status, answer) = client.exchange(method, path, payload).await?;
    Ok((
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    ))
}

/// `ask`, requiring a 2xx.
async fn must(
    client: &mut RawClient,
    method: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let (status, answer) = ask(client, method, path, body).await?;
    ensure!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    Ok(answer)
}

/// Makes the bench's tenants through `admin`: each with `my_calc` stored and loaded as
/// `calc`; their keys.
async fn tenants(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut admin = RawClient::with_key(addr, ADMIN_KEY).await?;
    let source = std::fs::read(Path::new(SOURCE_ROOT).join("scripts/my_calc.py"))?;
    let mut keys = Vec::new();
    for i in 0..TENANTS {
        let quotas = json!({"requests_per_second": 1_000_000, "burst": 1_000_000,
            "max_running_tasks": 64, "max_tasks": 100_000});
        let body = must(
            &mut admin,
            "POST",
            "/admin/tenants",
            json!({"id": format!("bench{i}"), "quotas": quotas}),
        )
        .await?;
        let key = body["data"]["key"]["api_key"]
            .as_str()
            .context("a key")?
            .to_owned();
        let mut tenant = RawClient::with_key(addr, &key).await?;
        for (name, source) in [("my_calc", source.clone()), ("work", WORK.into())] {
            let (status, _) = tenant
                .exchange_as(
                    "PUT",
                    &format!("/scripts/{name}"),
                    "text/x-python",
                    source.into(),
                )
                .await?;
            ensure!(status == 201, "storing {name}: {status}");
        }
        for (script, alias) in [("my_calc", "calc"), ("work", "w")] {
            must(
                &mut tenant,
                "POST",
                "/python/load",
                json!({"script_name": script, "alias": alias}),
            )
            .await?;
        }
        keys.push(key);
    }
    Ok(keys)
}

/// `clients` keep-alive clients to `addr`, client `i` with tenant `i % keys`, for `length`
/// after a warm-up second.
async fn calls(
    name: &'static str,
    addr: SocketAddr,
    keys: &[String],
    clients: usize,
    length: Duration,
) -> anyhow::Result<Measured> {
    let body: &'static str = r#"{"alias": "calc", "function_name": "add", "args": [2, 1]}"#;
    let started = Instant::now();
    let warm = Duration::from_secs(1);
    let mut running = Vec::new();
    for i in 0..clients {
        let key = keys[i % keys.len()].clone();
        running.push(tokio::spawn(async move {
            let mut client = RawClient::with_key(addr, &key).await?;
            let mut samples = Vec::new();
            while started.elapsed() < warm + length {
                let t = Instant::now();
                if !client.request("POST", "/python/call", body).await? {
                    bail!("{name}: a call failed");
                }
                if started.elapsed() > warm {
                    samples.push(t.elapsed());
                }
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for client in running {
        samples.extend(client.await??);
    }
    Ok(Measured {
        name,
        calls_per_s: samples.len() as f64 / length.as_secs_f64(),
        samples,
    })
}

/// The node a tenant's requests reach through `proxy`.
async fn node_of(proxy: SocketAddr, key: &str) -> anyhow::Result<String> {
    let mut client = RawClient::with_key(proxy, key).await?;
    let health = must(&mut client, "GET", "/health", Value::Null).await?;
    Ok(health["data"]["node"].as_str().unwrap_or("?").to_owned())
}

/// Submits `TASKS` one-step tasks through `proxy` (spread over the tenants) and waits for
/// them all; tasks per second from the first accepted to the last ended (the nodes' own
/// timestamps), and how many each node ran.
async fn task_throughput(proxy: SocketAddr, keys: &[String]) -> anyhow::Result<(f64, String)> {
    let mut clients = Vec::new();
    for key in keys {
        clients.push(RawClient::with_key(proxy, key).await?);
    }
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let task = json!({"name": format!("t{i}"), "steps": [{"id": "s", "kind": "call",
            "alias": "calc", "function_name": "add", "args": [i, 1]}]});
        let at = i % keys.len();
        let body = must(&mut clients[at], "POST", "/tasks", task).await?;
        let id = body["data"]["task_id"]
            .as_str()
            .context("task id")?
            .to_owned();
        ids.push((at, id));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut first, mut last) = (f64::MAX, 0f64);
    let mut by_node = std::collections::BTreeMap::<String, usize>::new();
    for (at, id) in &ids {
        let record = loop {
            let body = must(
                &mut clients[*at],
                "GET",
                &format!("/tasks/{id}"),
                Value::Null,
            )
            .await?;
            let record = body["data"].clone();
            match record["status"].as_str() {
                Some("pending" | "running") => {}
                Some("succeeded") => break record,
                other => bail!("task {id} ended {other:?}: {record}"),
            }
            ensure!(Instant::now() < deadline, "task {id} did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        first = first.min(record["created_at"].as_f64().unwrap_or(f64::MAX));
        last = last.max(record["updated_at"].as_f64().unwrap_or(0.0));
        let node = record["history"]
            .as_array()
            .and_then(|h| h.iter().find_map(|c| c["node"].as_str()))
            .unwrap_or("?");
        *by_node.entry(node.to_owned()).or_default() += 1;
    }
    let spread = by_node
        .iter()
        .map(|(node, n)| format!("{node} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((TASKS as f64 / (last - first), spread))
}

/// The node running `step` of the task, once it runs.
fn running_on<'a>(record: &'a Value, step: &str) -> Option<&'a str> {
    record["history"].as_array()?.iter().rev().find_map(|c| {
        (c["step_id"] == step && c["status"] == "running")
            .then(|| c["node"].as_str())
            .flatten()
    })
}

/// What a node's death costs: the time until its task runs on another node, and until its
/// tenant's calls are answered again through the proxy.
async fn failover(
    proxy: SocketAddr,
    keys: &[String],
    nodes: &mut [Node],
) -> anyhow::Result<(Duration, Duration, String)> {
    let key = &keys[0];
    let mut client = RawClient::with_key(proxy, key).await?;
    let task = json!({"name": "long", "steps": [
        {"id": "a", "kind": "call", "alias": "w", "function_name": "slow", "args": [0.2]},
        {"id": "b", "kind": "call", "alias": "w", "function_name": "slow", "args": [60],
         "depends_on": ["a"], "retries": 1, "timeout_ms": 120_000}]});
    let body = must(&mut client, "POST", "/tasks", task).await?;
    let id = body["data"]["task_id"]
        .as_str()
        .context("task id")?
        .to_owned();
    let path = format!("/tasks/{id}");
    let started = Instant::now();
    let runner = loop {
        let record = must(&mut client, "GET", &path, Value::Null).await?["data"].clone();
        if let Some(node) = running_on(&record, "b") {
            break node.to_owned();
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "step b never ran: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The tenant whose calls reach the runner through the proxy (if any does).
    let mut victim_key = None;
    for key in keys {
        if node_of(proxy, key).await? == runner {
            victim_key = Some(key.clone());
            break;
        }
    }
    let node = nodes
        .iter_mut()
        .find(|n| n.id == runner)
        .context("the runner is one of ours")?;
    node.kill();
    let killed = Instant::now();
    let calls_back = match victim_key {
        Some(key) => {
            let body = json!({"alias": "calc", "function_name": "add", "args": [2, 1]});
            loop {
                let answered = match RawClient::with_key(proxy, &key).await {
                    Ok(mut c) => matches!(
                        ask(&mut c, "POST", "/python/call", body.clone()).await,
                        Ok((200, _))
                    ),
                    Err(_) => false,
                };
                if answered {
                    break killed.elapsed();
                }
                ensure!(
                    killed.elapsed() < Duration::from_secs(30),
                    "calls never came back"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        None => Duration::ZERO,
    };
    let mut client = RawClient::with_key(proxy, key).await?;
    let taken_over = loop {
        let record = must(&mut client, "GET", &path, Value::Null).await?["data"].clone();
        if running_on(&record, "b").is_some_and(|n| n != runner) {
            break killed.elapsed();
        }
        ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "never taken over: {record}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = ask(&mut client, "DELETE", &path, Value::Null).await;
    Ok((taken_over, calls_back, runner))
}

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    let url = pg.database("bench")?;
    // Kept when the bench fails (each node's server.log is in it).
    let root = tempfile::tempdir()?.keep();
    println!("cluster bench folder: {}", root.display());
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let (root, url) = (root.clone(), url.clone());
        nodes.push(tokio::task::spawn_blocking(move || Node::start(&root, id, &url)).await??);
    }
    let upstream = |n: &Node| n.addr.to_string();
    let one = tokio::task::spawn_blocking({
        let up = vec![upstream(&nodes[0])];
        move || Caddy::start(&up)
    })
    .await??;
    let all = tokio::task::spawn_blocking({
        let up: Vec<String> = nodes.iter().map(upstream).collect();
        move || Caddy::start(&up)
    })
    .await??;
    let (one_addr, all_addr): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], one.port).into(),
        ([127, 0, 0, 1], all.port).into(),
    );
    wait_healthy(all_addr).await?;
    wait_healthy(one_addr).await?;
    let keys = tenants(nodes[0].addr).await?;
    let length = Duration::from_secs(args.cluster_s);
    let clients = args.concurrency;
    let rows = vec![
        calls("one node, direct", nodes[0].addr, &keys, clients, length).await?,
        calls("one node, through Caddy", one_addr, &keys, clients, length).await?,
        calls("3 nodes, through Caddy", all_addr, &keys, clients, length).await?,
    ];
    let mut placement = std::collections::BTreeMap::<String, usize>::new();
    for key in &keys {
        *placement.entry(node_of(all_addr, key).await?).or_default() += 1;
    }
    let (tasks_per_s, spread) = task_throughput(all_addr, &keys).await?;
    let (taken_over, calls_back, runner) = failover(all_addr, &keys, &mut nodes).await?;

    let direct = rows[0].calls_per_s;
    println!(
        "cluster: 3 nodes on one PostgreSQL, {clients} clients over {TENANTS} tenants, {} s each",
        args.cluster_s
    );
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>18}",
        "warm call add(a, b)", "p50 us", "p99 us", "calls/s", "vs one node direct"
    );
    for row in &rows {
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>12.0} {:>17.2}x",
            row.name,
            row.percentile(0.5).as_secs_f64() * 1e6,
            row.percentile(0.99).as_secs_f64() * 1e6,
            row.calls_per_s,
            row.calls_per_s / direct,
        );
    }
    println!("tenants per node through Caddy: {placement:?}");
    println!(
        "task claim throughput: {TASKS} one-step tasks through Caddy, {tasks_per_s:.0} tasks/s \
         (run by: {spread})"
    );
    println!(
        "node {runner} killed with a task running: the task ran on another node after {:.2} s \
         (task_lease_s = 10, the default); its tenants' calls answered again through Caddy after {} ms",
        taken_over.as_secs_f64(),
        calls_back.as_millis(),
    );
    drop((one, all));
    drop(nodes);
    drop(pg);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

async fn wait_healthy(proxy: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(mut client) = RawClient::connect(proxy).await
            && let Ok((200, _)) = ask(&mut client, "GET", "/health", Value::Null).await
        {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the proxy found no healthy node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
