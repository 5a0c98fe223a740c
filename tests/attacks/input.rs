//! Hostile request content: names with traversal and odd characters, huge and deeply nested
//! JSON, limits above the maximum.

use reqwest::StatusCode;
use scriptbox_tests::code;
use serde_json::json;

use crate::{armed, still_serves};

const BAD_NAMES: &[&str] = &[
    "..",
    "../my_calc",
    "../../etc/passwd",
    "/etc/passwd",
    "my_calc/../my_calc",
    "my\0calc",
    "my_calc\n",
    "my_cаlc",   // Cyrillic а
    "ｍｙ_calc", // full-width
    "my calc",
    "$(id)",
    "`id`",
    "my_calc;rm -rf /",
    "",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_names_with_paths_or_odd_characters_are_refused() {
    let server = armed(|_| {}).await;
    for bad in BAD_NAMES {
        let (status, body) = server
            .post("/python/load", json!({"script_name": bad, "alias": "x"}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(code(&body), "bad_request", "{bad:?}");
    }
    let long = "a".repeat(10_000);
    let (status, _) = server
        .post("/python/load", json!({"script_name": long, "alias": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_with_paths_or_odd_characters_are_refused() {
    let server = armed(|_| {}).await;
    for bad in BAD_NAMES.iter().chain(&[".hidden", "a/b", "a\\b"]) {
        let (status, body) = server
            .post(
                "/python/load",
                json!({"script_name": "my_calc", "alias": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        for route in ["/python/unload", "/python/reload"] {
            let (status, _) = server.post(route, json!({"alias": bad})).await;
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "{route} {bad:?}: {status}"
            );
        }
    }
    assert_eq!(
        server.get("/python/list").await.1["data"]["scripts"],
        json!(["a", "calc"])
    );
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_names_that_reach_for_internals_are_refused() {
    let server = armed(|_| {}).await;
    for bad in BAD_NAMES.iter().chain(&[
        "__import__",
        "_door",
        "os.system",
        "__class__",
        "SECRET.__class__",
    ]) {
        let (status, body) = server.call("a", bad, json!([]), json!({})).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{bad:?}: {status} {body}"
        );
    }
    // a module attribute that is not callable is not a function
    let (status, body) = server.call("a", "SECRET", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_symlink_out_of_the_scripts_folder_is_not_followed() {
    let server = armed(|_| {}).await;
    std::os::unix::fs::symlink("/etc/passwd", server.scripts_dir.join("passwd.py"))
        .expect("symlink");
    std::os::unix::fs::symlink("/etc", server.scripts_dir.join("etc")).expect("symlink");
    // as a script: not found (it resolves outside the folder)
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "passwd", "alias": "p"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // from inside the guest: the mount refuses to follow it out
    for path in ["/scripts/passwd.py", "/scripts/etc/passwd"] {
        let result = crate::attack_ok(&server, "read", json!([path])).await;
        assert_eq!(result["ok"], false, "{path}: {result}");
    }
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_parsing() {
    let server = armed(|c| c.max_body_bytes = 64 << 10).await;
    let big = format!(
        r#"{{"alias":"calc","function_name":"add","args":["{}"]}}"#,
        "x".repeat(200 << 10)
    );
    let response = server
        .request(reqwest::Method::POST, "/python/call")
        .body(big)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // the rest of the body was never read: the connection must not carry another request
    assert_eq!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(code(&body), "payload_too_large");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_arguments_are_refused() {
    let server = armed(|_| {}).await;
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let body = format!(r#"{{"alias":"calc","function_name":"add","args":[{deep}]}}"#);
    let (status, reply) = server.post_raw("/python/call", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested"),
        "{reply}"
    );
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathologically_nested_json_is_refused_by_the_parser() {
    let server = armed(|_| {}).await;
    let deep = format!(
        r#"{{"alias":"calc","function_name":"add","args":[{}{}]}}"#,
        "[".repeat(400_000),
        "]".repeat(400_000)
    );
    let (status, reply) = server.post_raw("/python/call", deep).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    // the one-pass depth check refuses it before anything builds a tree of it
    assert_eq!(code(&reply), "bad_request");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("nested"),
        "{reply}"
    );
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_above_the_maximum_are_refused() {
    let server = armed(|_| {}).await;
    for (name, value) in [
        ("fuel", json!(u64::MAX)),
        ("deadline_ms", json!(86_400_001u64)),
        ("memory_bytes", json!(8u64 << 30)),
        ("output_bytes", json!(1u64 << 40)),
    ] {
        let (status, body) = server
            .post(
                "/python/load",
                json!({"script_name": "my_calc", "alias": "big", "limits": {name: value}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("maximum"),
            "{body}"
        );
    }
    still_serves(&server).await;
}
