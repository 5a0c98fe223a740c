//! The control plane survives `kill -9`: the real binary is killed with SIGKILL and started
//! again on the same data folder. Tools come back with their limits and modes, callable at
//! once, their lost state flagged; a job that was running reads `interrupted`. And killed at
//! random points of uploads, loads and tenant changes, the store is consistent every time.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Running, serve_in};

struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    fn new(base: &str, key: Option<&str>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            key: key.map(str::to_owned),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.header("x-api-key", key),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        super::send(request).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn put_module(&self, name: &str, source: &str) -> (u16, Value) {
        self.send(
            self.request(reqwest::Method::PUT, &format!("/scripts/{name}"))
                .header("content-type", "text/x-python")
                .body(source.to_owned()),
        )
        .await
    }
}

fn kill(mut running: Running) {
    running.0.kill().expect("SIGKILL");
    running.0.wait().expect("wait");
}

fn tool<'a>(list: &'a Value, alias: &str) -> &'a Value {
    list["data"]["tools"]
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["alias"] == alias))
        .unwrap_or_else(|| panic!("{alias} not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_brings_back_its_tools_and_flags_what_it_lost() {
    let _shared = super::HEAVY.read().await;
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let (running, base) = serve_in(&dir, "", &[]);
    let client = Client::new(&base, None);
    let (status, body) = client
        .put_module("store", "value = None\n\ndef get():\n    return value\n\ndef slow(s):\n    import time\n    time.sleep(s)\n    return s\n")
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = client
        .post(
            "/python/load",
            json!({"script_name": "store", "alias": "p",
                   "limits": {"fuel": 900_000_000, "deadline_ms": 8_000}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client
        .post(
            "/python/load",
            json!({"script_name": "counter", "alias": "iso", "mode": "isolated",
                   "limits": {"deadline_ms": 3000}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client
        .post(
            "/python/setVariable",
            json!({"alias": "p", "variable_name": "value", "value": "kept?"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, job) = client
        .post(
            "/python/callAsync",
            json!({"alias": "p", "function_name": "slow", "args": [20]}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["data"]["job_id"].as_str().expect("job").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;

    kill(running);
    let (_running, base) = serve_in(&dir, "", &[]);
    let client = Client::new(&base, None);
    let (_, list) = client.get("/python/list").await;
    let p = tool(&list, "p");
    assert_eq!(p["limits"]["fuel"], 900_000_000, "{p}");
    assert_eq!(p["limits"]["deadline_ms"], 8_000, "{p}");
    assert_eq!(p["script_source"], "tenant");
    assert!(p["restored_at"].as_f64().is_some(), "{p}");
    let iso = tool(&list, "iso");
    assert_eq!(iso["mode"], "isolated", "{iso}");
    assert_eq!(iso["limits"]["deadline_ms"], 3000, "{iso}");
    // Callable without a new load; the lost state is flagged.
    let (status, first) = client
        .post(
            "/python/call",
            json!({"alias": "p", "function_name": "get"}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"]["result"], Value::Null, "{first}");
    assert_eq!(first["data"]["state_reset"], true, "{first}");
    // The isolated tool is still isolated.
    for _ in 0..2 {
        let (status, answer) = client
            .post(
                "/python/call",
                json!({"alias": "iso", "function_name": "increment"}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["data"]["result"], 1, "{answer}");
    }
    // The job that was running reads interrupted, not 404.
    let (status, seen) = client.get(&format!("/python/jobs/{job_id}")).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["data"]["status"], "interrupted", "{seen}");
}

/// Every script the store lists is whole: each version's content hashes to its name, and
/// the latest loads.
async fn assert_consistent(client: &Client, round: usize) {
    let (status, list) = client.get("/scripts").await;
    assert_eq!(status, 200, "round {round}: {list}");
    for script in list["data"]["scripts"].as_array().expect("scripts") {
        if script["source"] != "tenant" {
            continue;
        }
        let name = script["name"].as_str().expect("name");
        let (_, detail) = client.get(&format!("/scripts/{name}")).await;
        for version in detail["data"]["versions"].as_array().expect("versions") {
            let version = version["version"].as_str().expect("version");
            let response = client
                .request(
                    reqwest::Method::GET,
                    &format!("/scripts/{name}/source?version={version}"),
                )
                .send()
                .await
                .expect("source");
            assert_eq!(response.status(), 200, "round {round}: {name}@{version}");
            let bytes = response.bytes().await.expect("bytes");
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                version,
                "round {round}: {name}'s content is not its version"
            );
        }
    }
    // Every recorded tool answers.
    let (_, tools) = client.get("/python/list").await;
    for tool in tools["data"]["tools"].as_array().expect("tools") {
        let alias = tool["alias"].as_str().expect("alias");
        let (status, body) = client
            .post(
                "/python/getVariable",
                json!({"alias": alias, "variable_name": "N"}),
            )
            .await;
        assert_eq!(status, 200, "round {round}: {alias}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_of_uploads_loads_and_tenant_changes_the_store_stays_whole() {
    let _shared = super::HEAVY.read().await;
    let dir = tempfile::tempdir().expect("tempdir").keep();
    // With tenants declared, so tenant changes go through the admin API.
    let root_hash = scriptbox::tenants::hash_key("root-key");
    let config = format!(
        "[[tenants]]\nid = \"root\"\nrole = \"admin\"\napi_key_sha256 = [\"{root_hash}\"]\n\
         scripts_dir = {:?}\n",
        dir.join("scripts")
    );
    // A cheap, repeatable spread of kill points (no randomness the test cannot replay).
    let delays_ms = [150u64, 420, 260, 610, 330, 790, 95, 500];
    for (round, delay) in delays_ms.iter().enumerate() {
        let (running, base) = serve_in(&dir, &config, &[]);
        let client = Client::new(&base, Some("root-key"));
        assert_consistent(&client, round).await;
        let work = tokio::spawn(async move {
            let client = Client::new(&base, Some("root-key"));
            for i in 0.. {
                let name = format!("s{}", i % 3);
                let source = format!("N = {i}\n# {}\n", "x".repeat(1000 * (i % 7)));
                let _ = client.put_module(&name, &source).await;
                let _ = client
                    .post(
                        "/python/load",
                        json!({"script_name": name, "alias": format!("a{round}_{i}")}),
                    )
                    .await;
                let _ = client
                    .post(
                        "/python/unload",
                        json!({"alias": format!("a{round}_{}", i.max(1) - 1)}),
                    )
                    .await;
                let _ = client
                    .post("/admin/tenants", json!({"id": format!("t{round}-{i}")}))
                    .await;
            }
        });
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        kill(running);
        work.abort();
    }
    let (_running, base) = serve_in(&dir, &config, &[]);
    let client = Client::new(&base, Some("root-key"));
    assert_consistent(&client, delays_ms.len()).await;
    let (status, tenants) = client.get("/admin/tenants").await;
    assert_eq!(status, 200, "{tenants}");
    // The rounds did work before their kills (else this test proves nothing).
    let (_, scripts) = client.get("/scripts").await;
    let stored = scripts["data"]["scripts"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["source"] == "tenant").count());
    assert!(stored > 0, "no upload landed in any round: {scripts}");
    assert!(
        tenants["data"].as_array().map_or(0, Vec::len) > 1,
        "no tenant was made in any round: {tenants}"
    );
}
