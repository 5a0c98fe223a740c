//! Each limit as an obeyed/violated pair, and the respawn that follows a violation.
//! Time bounds are generous; the assertions check the reason, not the clock.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

/// A server whose fuel maximum is high enough that deadlines, not fuel, stop busy loops.
async fn roomy_server() -> TestServer {
    TestServer::start_with(|c| c.limits.fuel = 1_000_000_000_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_obeyed_and_violated_then_respawn() {
    let server = TestServer::start().await;
    server
        .load_limited("limits_fixture", "f", json!({"fuel": 50_000_000}))
        .await;
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 1);
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 2);
    let data = server.call_ok("f", "spin", json!([1000])).await;
    assert_eq!(data["result"], 499_500);
    let used = data["fuel_used"].as_u64().expect("fuel");
    assert!(used > 0 && used < 50_000_000, "{used}");

    let (status, body) = server
        .call("f", "spin", json!([100_000_000]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "fuel_exhausted");
    assert_eq!(body["error"]["details"]["state_reset"], true);

    // the instance was replaced: it works, and its module state started over
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 1);
    let (_, list) = server.get("/python/list").await;
    assert_eq!(list["data"]["tools"][0]["resets"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_is_per_call_not_cumulative() {
    let server = TestServer::start().await;
    server
        .load_limited("limits_fixture", "f", json!({"fuel": 50_000_000}))
        .await;
    // each call uses a good part of the budget; together they would exceed it many times
    for _ in 0..20 {
        server.call_ok("f", "spin", json!([20_000])).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_obeyed_and_violated_by_a_busy_loop() {
    let server = roomy_server().await;
    server
        .load_limited("limits_fixture", "f", json!({"deadline_ms": 500}))
        .await;
    server.call_ok("f", "spin", json!([1000])).await;
    let started = Instant::now();
    let (status, body) = server.call("f", "spin_forever", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "deadline_exceeded");
    assert_eq!(body["error"]["details"]["state_reset"], true);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_obeyed_and_violated_by_sleep() {
    let server = TestServer::start().await;
    server
        .load_limited("limits_fixture", "f", json!({"deadline_ms": 1000}))
        .await;
    assert_eq!(
        server.call_ok("f", "sleep", json!([0.05])).await["result"],
        0.05
    );
    let started = Instant::now();
    let (status, body) = server.call("f", "sleep", json!([60]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "deadline_exceeded");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_obeyed_and_violated_then_recycled() {
    let server = TestServer::start().await;
    server
        .load_limited("limits_fixture", "f", json!({"memory_bytes": 256u64 << 20}))
        .await;
    server.call_ok("f", "bump", json!([])).await;
    let data = server.call_ok("f", "allocate", json!([16])).await;
    assert_eq!(data["result"], 16 << 20);
    assert_eq!(data["state_reset"], false);
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 2);
    // A refused growth is MemoryError in Python; the tool may even catch it. Afterwards the
    // instance is replaced, so the memory it grew to goes back to the host.
    let data = server.call_ok("f", "allocate_caught", json!([512])).await;
    assert_eq!(data["result"], "MemoryError");
    assert_eq!(data["state_reset"], true);
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 1);
    let (status, body) = server.call("f", "allocate", json!([512]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["type"], "MemoryError");
    assert_eq!(body["error"]["details"]["state_reset"], true);
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_obeyed_and_violated() {
    let server = TestServer::start().await;
    server
        .load_limited("limits_fixture", "f", json!({"output_bytes": 4096}))
        .await;
    let data = server.call_ok("f", "shout", json!([4000])).await;
    assert_eq!(data["stdout"].as_str().expect("stdout").len(), 4000);
    let (status, body) = server.call("f", "shout", json!([5000]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "output_limit");
    assert!(
        body["error"]["details"]["stdout"]
            .as_str()
            .expect("stdout")
            .len()
            <= 4096
    );
    // a tool that catches the limit's exception is still reported
    let (status, body) = server
        .call("f", "shout_and_swallow", json!([50_000]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "output_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_in_one_tool_leaves_others_alone() {
    let server = TestServer::start().await;
    server
        .load_limited("limits_fixture", "victim", json!({"fuel": 10_000_000}))
        .await;
    server.load("limits_fixture", "bystander").await;
    server.call_ok("bystander", "bump", json!([])).await;
    let (_, body) = server
        .call("victim", "spin_forever", json!([]), json!({}))
        .await;
    assert_eq!(code(&body), "fuel_exhausted");
    assert_eq!(
        server.call_ok("bystander", "bump", json!([])).await["result"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_may_be_lowered_never_raised() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "my_calc", "alias": "x", "limits": {"fuel": u64::MAX}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("fuel"),
        "{body}"
    );
    let (status, _) = server
        .post(
            "/python/load",
            json!({"script_name": "my_calc", "alias": "x", "limits": {"fuel": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .post(
            "/python/load",
            json!({"script_name": "my_calc", "alias": "x", "limits": {"fuel_units": 5}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body = server
        .load_limited("my_calc", "x", json!({"deadline_ms": 1234}))
        .await;
    assert_eq!(body["data"]["limits"]["deadline_ms"], 1234);
}
