//! Every bad-input case gets its 4xx code and the error envelope; nothing is a 500.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_codes() {
    let server = TestServer::start_with(|c| c.max_body_bytes = 64 * 1024).await;
    server.load("my_calc", "calc").await;
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "/python/load",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/python/load",
            "".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "/python/load",
            "[1,2]".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"alias": "a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "/python/load",
            r#"{"script_name": "my_calc"}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "/python/load",
            r#"{"script_name": 5, "alias": "a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"script_name": "my_calc", "alias": "a", "extra": 1}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"script_name": "../etc/passwd", "alias": "a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"script_name": "my_calc.py", "alias": "a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"script_name": "/abs", "alias": "a"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"script_name": "my_calc", "alias": "a/b"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"script_name": "my_calc", "alias": ""}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/load",
            r#"{"script_name": "no_such_script", "alias": "a"}"#.into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/python/load",
            r#"{"script_name": "my_calc", "alias": "calc"}"#.into(),
            StatusCode::CONFLICT,
            "alias_exists",
        ),
        (
            "/python/call",
            r#"{"alias": "calc"}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "/python/call",
            r#"{"alias": "nope", "function_name": "add"}"#.into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/python/call",
            r#"{"alias": "calc", "function_name": "subtract"}"#.into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/python/call",
            r#"{"alias": "calc", "function_name": "__import__"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/call",
            r#"{"alias": "calc", "function_name": "os.system"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/call",
            r#"{"alias": "calc", "function_name": "add", "args": {"a": 1}}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/call",
            r#"{"alias": "calc", "function_name": "add", "kwargs": [1]}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/call",
            format!(
                r#"{{"alias": "calc", "function_name": "add", "args": [{}1{}]}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/unload",
            r#"{"alias": "nope"}"#.into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/python/reload",
            r#"{}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "/python/call",
            format!(
                r#"{{"alias": "calc", "function_name": "add", "args": ["{}"]}}"#,
                "x".repeat(100 * 1024)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "/python/nosuch",
            "{}".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (path, body, want_status, want_code) in cases {
        let shown: String = body.chars().take(80).collect();
        let (status, reply) = server.post_raw(path, body).await;
        assert_eq!(status, want_status, "{path} {shown}: {reply}");
        assert_eq!(code(&reply), want_code, "{path} {shown}: {reply}");
        assert_eq!(reply["success"], false);
        assert!(
            reply["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
    }
    let (status, reply) = server.get("/python/load").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(code(&reply), "method_not_allowed");
    // the tool still works after all that
    assert_eq!(
        server.call_ok("calc", "add", json!([2, 2])).await["result"],
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_tools() {
    let server = TestServer::start_with(|c| c.max_tools = 2).await;
    server.load("my_calc", "a").await;
    server.load("my_calc", "b").await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "my_calc", "alias": "c"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&body), "too_many_tools");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_leak_host_paths() {
    let server = TestServer::start().await;
    let scripts = server.scripts_dir.display().to_string();
    let (_, body) = server
        .post(
            "/python/load",
            json!({"script_name": "broken_import", "alias": "b"}),
        )
        .await;
    let text = body.to_string();
    assert!(!text.contains(&scripts), "host path leaked: {text}");
    assert!(
        text.contains("/scripts/broken_import.py"),
        "guest path expected: {text}"
    );
}
