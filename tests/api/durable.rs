//! The durable control plane across a restart of the real server on the same data folder:
//! loaded tools (limits, mode, version), settings, jobs and tasks come back; in-memory state
//! does not, and the first answer says so. (The `kill -9` versions are in tests/cli.)

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code, listed_tool as tool};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_back_tools_settings_and_jobs() {
    let server = TestServer::start().await;
    server
        .load_limited(
            "counter",
            "count",
            json!({"fuel": 500_000_000, "deadline_ms": 4000}),
        )
        .await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "counter", "alias": "iso", "mode": "isolated",
                   "limits": {"memory_bytes": 134_217_728}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.load("limits_fixture", "lim").await;
    assert_eq!(
        server.call_ok("count", "increment", json!([5])).await["result"],
        5
    );
    let (status, body) = server
        .post(
            "/python/setErrorHandlingStrategy",
            json!({"strategy": "return_default", "alias": "lim"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post(
            "/python/enableDebug",
            json!({"enable": true, "alias": "count"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post(
            "/python/configurePerformance",
            json!({"enable_caching": true, "cache_ttl_s": 77}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post("/python/addSysPath", json!({"path": "/scripts/lib"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, job) = server
        .post(
            "/python/callAsync",
            json!({"alias": "lim", "function_name": "echo", "args": [7]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["data"]["job_id"].as_str().expect("job id").to_owned();
    for _ in 0..100 {
        let (_, seen) = server.get(&format!("/python/jobs/{job_id}")).await;
        if seen["data"]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let server = server.restart().await;
    let (status, list) = server.get("/python/list").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let count = tool(&list, "count");
    assert_eq!(count["limits"]["fuel"], 500_000_000, "{count}");
    assert_eq!(count["limits"]["deadline_ms"], 4000, "{count}");
    assert_eq!(count["mode"], "persistent");
    assert!(count["restored_at"].as_f64().is_some(), "{count}");
    let iso = tool(&list, "iso");
    assert_eq!(iso["mode"], "isolated");
    assert_eq!(iso["limits"]["memory_bytes"], 134_217_728);

    // The persistent tool's state is gone, and its first answer says so.
    let first = server.call_ok("count", "increment", json!([1])).await;
    assert_eq!(first["result"], 1, "{first}");
    assert_eq!(first["state_reset"], true, "{first}");
    // Its tracing came back with it.
    assert!(first["debug"]["lines"].is_array(), "{first}");
    // (Other arguments: the result cache is on, and would answer a repeated call.)
    let second = server.call_ok("count", "increment", json!([2])).await;
    assert_eq!(second["result"], 3);
    assert_eq!(second["state_reset"], false);
    // The isolated one is still isolated: nothing survives a call.
    server.call_ok("iso", "increment", json!([3])).await;
    assert_eq!(server.call_ok("iso", "get", json!([])).await["result"], 0);
    // The strategy: a failing call answers null with a warning.
    let (status, failed) = server.call("lim", "fail", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert!(failed["data"]["warning"].is_object(), "{failed}");
    // The cache and the sys path.
    let (_, perf) = server.post("/python/configurePerformance", json!({})).await;
    assert_eq!(perf["data"]["cache"]["enabled"], true, "{perf}");
    assert_eq!(perf["data"]["cache"]["ttl_s"], 77, "{perf}");
    let (status, paths) = server
        .post("/python/addSysPath", json!({"path": "/scripts/lib"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{paths}");
    assert_eq!(paths["data"]["sys_paths"], json!(["/scripts/lib"]));
    // The finished job kept its result.
    let (status, seen) = server.get(&format!("/python/jobs/{job_id}")).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["data"]["status"], "succeeded", "{seen}");
    assert_eq!(
        seen["data"]["result"]["result"]["args"],
        json!([7]),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloads_and_reloads_are_recorded() {
    let server = TestServer::start().await;
    let v1 = server.put_module("mine", "V = 1\n").await;
    server.load("mine", "a").await;
    server.load("mine", "b").await;
    let (status, _) = server.post("/python/unload", json!({"alias": "b"})).await;
    assert_eq!(status, StatusCode::OK);
    let v2 = server.put_module("mine", "V = 2\n").await;
    let (status, body) = server.post("/python/reload", json!({"alias": "a"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let server = server.restart().await;
    let (_, list) = server.get("/python/list").await;
    assert_eq!(list["data"]["scripts"], json!(["a"]), "{list}");
    assert_eq!(tool(&list, "a")["script_version"], v2.as_str());
    let (status, v) = server
        .post(
            "/python/getVariable",
            json!({"alias": "a", "variable_name": "V"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"], 2);
    // A pinned load survives as pinned.
    let (status, _) = server
        .post(
            "/python/load",
            json!({"script_name": "mine", "alias": "old", "version": v1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let server = server.restart().await;
    let (status, v) = server
        .post(
            "/python/getVariable",
            json!({"alias": "old", "variable_name": "V"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"], 1);
    // An alias taken by a restored tool is taken.
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "mine", "alias": "old"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "alias_exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_tool_whose_script_is_gone_is_skipped() {
    let server = TestServer::start().await;
    std::fs::write(server.scripts_dir.join("ephemeral.py"), "X = 1\n").expect("write");
    server.load("ephemeral", "e").await;
    server.load("counter", "c").await;
    std::fs::remove_file(server.scripts_dir.join("ephemeral.py")).expect("remove");
    let server = server.restart().await;
    let (status, list) = server.get("/python/list").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"]["scripts"], json!(["c"]), "{list}");
    assert_eq!(
        server.call_ok("c", "increment", json!([1])).await["result"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_set_aside_and_the_server_serves() {
    let server = TestServer::start_in(|config, _| {
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        std::fs::write(
            config.data_dir.join("scriptbox.db"),
            b"this is not an SQLite database, it was truncated and overwritten",
        )
        .expect("garbage");
    })
    .await;
    server.load("counter", "c").await;
    assert_eq!(
        server.call_ok("c", "increment", json!([1])).await["result"],
        1
    );
    let kept: Vec<String> = std::fs::read_dir(&server.data_dir)
        .expect("data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("scriptbox.db.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept: {kept:?}");
}
