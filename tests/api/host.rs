//! Host calls from guest code: the tenant's global variables (syncVariableToGlobal /
//! syncVariableFromGlobal and `scriptbox.get_global`) and registered functions
//! (registerFunction and `scriptbox.call`).

use std::time::Instant;

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globals_are_shared_by_http_and_guest_code() {
    let server = TestServer::start().await;
    server.load("host_fixture", "h").await;

    let site = json!({"lat": 52.5, "names": ["a", "é"]});
    let (status, body) = server
        .post(
            "/python/syncVariableToGlobal",
            json!({"name": "site", "value": site}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = server.call_ok("h", "recall", json!(["site"])).await;
    assert_eq!(data["result"], site);

    let data = server.call_ok("h", "remember", json!(["count", 3])).await;
    assert_eq!(data["result"], json!(["count", "site"]));
    let (_, body) = server
        .post("/python/syncVariableFromGlobal", json!({"name": "count"}))
        .await;
    assert_eq!(
        body["data"],
        json!({"name": "count", "found": true, "value": 3})
    );

    // a second tool of the tenant sees the same namespace
    server.load("host_fixture", "h2").await;
    let data = server.call_ok("h2", "recall", json!(["count"])).await;
    assert_eq!(data["result"], 3);
    let data = server.call_ok("h2", "forget", json!(["count"])).await;
    assert_eq!(data["result"], true);
    let (_, body) = server
        .post("/python/syncVariableFromGlobal", json!({"name": "count"}))
        .await;
    assert_eq!(body["data"]["found"], false, "{body}");
    assert_eq!(body["data"]["value"], json!(null));
    let data = server.call_ok("h", "recall", json!(["count"])).await;
    assert_eq!(data["result"], "missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globals_refuse_bad_names_and_oversized_values() {
    let server = TestServer::start().await;
    server.load("host_fixture", "h").await;
    for (route, body) in [
        (
            "/python/syncVariableToGlobal",
            json!({"name": "a b", "value": 1}),
        ),
        (
            "/python/syncVariableToGlobal",
            json!({"name": "__x", "value": 1}),
        ),
        ("/python/syncVariableToGlobal", json!({"name": "ok"})),
        (
            "/python/syncVariableFromGlobal",
            json!({"name": "ok", "value": 1}),
        ),
        ("/python/syncVariableFromGlobal", json!({})),
    ] {
        let (status, answer) = server.post(route, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route} {body}: {answer}");
    }
    let big = "x".repeat(300 << 10);
    let (status, body) = server
        .post(
            "/python/syncVariableToGlobal",
            json!({"name": "big", "value": big}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at most"),
        "{body}"
    );
    // the same refusal reaches guest code as scriptbox.HostError; the instance lives on
    let data = server
        .call_ok("h", "refused", json!(["set_global", "big", big]))
        .await;
    let text = data["result"].as_str().unwrap_or("");
    assert!(
        text.starts_with("HostError: a global value may be at most"),
        "{text}"
    );
    let data = server
        .call_ok("h", "refused", json!(["get_global", "not a name"]))
        .await;
    assert!(
        data["result"]
            .as_str()
            .unwrap_or("")
            .starts_with("HostError: name must be"),
        "{data}"
    );
    assert_eq!(data["state_reset"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_function_runs_in_its_own_tool() {
    let server = TestServer::start().await;
    server.load("host_fixture", "caller").await;
    server.load("host_fixture", "math").await;
    let (status, body) = server
        .post(
            "/python/registerFunction",
            json!({"name": "adder", "target": "math.add"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["functions"],
        json!({"adder": {"alias": "math", "function_name": "add"}})
    );
    let data = server
        .call_ok("caller", "via", json!(["adder", 2, 40]))
        .await;
    assert_eq!(data["result"], 42);
    // kwargs too, with the object form of the target
    server
        .post(
            "/python/registerFunction",
            json!({"name": "adder", "target": {"alias": "math", "function_name": "add"}}),
        )
        .await;
    let (status, body) = server
        .post(
            "/python/call",
            json!({"alias": "caller", "function_name": "via",
                   "args": ["adder"], "kwargs": {"a": "x", "b": "y"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"], "xy");
    // the callee's Python error reaches the caller as HostError
    let data = server
        .call_ok("caller", "refused", json!(["call", "adder", 1, "a"]))
        .await;
    let text = data["result"].as_str().unwrap_or("");
    assert!(text.contains("TypeError"), "{text}");
    // unregister with null
    let (_, body) = server
        .post(
            "/python/registerFunction",
            json!({"name": "adder", "target": null}),
        )
        .await;
    assert_eq!(body["data"]["registered"], false, "{body}");
    let data = server
        .call_ok("caller", "refused", json!(["call", "adder", 1, 2]))
        .await;
    assert_eq!(
        data["result"],
        "HostError: no function is registered as \"adder\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_chain_may_not_wait_on_itself() {
    let server = TestServer::start().await;
    server.load("host_fixture", "a").await;
    server.load("host_fixture", "b").await;
    server
        .post(
            "/python/registerFunction",
            json!({"name": "self_add", "target": "a.add"}),
        )
        .await;
    let data = server
        .call_ok("a", "refused", json!(["call", "self_add", 1, 2]))
        .await;
    let text = data["result"].as_str().unwrap_or("");
    assert!(
        text.contains("already waiting in this call chain (a)"),
        "{text}"
    );
    // a -> b -> a is refused in b, and a sees b's failure
    server
        .post(
            "/python/registerFunction",
            json!({"name": "bounce", "target": "b.via"}),
        )
        .await;
    let data = server
        .call_ok("a", "refused", json!(["call", "bounce", "self_add", 1, 2]))
        .await;
    let text = data["result"].as_str().unwrap_or("");
    assert!(
        text.contains("already waiting in this call chain (a -> b)"),
        "{text}"
    );
    // a target that is not loaded
    server
        .post(
            "/python/registerFunction",
            json!({"name": "ghost", "target": "nobody.add"}),
        )
        .await;
    let data = server
        .call_ok("a", "refused", json!(["call", "ghost"]))
        .await;
    assert!(
        data["result"].as_str().unwrap_or("").contains("not loaded"),
        "{data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_call_counts_against_the_callers_deadline() {
    let server = TestServer::start().await;
    server
        .load_limited("host_fixture", "caller", json!({"deadline_ms": 400}))
        .await;
    server
        .load_limited("host_fixture", "spinner", json!({"deadline_ms": 10000}))
        .await;
    server
        .post(
            "/python/registerFunction",
            json!({"name": "nap", "target": "spinner.nap"}),
        )
        .await;
    // obeyed: a quick registered call finishes well inside the caller's deadline
    server
        .post(
            "/python/registerFunction",
            json!({"name": "adder", "target": "spinner.add"}),
        )
        .await;
    let data = server
        .call_ok("caller", "timed", json!(["adder", 1, 2]))
        .await;
    assert_eq!(data["result"]["result"], 3);
    // violated: the callee would sleep for 30 s (its own deadline: 10 s); the caller's 400 ms
    // deadline stops both
    let started = Instant::now();
    let (status, body) = server
        .call("caller", "via", json!(["nap"]), json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(code(&body), "deadline_exceeded", "{status} {body}");
    assert!(took.as_millis() < 3000, "took {took:?}");
    // the sleeping callee was stopped too (its instance replaced), and answers at once
    let started = Instant::now();
    let data = server.call_ok("spinner", "add", json!([1, 1])).await;
    assert_eq!(data["result"], 2);
    assert!(started.elapsed().as_millis() < 3000);
    let (_, body) = server.get("/python/list").await;
    let spinner = body["data"]["tools"]
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["alias"] == "spinner"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(spinner["resets"], 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_function_refuses_bad_targets() {
    let server = TestServer::start().await;
    for body in [
        json!({"name": "f", "target": "nodot"}),
        json!({"name": "f", "target": "a._private"}),
        json!({"name": "f", "target": "../x.add"}),
        json!({"name": "f", "target": 5}),
        json!({"name": "f"}),
        json!({"name": "bad name", "target": "a.add"}),
    ] {
        let (status, answer) = server.post("/python/registerFunction", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
}
