//! Pre-initialised interpreter images (runtime/src/sandbox/image/): instances start with the
//! driver, or the driver with numpy and pandas, already imported; they behave as instances
//! from the base snapshot do, files, limits and fresh random numbers included.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::{Value, json};

async fn load(server: &TestServer, script: &str, alias: &str, extra: Value) -> Value {
    let mut body = json!({"script_name": script, "alias": alias});
    for (key, value) in extra.as_object().expect("object") {
        body[key] = value.clone();
    }
    let (status, body) = server.post("/python/load", body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_start_from_the_image_that_has_their_imports() {
    let server = TestServer::start().await;
    server.wait_for_images().await;

    let data = load(&server, "image_fixture", "sci", json!({})).await;
    assert_eq!(data["image"], "scientific", "{data}");
    let seen = server.call_ok("sci", "preloaded", json!([])).await;
    assert_eq!(
        seen["result"],
        json!({
            "pandas": true,
            "driver": true,
            "scripts": ["image_fixture.py"],
            "argv": ["image_fixture", "/scripts"],
        })
    );
    // The instance learnt its own folders: the scratch folder is writable.
    let back = server
        .call_ok("sci", "scratch_roundtrip", json!(["written in an image"]))
        .await;
    assert_eq!(back["result"], "written in an image");

    let data = load(&server, "counter", "plain", json!({})).await;
    assert_eq!(data["image"], "driver", "{data}");
    for expected in 1..=3 {
        let count = server.call_ok("plain", "increment", json!([])).await;
        assert_eq!(count["result"], expected);
    }
    let data = load(
        &server,
        "dataframe_tool",
        "frames",
        json!({"mode": "isolated"}),
    )
    .await;
    assert_eq!(data["image"], "scientific", "{data}");
    let summary = server.call_ok("frames", "summary", json!([5])).await;
    assert_eq!(summary["result"]["rows"], 5);
    assert_eq!(summary["result"]["mean"], 35.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fresh_instance_draws_its_own_random_numbers() {
    let server = TestServer::start_with(|config| config.isolated_pool_per_tool = 1).await;
    server.wait_for_images().await;
    let data = load(
        &server,
        "image_fixture",
        "dice",
        json!({"mode": "isolated"}),
    )
    .await;
    assert_eq!(data["image"], "scientific", "{data}");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let draws = server.call_ok("dice", "draws", json!([])).await;
        seen.push(draws["result"].clone());
    }
    // State an earlier instance changed in the image's modules never reaches the next one.
    for _ in 0..3 {
        let before = server.call_ok("dice", "set_options", json!([2])).await;
        assert_eq!(before["result"], json!([8, 6]), "{before}");
    }
    for (i, a) in seen.iter().enumerate() {
        for b in &seen[i + 1..] {
            assert_ne!(a[0], b[0], "numpy drew the same number twice: {seen:?}");
            assert_ne!(a[1], b[1], "random drew the same number twice: {seen:?}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_caps_hold_in_images() {
    let server = TestServer::start().await;
    server.wait_for_images().await;
    // Obeyed and violated under a cap, in the scientific image.
    let limits = json!({"limits": {"memory_bytes": 384 << 20}});
    let data = load(&server, "image_fixture", "capped", limits).await;
    assert_eq!(data["image"], "scientific", "{data}");
    let held = server.call_ok("capped", "grow", json!([64])).await;
    assert_eq!(held["result"], 64);
    let (status, body) = server.call("capped", "grow", json!([512]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["type"], "MemoryError", "{body}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_images_off_instances_start_from_the_base_snapshot() {
    let server = TestServer::start_with(|config| config.images = false).await;
    let (_, health) = server.get("/health").await;
    assert_eq!(health["data"]["images"], "off", "{health}");
    let data = load(&server, "image_fixture", "base", json!({})).await;
    assert_eq!(data["image"], "base", "{data}");
    let seen = server.call_ok("base", "preloaded", json!([])).await;
    assert_eq!(seen["result"]["pandas"], false, "{seen}");
    assert_eq!(seen["result"]["scripts"], json!(["image_fixture.py"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_that_fails_to_import_in_an_image_says_so() {
    let server = TestServer::start().await;
    server.wait_for_images().await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "broken_import", "alias": "broken"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "load_failed", "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_chooses_again_when_the_imports_change() {
    let server = TestServer::start().await;
    server.wait_for_images().await;
    let script = server.scripts_dir.join("changing.py");
    std::fs::write(&script, "def which():\n    return 'plain'\n").expect("write");
    let data = load(&server, "changing", "changing", json!({})).await;
    assert_eq!(data["image"], "driver", "{data}");
    std::fs::write(
        &script,
        "import pandas\n\ndef which():\n    return pandas.__name__\n",
    )
    .expect("rewrite");
    let (status, body) = server
        .post("/python/reload", json!({"alias": "changing"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, listed) = server.get("/python/list").await;
    let tool = listed["data"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|tool| tool["alias"] == "changing")
        .expect("listed")
        .clone();
    assert_eq!(tool["image"], "scientific", "{tool}");
    let which = server.call_ok("changing", "which", json!([])).await;
    assert_eq!(which["result"], "pandas");
    server.stop().await;
}
