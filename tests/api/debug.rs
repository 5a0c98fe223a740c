//! enableDebug (line tracing) and setBreakpoint (locals snapshots), returned with each call.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traced_lines_come_back_with_the_call() {
    let server = TestServer::start().await;
    server.load("debug_fixture", "d").await;
    let data = server.call_ok("d", "total", json!([[1, 2]])).await;
    assert!(data.get("debug").is_none(), "off by default: {data}");

    let (status, body) = server
        .post("/python/enableDebug", json!({"enable": true, "alias": "d"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["tools"], json!(["d"]));
    let data = server.call_ok("d", "total", json!([[1, 2]])).await;
    assert_eq!(data["result"], 3);
    assert_eq!(
        data["debug"]["lines"],
        json!([
            ["total", 5],
            ["total", 6],
            ["total", 7],
            ["total", 6],
            ["total", 7],
            ["total", 6],
            ["total", 8]
        ])
    );
    assert_eq!(data["debug"]["truncated"], false);

    // capped: a long loop keeps the first 1,000 lines and says it was cut
    let data = server.call_ok("d", "loop", json!([2000])).await;
    assert_eq!(data["result"], 2000);
    assert_eq!(data["debug"]["lines"].as_array().map(Vec::len), Some(1000));
    assert_eq!(data["debug"]["truncated"], true);

    let (_, body) = server
        .post(
            "/python/enableDebug",
            json!({"enable": false, "alias": "d"}),
        )
        .await;
    assert_eq!(body["data"]["enabled"], false);
    let data = server.call_ok("d", "total", json!([[1]])).await;
    assert!(data.get("debug").is_none(), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breakpoint_captures_the_locals_and_execution_goes_on() {
    let server = TestServer::start().await;
    server.load("debug_fixture", "d").await;
    let (status, body) = server
        .post(
            "/python/setBreakpoint",
            json!({"alias": "d", "line_number": 8}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["breakpoints"], json!([8]));
    let data = server.call_ok("d", "total", json!([[1, 2]])).await;
    assert_eq!(data["result"], 3);
    assert_eq!(
        data["debug"]["breakpoints"],
        json!([{"line": 8, "function": "total", "locals": {"acc": 3, "v": 2, "values": [1, 2]}}])
    );
    assert!(data["debug"].get("lines").is_none(), "{data}");

    // a value JSON cannot hold is shown by its repr; a failing call still reports
    server
        .post(
            "/python/setBreakpoint",
            json!({"alias": "d", "line_number": 20}),
        )
        .await;
    let (status, body) = server.call("d", "fails", json!(["boom"]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let hit = &body["error"]["details"]["debug"]["breakpoints"][0];
    assert_eq!(hit["line"], 20, "{body}");
    assert_eq!(hit["locals"]["x"], "boom");
    let shown = hit["locals"]["handle"]["repr"].as_str().unwrap_or("");
    assert!(shown.starts_with("<object object at"), "{shown}");

    // null clears them all
    let (_, body) = server
        .post(
            "/python/setBreakpoint",
            json!({"alias": "d", "line_number": null}),
        )
        .await;
    assert_eq!(body["data"]["breakpoints"], json!([]));
    let data = server.call_ok("d", "total", json!([[1]])).await;
    assert!(data.get("debug").is_none(), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_without_alias_reaches_every_tool_and_later_ones() {
    let server = TestServer::start().await;
    server.load("debug_fixture", "a").await;
    let (_, body) = server
        .post("/python/enableDebug", json!({"enable": true}))
        .await;
    assert_eq!(body["data"]["tools"], json!(["a"]), "{body}");
    server.load("debug_fixture", "b").await;
    for alias in ["a", "b"] {
        let data = server.call_ok(alias, "total", json!([[]])).await;
        assert_eq!(
            data["debug"]["lines"],
            json!([["total", 5], ["total", 6], ["total", 8]]),
            "{alias}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_routes_refuse_bad_input() {
    let server = TestServer::start().await;
    server.load("debug_fixture", "d").await;
    for (route, body, status) in [
        ("/python/enableDebug", json!({}), StatusCode::BAD_REQUEST),
        (
            "/python/enableDebug",
            json!({"enable": "yes"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/python/enableDebug",
            json!({"enable": true, "alias": "ghost"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/python/setBreakpoint",
            json!({"alias": "d"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/python/setBreakpoint",
            json!({"alias": "d", "line_number": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/python/setBreakpoint",
            json!({"alias": "d", "line_number": -3}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/python/setBreakpoint",
            json!({"alias": "d", "line_number": "7"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/python/setBreakpoint",
            json!({"alias": "ghost", "line_number": 7}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (got, answer) = server.post(route, body.clone()).await;
        assert_eq!(got, status, "{route} {body}: {answer}");
        assert_ne!(code(&answer), "<none>");
    }
    // at most 64 breakpoints per tool
    for line in 1..=64 {
        let (status, _) = server
            .post(
                "/python/setBreakpoint",
                json!({"alias": "d", "line_number": line}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = server
        .post(
            "/python/setBreakpoint",
            json!({"alias": "d", "line_number": 65}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
