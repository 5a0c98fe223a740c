//! Three real nodes on one real PostgreSQL behind a real Caddy (`deploy/Caddyfile`), all on
//! 127.0.0.1 and started here. Through the proxy two tenants (made through the admin API)
//! upload scripts, load tools, install a package and submit multi-step tasks; a bounded load
//! runs; the node serving one tenant is killed with SIGKILL in the middle. Then: only the
//! calls in flight on it failed, and calls succeed again within 2 s; every task ends with its
//! history and no step that succeeded ran twice; both tenants' tools (and the package) answer
//! on every surviving node; a quota filled through one node is refused through another; a
//! key revoked on one node is refused by all within 1 s; a node that loses the database
//! answers 503 on /health.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Running, serve_in};
use scriptbox::bench::services::{Caddy, Postgres};

const ADMIN_KEY: &str = "cluster-admin-key-0123456789";
/// Short leases, so a dead node's tasks move within the test (the default is 10 s).
const LEASE_S: u64 = 3;

const WORK: &str = "\
import time

def add(a, b):
    return a + b

def slow(s):
    time.sleep(s)
    return s
";

const USES_PACKAGE: &str = "\
import sbx_cluster

def value():
    return sbx_cluster.VALUE
";

/// A pure wheel `sbx_cluster` 1.0 in `dir` (the offline index the nodes install from).
fn package(dir: &Path) {
    std::fs::create_dir_all(dir).expect("wheels");
    let file = std::fs::File::create(dir.join("sbx_cluster-1.0-py3-none-any.whl")).expect("wheel");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default();
    let info = "sbx_cluster-1.0.dist-info";
    let entries = [
        (
            "sbx_cluster/__init__.py".to_owned(),
            "VALUE = 'from the package'\n".to_owned(),
        ),
        (
            format!("{info}/METADATA"),
            "Metadata-Version: 2.1\nName: sbx_cluster\nVersion: 1.0\n".to_owned(),
        ),
        (
            format!("{info}/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_owned(),
        ),
        (format!("{info}/RECORD"), String::new()),
    ];
    for (name, text) in entries {
        zip.start_file(name, options).expect("entry");
        zip.write_all(text.as_bytes()).expect("write");
    }
    zip.finish().expect("zip");
}

struct Node {
    id: String,
    base: String,
    running: Option<Running>,
}

/// Starts node `id` on the store at `url`.
fn node(root: &Path, id: &str, url: &str, wheels: &Path) -> Node {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).expect("node dir");
    let config = format!(
        // Images off: three nodes building them at once on 2 cores would starve the timing
        // checks (they are a per-node start-up optimisation, not part of the cluster). The
        // tests poll nodes with keys they do not know yet, from one address: no lockout.
        "images = false\n[http]\nauth_failures_per_minute = 100000\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [store]\nurl = {url:?}\n\
         [cluster]\nnode_id = {id:?}\ntask_lease_s = {LEASE_S}\npoll_ms = 100\n\
         [packages]\nfind_links = {wheels:?}\n\
         [[tenants]]\nid = \"ops\"\nrole = \"admin\"\napi_key_sha256 = [{:?}]\nscripts_dir = {:?}\n",
        scriptbox::tenants::hash_key(ADMIN_KEY),
        dir.join("scripts"),
    );
    let (running, base) = serve_in(&dir, &config, &[]);
    Node {
        id: id.to_owned(),
        base,
        running: Some(running),
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        super::send(request).await
    }

    async fn post(&self, base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{base}{path}"))
            .header("x-api-key", key);
        self.send(request.json(&body)).await
    }

    async fn get(&self, base: &str, key: &str, path: &str) -> (u16, Value) {
        let request = self
            .http
            .get(format!("{base}{path}"))
            .header("x-api-key", key);
        self.send(request).await
    }

    async fn delete(&self, base: &str, key: &str, path: &str) -> (u16, Value) {
        let request = self
            .http
            .delete(format!("{base}{path}"))
            .header("x-api-key", key);
        self.send(request).await
    }

    async fn put_module(&self, base: &str, key: &str, name: &str, source: &str) -> (u16, Value) {
        let request = self
            .http
            .put(format!("{base}/scripts/{name}"))
            .header("x-api-key", key)
            .header("content-type", "text/x-python")
            .body(source.to_owned());
        self.send(request).await
    }

    async fn call(
        &self,
        base: &str,
        key: &str,
        alias: &str,
        function: &str,
        args: Value,
    ) -> (u16, Value) {
        self.post(
            base,
            key,
            "/python/call",
            json!({"alias": alias, "function_name": function, "args": args}),
        )
        .await
    }
}

/// Waits until `check` holds, at most `limit`; how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes tenant `id` through the proxy; its key, once every node accepts it.
async fn make_tenant(client: &Client, proxy: &str, nodes: &[Node], id: &str) -> String {
    let (status, body) = client
        .post(
            proxy,
            ADMIN_KEY,
            "/admin/tenants",
            json!({"id": id, "quotas": {"max_tools": 3}, "policy": {"install_packages": true}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let key = body["data"]["key"]["api_key"]
        .as_str()
        .expect("key")
        .to_owned();
    for node in nodes {
        within(
            Duration::from_secs(1),
            "a new tenant's key on every node",
            || async { client.get(&node.base, &key, "/python/list").await.0 == 200 },
        )
        .await;
    }
    key
}

/// One tenant's setup through the proxy: scripts, tools, the package; the node serving it.
async fn set_up(client: &Client, proxy: &str, key: &str) -> String {
    for (name, source) in [("work", WORK), ("uses", USES_PACKAGE)] {
        let (status, body) = client.put_module(proxy, key, name, source).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = client
        .post(
            proxy,
            key,
            "/python/installPackage",
            json!({"package_name": "sbx_cluster"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (script, alias) in [("work", "w"), ("uses", "u")] {
        let (status, body) = client
            .post(
                proxy,
                key,
                "/python/load",
                json!({"script_name": script, "alias": alias}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = client.call(proxy, key, "u", "value", json!([])).await;
    assert_eq!(
        (status, &body["data"]["result"]),
        (200, &json!("from the package")),
        "{body}"
    );
    let (_, health) = client.get(proxy, key, "/health").await;
    health["data"]["node"].as_str().expect("node").to_owned()
}

/// A task of four chained steps that take a while each (retries allowed: a step running on
/// a node that dies spends an attempt).
fn task(n: usize) -> Value {
    let steps: Vec<Value> = (0..4)
        .map(|i| {
            let mut step = json!({"id": format!("s{i}"), "kind": "call", "alias": "w",
                "function_name": "slow", "args": [0.7], "retries": 2, "timeout_ms": 10_000});
            if i > 0 {
                step["depends_on"] = json!([format!("s{}", i - 1)]);
            }
            step
        })
        .collect();
    json!({"name": format!("chain-{n}"), "steps": steps})
}

/// One load result: when it was sent and answered, relative to the start, and its status.
struct Sample {
    sent: Duration,
    answered: Duration,
    ok: bool,
    /// The status and error code of a failure (0: no answer).
    failure: Option<(u16, String)>,
}

async fn load(
    client: Client,
    proxy: String,
    keys: Vec<String>,
    started: Instant,
    length: Duration,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut i = 0u64;
    while started.elapsed() < length {
        let key = &keys[(i % keys.len() as u64) as usize];
        let sent = started.elapsed();
        let (status, body) = client.call(&proxy, key, "w", "add", json!([i, 1])).await;
        let ok = status == 200 && body["data"]["result"] == json!(i + 1);
        let failure = (!ok).then(|| {
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            (status, code)
        });
        samples.push(Sample {
            failure,
            sent,
            answered: started.elapsed(),
            ok,
        });
        i += 1;
    }
    samples
}

/// Waits (at most a minute) until the task has ended; its record.
async fn ended(client: &Client, proxy: &str, key: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = client.get(proxy, key, &format!("/tasks/{id}")).await;
        let record = &body["data"];
        if status == 200
            && !["pending", "running"].contains(&record["status"].as_str().unwrap_or(""))
        {
            return record.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "task {id} did not end: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kill(node: &mut Node) {
    let mut running = node.running.take().expect("running");
    running.0.kill().expect("SIGKILL");
    running.0.wait().expect("wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_behind_caddy_lose_nothing_when_one_is_killed() {
    let _alone = super::HEAVY.write().await;
    let pg = Postgres::start().expect("postgres");
    let url = pg.database("cluster").expect("database");
    // Kept after a failure: each node's server.log is in <root>/<node id>/.
    let root = tempfile::tempdir().expect("tempdir").keep();
    eprintln!("cluster folder: {}", root.display());
    let wheels = root.join("wheels");
    package(&wheels);
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(&root, id, &url, &wheels))
        .collect();
    let upstreams: Vec<String> = nodes
        .iter()
        .map(|n| n.base.trim_start_matches("http://").to_owned())
        .collect();
    let caddy = Caddy::start(&upstreams).expect("caddy");
    let proxy = format!("http://127.0.0.1:{}", caddy.port);
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
    };
    within(
        Duration::from_secs(10),
        "the proxy's first healthy upstream",
        || async { client.get(&proxy, ADMIN_KEY, "/health").await.0 == 200 },
    )
    .await;

    let alpha = make_tenant(&client, &proxy, &nodes, "alpha").await;
    let beta = make_tenant(&client, &proxy, &nodes, "beta").await;
    let alpha_node = set_up(&client, &proxy, &alpha).await;
    let beta_node = set_up(&client, &proxy, &beta).await;
    eprintln!("alpha is served by {alpha_node}, beta by {beta_node}");

    // A quota filled through one node is refused through another: alpha has 2 of 3 tools.
    let other = nodes
        .iter()
        .find(|n| n.id != alpha_node)
        .expect("another node");
    let third = nodes
        .iter()
        .rfind(|n| n.id != alpha_node)
        .expect("a third node");
    let (status, body) = client
        .post(
            &other.base,
            &alpha,
            "/python/load",
            json!({"script_name": "work", "alias": "extra"}),
        )
        .await;
    assert_eq!(status, 200, "the third tool fits: {body}");
    let (status, body) = client
        .post(
            &third.base,
            &alpha,
            "/python/load",
            json!({"script_name": "work", "alias": "more"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_tools")),
        "{body}"
    );
    let (status, body) = client
        .post(
            &third.base,
            &alpha,
            "/python/unload",
            json!({"alias": "extra"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Tasks and a job, through the proxy, on the tenants' nodes.
    let mut tasks = Vec::new();
    for (key, n) in [
        (&alpha, 0),
        (&alpha, 1),
        (&alpha, 2),
        (&beta, 3),
        (&beta, 4),
    ] {
        let (status, body) = client.post(&proxy, key, "/tasks", task(n)).await;
        assert_eq!(status, 202, "{body}");
        tasks.push((
            key.clone(),
            body["data"]["task_id"].as_str().expect("id").to_owned(),
        ));
    }
    let (status, job) = client
        .post(
            &proxy,
            &alpha,
            "/python/callAsync",
            json!({"alias": "w", "function_name": "slow", "args": [30]}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["data"]["job_id"].as_str().expect("job").to_owned();

    // 16 clients for 8 s; alpha's node is killed after 3 s.
    let started = Instant::now();
    let length = Duration::from_secs(8);
    let keys = vec![alpha.clone(), beta.clone()];
    let clients: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(load(
                client.clone(),
                proxy.clone(),
                keys.clone(),
                started,
                length,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = nodes
        .iter_mut()
        .find(|n| n.id == alpha_node)
        .expect("alpha's node");
    let killed_at = started.elapsed();
    kill(victim);
    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await.expect("client"));
    }
    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok).collect();
    let mut kinds: HashMap<&(u16, String), usize> = HashMap::new();
    for s in &failed {
        *kinds
            .entry(s.failure.as_ref().expect("a failure"))
            .or_default() += 1;
    }
    eprintln!("failures by status and code: {kinds:?}");
    let in_flight = samples
        .iter()
        .filter(|s| s.sent <= killed_at && s.answered >= killed_at)
        .count();
    let recovered = samples
        .iter()
        .filter(|s| s.sent > killed_at && s.ok)
        .map(|s| s.answered - killed_at)
        .min()
        .expect("a call succeeded after the kill");
    let last_failure = failed.iter().map(|s| s.answered).max();
    eprintln!(
        "load: {} calls, {} failed (in flight at the kill: {in_flight}), first success after the kill {:?}, last failure {:?} after the start, killed at {killed_at:?}",
        samples.len(),
        failed.len(),
        recovered,
        last_failure,
    );
    assert!(samples.len() > 200, "the load ran: {}", samples.len());
    assert!(
        failed.len() <= in_flight,
        "{} calls failed, {in_flight} were in flight at the kill",
        failed.len()
    );
    // Failures only around the kill: nothing before it, nothing 2 s after it.
    for s in &failed {
        assert!(
            s.answered >= killed_at,
            "a call failed before the kill: {:?}",
            s.sent
        );
        assert!(
            s.sent <= killed_at + Duration::from_secs(2),
            "a call sent {:?} after the start failed (killed at {killed_at:?})",
            s.sent
        );
    }
    assert!(
        recovered <= Duration::from_secs(2),
        "calls succeeded again only after {recovered:?}"
    );
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent > killed_at + Duration::from_secs(2))
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|s| s.ok),
        "calls after the recovery window fail"
    );

    let alive: Vec<&Node> = nodes.iter().filter(|n| n.running.is_some()).collect();
    // Both tenants' tools, and alpha's package, answer on every surviving node.
    for node in &alive {
        for key in [&alpha, &beta] {
            let (status, body) = client
                .call(&node.base, key, "w", "add", json!([2, 3]))
                .await;
            assert_eq!(
                (status, &body["data"]["result"]),
                (200, &json!(5)),
                "{}: {body}",
                node.id
            );
            let (status, body) = client.call(&node.base, key, "u", "value", json!([])).await;
            assert_eq!(
                (status, &body["data"]["result"]),
                (200, &json!("from the package")),
                "{}: {body}",
                node.id
            );
        }
    }
    // The killed node's job reads interrupted, through any node.
    // (within a lease and a heartbeat of the kill)
    let job_path = format!("/python/jobs/{job_id}");
    within(
        Duration::from_secs(LEASE_S + 2),
        "the dead node's job to read interrupted",
        || async {
            client.get(&proxy, &alpha, &job_path).await.1["data"]["status"] == "interrupted"
        },
    )
    .await;
    let (status, body) = client.get(&proxy, &alpha, &job_path).await;
    assert_eq!(
        (status, body["data"]["status"].as_str()),
        (200, Some("interrupted")),
        "{body}"
    );

    // Every task ends, succeeded, with its history; no step that succeeded ran again.
    let mut taken_over = 0;
    for (key, id) in &tasks {
        let record = ended(&client, &proxy, key, id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
        let history = record["history"].as_array().expect("history");
        let mut succeeded: HashMap<&str, usize> = HashMap::new();
        for change in history {
            if let (Some(step), Some("succeeded")) =
                (change["step_id"].as_str(), change["status"].as_str())
            {
                *succeeded.entry(step).or_default() += 1;
            }
            if let Some(step) = change["step_id"].as_str() {
                assert!(
                    !(change["status"] == "running"
                        && succeeded.get(step).copied().unwrap_or(0) > 0),
                    "step {step} ran again after it succeeded: {record}"
                );
            }
        }
        assert_eq!(succeeded.len(), 4, "{record}");
        assert!(
            succeeded.values().all(|&n| n == 1),
            "a step succeeded twice: {record}"
        );
        let nodes_seen: std::collections::BTreeSet<&str> =
            history.iter().filter_map(|c| c["node"].as_str()).collect();
        if nodes_seen.contains(alpha_node.as_str()) && nodes_seen.len() > 1 {
            taken_over += 1;
        }
    }
    eprintln!("{taken_over} tasks were taken over from the killed node");
    assert!(taken_over > 0, "no task moved from the killed node");

    // A key revoked through one node is refused by every node within 1 s.
    let (status, body) = client
        .post(&proxy, ADMIN_KEY, "/admin/tenants/beta/keys", json!({}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (spare, spare_id) = (
        body["data"]["api_key"].as_str().expect("key").to_owned(),
        body["data"]["key_id"].as_str().expect("id").to_owned(),
    );
    for node in &alive {
        within(
            Duration::from_secs(1),
            "a new key on every node",
            || async { client.get(&node.base, &spare, "/python/list").await.0 == 200 },
        )
        .await;
    }
    let (status, body) = client
        .delete(
            &alive[0].base,
            ADMIN_KEY,
            &format!("/admin/tenants/beta/keys/{spare_id}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    for node in &alive {
        within(
            Duration::from_secs(1).saturating_sub(revoked.elapsed()),
            "a revoked key refused by every node",
            || async { client.get(&node.base, &spare, "/python/list").await.0 == 401 },
        )
        .await;
    }
    eprintln!(
        "the revoked key was refused by every node after {:?}",
        revoked.elapsed()
    );

    // A node that loses the database says so on /health (503), so the proxy drains it.
    pg.stop();
    for node in &alive {
        within(
            Duration::from_secs(5),
            "503 on /health without the store",
            || async {
                let (status, body) = client.get(&node.base, "", "/health").await;
                status == 503 && body["data"]["store"] == "unreachable"
            },
        )
        .await;
    }
    drop(caddy);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&root);
}
