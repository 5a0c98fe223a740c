//! getMemoryUsage, optimizeMemory and clearUnusedResources.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_collection_and_eviction() {
    let server = TestServer::start().await;
    server.load("counter", "count").await;
    server.load("namespace_fixture", "ns").await;
    assert_eq!(
        server.call_ok("count", "increment", json!([])).await["result"],
        1
    );

    let (status, body) = server.get("/python/getMemoryUsage").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let tools = body["data"]["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 2);
    for tool in tools {
        assert!(
            tool["linear_memory_bytes"].as_u64().expect("linear") > 1 << 20,
            "{tool}"
        );
        // Most objects were frozen when the image was built; the tool's own are tracked.
        let python = &tool["python"];
        let tracked = python["gc_objects"].as_u64().expect("objects");
        let frozen = python["gc_frozen_objects"].as_u64().expect("frozen");
        assert!(tracked > 50 && frozen > 10_000, "{tool}");
        assert!(
            python["gc_tracked_bytes"].as_u64().expect("bytes") > 4_000,
            "{tool}"
        );
    }
    let total = body["data"]["total_linear_memory_bytes"]
        .as_u64()
        .expect("total");
    assert!(total > 2 << 20);

    // garbage the collector must find: reference cycles
    let (status, _) = server
        .post(
            "/python/inject",
            json!({"alias": "ns", "code_snippet": "import gc\ngc.disable()\nfor _ in range(5000):\n    a = []\n    a.append(a)\ndel a"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.post_raw("/python/optimizeMemory", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ns = body["data"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["alias"] == "ns")
        .expect("ns")
        .clone();
    assert!(
        ns["python"]["unreachable_collected"]
            .as_u64()
            .expect("collected")
            >= 5000,
        "{ns}"
    );
    let before = ns["python"]["gc_objects_before"].as_u64().expect("before");
    let after = ns["python"]["gc_objects_after"].as_u64().expect("after");
    assert!(before >= after + 5000, "{ns}");

    // nothing has been idle for 300 s: an empty body evicts nothing
    let (status, body) = server.post_raw("/python/clearUnusedResources", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["evicted"], json!([]));
    // idle_s 0: every idle instance goes, and comes back on its next call with fresh state
    let (_, body) = server
        .post("/python/clearUnusedResources", json!({"idle_s": 0}))
        .await;
    assert_eq!(body["data"]["evicted"], json!(["count", "ns"]));
    let (_, body) = server.get("/python/getMemoryUsage").await;
    assert_eq!(body["data"]["tools"][0]["linear_memory_bytes"], json!(null));
    assert_eq!(body["data"]["total_linear_memory_bytes"], 0);
    let data = server.call_ok("count", "increment", json!([])).await;
    assert_eq!(data["result"], 1);
    assert_eq!(data["state_reset"], true);

    for bad in [
        json!({"idle_s": -1}),
        json!({"idle_s": "soon"}),
        json!({"idle": 1}),
        json!({"idle_s": 100_000_000}),
    ] {
        let (status, body) = server
            .post("/python/clearUnusedResources", bad.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(code(&body), "bad_request");
    }
}
