//! Live objects: created once, used across requests, deleted or lost with their instance.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::{Value, json};

async fn post(server: &TestServer, route: &str, body: Value) -> (StatusCode, Value) {
    server.post(&format!("/python/{route}"), body).await
}

async fn ok(server: &TestServer, route: &str, body: Value) -> Value {
    let (status, reply) = post(server, route, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{route} {body}: {reply}");
    reply["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_object_keeps_its_state_across_requests() {
    let server = TestServer::start().await;
    server.load("namespace_fixture", "ns").await;
    let made = ok(&server, "createObject", json!({"alias": "ns", "class_name": "Mount", "object_name": "east", "kwargs": {"name": "east"}})).await;
    assert_eq!(
        made["result"],
        json!({"object_name": "east", "class_name": "Mount"})
    );
    let moved = ok(
        &server,
        "callMethod",
        json!({"alias": "ns", "object_name": "east", "method_name": "goto", "args": [10.5, -20]}),
    )
    .await;
    assert_eq!(moved["result"], json!([10.5, -20]));
    let position = ok(
        &server,
        "getObjectAttribute",
        json!({"alias": "ns", "object_name": "east", "attr_name": "position"}),
    )
    .await;
    assert_eq!(position["result"], json!([10.5, -20]));
    ok(&server, "setObjectAttribute", json!({"alias": "ns", "object_name": "east", "attr_name": "slew_rate", "value": {"deg_s": 2.5}})).await;
    let rate = ok(
        &server,
        "getObjectAttribute",
        json!({"alias": "ns", "object_name": "east", "attr_name": "slew_rate"}),
    )
    .await;
    assert_eq!(rate["result"], json!({"deg_s": 2.5}));
    // with only class_name: the original's fresh instance per request
    let fresh = ok(
        &server,
        "getObjectAttribute",
        json!({"alias": "ns", "class_name": "Mount", "attr_name": "position"}),
    )
    .await;
    assert_eq!(fresh["result"], json!([0, 0]));
    ok(
        &server,
        "callMethod",
        json!({"alias": "ns", "class_name": "Mount", "method_name": "goto", "args": [1, 2]}),
    )
    .await;
    let still = ok(
        &server,
        "getObjectAttribute",
        json!({"alias": "ns", "class_name": "Mount", "attr_name": "position"}),
    )
    .await;
    assert_eq!(still["result"], json!([0, 0]));
    // listed per tool
    ok(
        &server,
        "createObject",
        json!({"alias": "ns", "class_name": "Mount", "object_name": "west"}),
    )
    .await;
    let listed = ok(&server, "listObjects", json!({"alias": "ns"})).await;
    assert_eq!(
        listed["objects"],
        json!([
            {"object_name": "east", "class_name": "Mount"},
            {"object_name": "west", "class_name": "Mount"}
        ])
    );
    // kept, then deleted
    let kept = ok(
        &server,
        "manageObjectLifecycle",
        json!({"alias": "ns", "object_name": "east", "auto_cleanup": false}),
    )
    .await;
    assert_eq!(kept["deleted"], false);
    let deleted = ok(
        &server,
        "manageObjectLifecycle",
        json!({"alias": "ns", "object_name": "east", "auto_cleanup": true}),
    )
    .await;
    assert_eq!(deleted["deleted"], true);
    let (status, body) = post(
        &server,
        "callMethod",
        json!({"alias": "ns", "object_name": "east", "method_name": "goto", "args": [1, 2]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = post(
        &server,
        "manageObjectLifecycle",
        json!({"alias": "ns", "object_name": "east", "auto_cleanup": false}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_lost_with_their_instance_say_so() {
    let server = TestServer::start().await;
    server
        .load_limited("namespace_fixture", "ns", json!({"fuel": 50_000_000}))
        .await;
    ok(
        &server,
        "createObject",
        json!({"alias": "ns", "class_name": "Mount", "object_name": "m"}),
    )
    .await;
    // a fault replaces the instance
    let (_, body) = post(
        &server,
        "eval",
        json!({"alias": "ns", "expression": "[0 for _ in iter(int, 1)]"}),
    )
    .await;
    assert_eq!(code(&body), "fuel_exhausted", "{body}");
    for (route, body) in [
        (
            "callMethod",
            json!({"alias": "ns", "object_name": "m", "method_name": "goto", "args": [1, 2]}),
        ),
        (
            "getObjectAttribute",
            json!({"alias": "ns", "object_name": "m", "attr_name": "position"}),
        ),
        (
            "setObjectAttribute",
            json!({"alias": "ns", "object_name": "m", "attr_name": "position", "value": 1}),
        ),
        (
            "manageObjectLifecycle",
            json!({"alias": "ns", "object_name": "m", "auto_cleanup": true}),
        ),
    ] {
        let (status, reply) = post(&server, route, body).await;
        assert_eq!(status, StatusCode::GONE, "{route}: {reply}");
        assert_eq!(code(&reply), "object_lost");
    }
    // created again, it works
    ok(
        &server,
        "createObject",
        json!({"alias": "ns", "class_name": "Mount", "object_name": "m"}),
    )
    .await;
    ok(
        &server,
        "callMethod",
        json!({"alias": "ns", "object_name": "m", "method_name": "goto", "args": [1, 2]}),
    )
    .await;
    // a reload loses objects too
    server.post("/python/reload", json!({"alias": "ns"})).await;
    let (status, _) = post(
        &server,
        "getObjectAttribute",
        json!({"alias": "ns", "object_name": "m", "attr_name": "position"}),
    )
    .await;
    assert_eq!(status, StatusCode::GONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_bad_input() {
    let server = TestServer::start().await;
    server.load("namespace_fixture", "ns").await;
    ok(
        &server,
        "createObject",
        json!({"alias": "ns", "class_name": "Mount", "object_name": "m"}),
    )
    .await;
    for (route, body, status, want) in [
        (
            "createObject",
            json!({"alias": "ns", "class_name": "Nope", "object_name": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "createObject",
            json!({"alias": "ns", "class_name": "greet", "object_name": "x"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "createObject",
            json!({"alias": "ns", "class_name": "Mount", "object_name": "../x"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "createObject",
            json!({"alias": "ns", "class_name": "_Hidden", "object_name": "x"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "createObject",
            json!({"alias": "ns", "class_name": "Mount", "object_name": "x", "args": {"a": 1}}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "createObject",
            json!({"alias": "ns", "class_name": "Mount", "object_name": "x", "kwargs": {"nope": 1}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "python_exception",
        ),
        (
            "callMethod",
            json!({"alias": "ns", "object_name": "m", "method_name": "_secret"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "callMethod",
            json!({"alias": "ns", "object_name": "m", "method_name": "fly"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "python_exception",
        ),
        (
            "callMethod",
            json!({"alias": "ns", "method_name": "goto"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "callMethod",
            json!({"alias": "ns", "object_name": "ghost", "method_name": "goto"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "getObjectAttribute",
            json!({"alias": "ns", "object_name": "m", "attr_name": "__dict__"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "getObjectAttribute",
            json!({"alias": "ns", "object_name": "m", "attr_name": "goto"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unserializable_result",
        ),
        (
            "setObjectAttribute",
            json!({"alias": "ns", "object_name": "m", "attr_name": "x"}),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "manageObjectLifecycle",
            json!({"alias": "ns", "object_name": "m"}),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "listObjects",
            json!({"alias": "nobody"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (got, reply) = post(&server, route, body.clone()).await;
        assert_eq!(got, status, "{route} {body}: {reply}");
        assert_eq!(code(&reply), want, "{route} {body}: {reply}");
    }
}
