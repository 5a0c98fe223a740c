//! `mode: "isolated"` at load: every call runs in an instance no earlier call touched (from a
//! pre-warmed pool, or started on demand when the pool is empty), and nothing survives it.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

async fn load(server: &TestServer, script: &str, alias: &str, mode: &str) {
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": script, "alias": alias, "mode": mode}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["mode"], mode, "{body}");
}

async fn increments(server: &TestServer, alias: &str) -> Vec<i64> {
    let mut seen = Vec::new();
    for _ in 0..4 {
        let data = server.call_ok(alias, "increment", json!([])).await;
        seen.push(data["result"].as_i64().expect("count"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_calls_share_nothing_while_persistent_ones_keep_state() {
    let server = TestServer::start().await;
    load(&server, "counter", "kept", "persistent").await;
    load(&server, "counter", "fresh", "isolated").await;
    assert_eq!(increments(&server, "kept").await, [1, 2, 3, 4]);
    assert_eq!(increments(&server, "fresh").await, [1, 1, 1, 1]);

    // No scratch folder either: a file written by one call cannot reach the next.
    let (status, body) = server
        .post(
            "/python/eval",
            json!({"alias": "fresh", "expression": "open('/tmp/left-behind', 'w')"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, list) = server.get("/python/list").await;
    let modes: Vec<(&str, &str)> = list["data"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| {
            (
                t["alias"].as_str().unwrap_or(""),
                t["mode"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(modes.contains(&("fresh", "isolated")) && modes.contains(&("kept", "persistent")));

    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "counter", "alias": "x", "mode": "shared"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pool_every_call_starts_its_own_instance() {
    let server = TestServer::start_with(|config| config.isolated_pool_per_tool = 0).await;
    load(&server, "counter", "fresh", "isolated").await;
    assert_eq!(increments(&server, "fresh").await, [1, 1, 1, 1]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_in_one_isolated_call_leaves_the_next_untouched_and_reload_sees_new_code() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "limits_fixture", "alias": "f", "mode": "isolated",
                   "limits": {"fuel": 50_000_000}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .call("f", "spin", json!([100_000_000]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "fuel_exhausted");
    assert_eq!(server.call_ok("f", "spin", json!([10])).await["result"], 45);

    let script = server.scripts_dir.join("iso_version.py");
    std::fs::write(&script, "def version():\n    return 1\n").expect("script");
    load(&server, "iso_version", "v", "isolated").await;
    assert_eq!(server.call_ok("v", "version", json!([])).await["result"], 1);
    std::fs::write(&script, "def version():\n    return 2\n").expect("script");
    let (status, body) = server.post("/python/reload", json!({"alias": "v"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..4 {
        assert_eq!(server.call_ok("v", "version", json!([])).await["result"], 2);
    }
    server.stop().await;
}

/// What `leave_traces` reports when no earlier call left anything.
fn assert_clean(seen: &serde_json::Value) {
    assert_eq!(seen["count"], 0, "{seen}");
    for trace in ["module_attr", "other_module_attr", "env"] {
        assert!(seen[trace].is_null(), "{trace}: {seen}");
    }
    for trace in ["builtin_patched", "builtin_added", "imported", "file"] {
        assert_eq!(seen[trace], false, "{trace}: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_trace_of_a_call_reaches_the_next_across_many_calls_tools_and_clients() {
    let server = TestServer::start().await;
    let tools = ["leak_a", "leak_b", "leak_c"];
    for alias in tools {
        load(&server, "leaky_fixture", alias, "isolated").await;
    }
    let mut draws = std::collections::HashSet::new();
    let mut calls = 0;
    let client = &server;
    // 8 rounds of 6 concurrent calls spread over the three tools: 48 calls.
    for round in 0..8 {
        let batch = (0..6).map(|i| {
            let alias = tools[i % tools.len()];
            let tag = format!("r{round}c{i}");
            async move {
                client
                    .call(alias, "leave_traces", json!([tag]), json!({}))
                    .await
            }
        });
        for (status, body) in futures_util::future::join_all(batch).await {
            assert_eq!(status, StatusCode::OK, "{body}");
            let seen = &body["data"]["result"];
            assert_clean(seen);
            // an isolated tool has no scratch folder: the write itself fails
            assert_eq!(seen["wrote_file"], false, "{seen}");
            for draw in seen["draws"].as_array().expect("draws") {
                assert!(
                    draws.insert(draw.as_u64().expect("u64")),
                    "a repeated draw: {seen}"
                );
            }
            calls += 1;
        }
    }
    assert_eq!(calls, 48);
    assert_eq!(
        draws.len(),
        48 * 4,
        "every call draws its own random numbers"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_after_leaving_traces_leaves_the_next_call_clean() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "leaky_fixture", "alias": "trap", "mode": "isolated",
                   "limits": {"fuel": 100_000_000, "memory_bytes": 64 << 20}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (how, expected) in [("fuel", "fuel_exhausted"), ("memory", "python_exception")] {
        let (status, body) = server
            .call(
                "trap",
                "trap_after_traces",
                json!(["trapped", how]),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(code(&body), expected, "{how}: {body}");
        let seen = server
            .call_ok("trap", "leave_traces", json!(["after"]))
            .await;
        assert_clean(&seen["result"]);
    }
    server.stop().await;
}
