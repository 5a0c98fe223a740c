//! callAsync and /python/jobs/{id}: accepted at once, read later, cancelled for real.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::{Value, json};

async fn call_async(
    server: &TestServer,
    alias: &str,
    function: &str,
    args: Value,
) -> (StatusCode, Value) {
    server
        .post(
            "/python/callAsync",
            json!({"alias": alias, "function_name": function, "args": args}),
        )
        .await
}

async fn job(server: &TestServer, id: &str) -> (StatusCode, Value) {
    server.get(&format!("/python/jobs/{id}")).await
}

/// Polls a job until it is no longer running.
async fn settled(server: &TestServer, id: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = job(server, id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["data"]["status"] != "running" {
            return body["data"].clone();
        }
        assert!(Instant::now() < until, "job {id} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_answers_at_once_and_finishes_later() {
    let server = TestServer::start().await;
    server.load("attacker", "a").await;
    let started = Instant::now();
    let (status, body) = call_async(&server, "a", "sleep", json!([0.5])).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let id = body["data"]["job_id"].as_str().expect("job id").to_owned();
    let (_, running) = job(&server, &id).await;
    assert_eq!(running["data"]["status"], "running");
    let done = settled(&server, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["result"], "slept");
    assert_eq!(done["alias"], "a");
    assert_eq!(done["function_name"], "sleep");
    assert!(
        done["finished_at"].as_f64().expect("finished")
            >= done["created_at"].as_f64().expect("created")
    );
    // a failing call is a failed job with the call's error
    let (_, body) = call_async(&server, "a", "recursion_bomb", json!([])).await;
    let failed = settled(&server, body["data"]["job_id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "python_exception");
    assert_eq!(failed["error"]["details"]["type"], "RecursionError");
    // DELETE forgets a finished job
    let (status, _) = server
        .request(reqwest::Method::DELETE, &format!("/python/jobs/{id}"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .expect("delete");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job(&server, &id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_stops_its_guest() {
    let server = TestServer::start_with(|c| {
        c.limits.fuel = u64::MAX / 2;
        c.limits.deadline_ms = 20_000;
    })
    .await;
    server.load("attacker", "a").await;
    let (_, body) = call_async(&server, "a", "spin", json!([])).await;
    let id = body["data"]["job_id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = server
        .request(reqwest::Method::DELETE, &format!("/python/jobs/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["status"], "cancelled");
    // the spinning guest was stopped: the tool answers at once, not after its 20 s deadline
    let started = Instant::now();
    let data = server.call_ok("a", "read_stdin", json!([])).await;
    assert_eq!(data["result"], "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(job(&server, &id).await.1["data"]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_bad_input_and_the_job_quota() {
    let server = TestServer::start_with(|c| c.quotas.max_jobs = 2).await;
    server.load("attacker", "a").await;
    for (body, status, want) in [
        (
            json!({"alias": "nobody", "function_name": "sleep"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"alias": "a", "function_name": "_door"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "a", "function_name": "sleep", "args": {"x": 1}}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "a"}),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
    ] {
        let (got, reply) = server.post("/python/callAsync", body.clone()).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert_eq!(code(&reply), want, "{body}: {reply}");
    }
    for id in [
        "nope",
        "../../etc/passwd",
        "0123456789abcdef0123456789abcdef",
        &"A".repeat(32),
    ] {
        let (status, reply) = job(&server, id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {reply}");
    }
    for _ in 0..2 {
        let (status, _) = call_async(&server, "a", "sleep", json!([0.2])).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, reply) = call_async(&server, "a", "sleep", json!([0.2])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{reply}");
    assert_eq!(code(&reply), "too_many_jobs");
}
