//! configurePerformance: the result cache (argument-aware, invalidated when the tool's
//! state changes, bounded by a TTL) and the switches that have no meaning in a sandbox.

use std::time::Duration;

use reqwest::StatusCode;
use scriptbox_tests::TestServer;
use serde_json::{Value, json};

async fn square(server: &TestServer, x: i64) -> Value {
    server.call_ok("c", "square", json!([x])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_is_off_by_default_and_argument_aware_when_on() {
    let server = TestServer::start().await;
    server.load("cache_fixture", "c").await;
    assert_eq!(square(&server, 3).await["result"]["calls"], 1);
    assert_eq!(
        square(&server, 3).await["result"]["calls"],
        2,
        "off by default"
    );

    let (status, body) = server
        .post(
            "/python/configurePerformance",
            json!({"enable_caching": true, "cache_ttl_s": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["cache"]["enabled"], true);
    assert_eq!(body["data"]["settings"]["enable_caching"]["applied"], true);

    let first = square(&server, 3).await;
    assert_eq!(first["result"], json!({"square": 9, "calls": 3}));
    assert!(first.get("cached").is_none(), "{first}");
    let again = square(&server, 3).await;
    assert_eq!(again["result"], first["result"], "served from the cache");
    assert_eq!(again["cached"], true);
    assert_eq!(again["stdout"], "computing 3\n");
    // other arguments, or the same value as a keyword, are other keys
    assert_eq!(square(&server, 4).await["result"]["calls"], 4);
    let (_, body) = server.call("c", "square", json!([]), json!({"x": 3})).await;
    assert_eq!(body["data"]["result"]["calls"], 5, "{body}");
    // failures are never kept
    for _ in 0..2 {
        let (status, body) = server.call("c", "fail", json!([]), json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body["error"]["details"].get("cached").is_none());
    }
    let (_, body) = server.get("/api/python/statistics").await;
    assert_eq!(body["data"]["cache"]["hits"], 1, "{body}");
    assert_eq!(body["data"]["cache"]["entries"], 3, "{body}");

    // turning it off drops every entry
    let (_, body) = server
        .post(
            "/python/configurePerformance",
            json!({"enable_caching": false}),
        )
        .await;
    assert_eq!(body["data"]["cache"]["entries"], 0, "{body}");
    assert_eq!(square(&server, 3).await["result"]["calls"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_invalidate_the_tools_entries() {
    let server = TestServer::start().await;
    server.load("cache_fixture", "c").await;
    server
        .post(
            "/python/configurePerformance",
            json!({"enable_caching": true}),
        )
        .await;
    assert_eq!(square(&server, 2).await["result"]["calls"], 1);
    assert_eq!(square(&server, 2).await["cached"], true);

    let (status, _) = server
        .post(
            "/python/setVariable",
            json!({"alias": "c", "variable_name": "calls", "value": 100}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        square(&server, 2).await["result"]["calls"],
        101,
        "after setVariable"
    );
    assert_eq!(square(&server, 2).await["cached"], true);

    server
        .post(
            "/python/inject",
            json!({"alias": "c", "code_snippet": "calls = 200"}),
        )
        .await;
    assert_eq!(
        square(&server, 2).await["result"]["calls"],
        201,
        "after inject"
    );

    server.post("/python/reload", json!({"alias": "c"})).await;
    assert_eq!(
        square(&server, 2).await["result"]["calls"],
        1,
        "after reload"
    );

    server.post("/python/unload", json!({"alias": "c"})).await;
    server.load("cache_fixture", "c").await;
    let data = square(&server, 2).await;
    assert_eq!(data["result"]["calls"], 1, "after unload and load");
    assert!(data.get("cached").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_results_expire_after_the_ttl() {
    let server = TestServer::start().await;
    server.load("cache_fixture", "c").await;
    server
        .post(
            "/python/configurePerformance",
            json!({"enable_caching": true, "cache_ttl_s": 1}),
        )
        .await;
    assert_eq!(square(&server, 5).await["result"]["calls"], 1);
    assert_eq!(square(&server, 5).await["cached"], true, "within the TTL");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let data = square(&server, 5).await;
    assert_eq!(data["result"]["calls"], 2, "expired: {data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_without_meaning_are_reported_not_applicable() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/python/configurePerformance",
            json!({"thread_pool_size": 8, "enable_threading": true, "enable_gil_optimization": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for field in [
        "thread_pool_size",
        "enable_threading",
        "enable_gil_optimization",
    ] {
        let setting = &body["data"]["settings"][field];
        assert_eq!(setting["applied"], false, "{field}: {body}");
        assert!(
            setting["meaning"]
                .as_str()
                .unwrap_or("")
                .starts_with("not applicable"),
            "{field}"
        );
    }
    assert_eq!(body["data"]["cache"]["enabled"], false);
    // an empty body only reports
    let (status, body) = server.post_raw("/python/configurePerformance", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for bad in [
        json!({"cache_ttl_s": 0}),
        json!({"cache_ttl_s": 100000}),
        json!({"thread_pool_size": 0}),
        json!({"enable_caching": "yes"}),
        json!({"turbo": true}),
    ] {
        let (status, body) = server
            .post("/python/configurePerformance", bad.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}
