//! addSysPath (granted guest paths only) and the package routes' not-yet answer.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

const IMPORT: &str = "__import__('helpers_x').twice(21)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_path_reaches_every_instance_now_and_later() {
    let server = TestServer::start().await;
    let lib = server.scripts_dir.join("lib");
    std::fs::create_dir_all(&lib).expect("lib");
    std::fs::write(
        lib.join("helpers_x.py"),
        "def twice(x):\n    return 2 * x\n",
    )
    .expect("write");
    server.load("namespace_fixture", "ns").await;
    let (_, body) = server
        .post("/python/eval", json!({"alias": "ns", "expression": IMPORT}))
        .await;
    assert_eq!(
        body["error"]["details"]["type"], "ModuleNotFoundError",
        "{body}"
    );

    let (status, body) = server
        .post("/python/addSysPath", json!({"path": "/scripts/lib/"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["path"], "/scripts/lib");
    assert_eq!(body["data"]["pending"], json!([]));
    let (_, body) = server
        .post("/python/eval", json!({"alias": "ns", "expression": IMPORT}))
        .await;
    assert_eq!(body["data"]["result"], 42, "{body}");
    // kept across a restart of the instance, and given to tools loaded later
    server
        .post("/python/clearUnusedResources", json!({"idle_s": 0}))
        .await;
    let (_, body) = server
        .post("/python/eval", json!({"alias": "ns", "expression": IMPORT}))
        .await;
    assert_eq!(body["data"]["result"], 42, "{body}");
    assert_eq!(body["data"]["state_reset"], true);
    server.load("namespace_fixture", "later").await;
    let (_, body) = server
        .post(
            "/python/eval",
            json!({"alias": "later", "expression": IMPORT}),
        )
        .await;
    assert_eq!(body["data"]["result"], 42, "{body}");
    // adding it twice changes nothing
    let (_, body) = server
        .post("/python/addSysPath", json!({"path": "/scripts/lib"}))
        .await;
    assert_eq!(body["data"]["sys_paths"], json!(["/scripts/lib"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_grants_are_forbidden() {
    let server = TestServer::start().await;
    for path in [
        "/etc",
        "/",
        "/scripts/../etc",
        "/usr/local/lib",
        "/scriptbox",
        "relative",
        "/tmp/\u{0}",
        "/scripts/lib\n",
    ] {
        let (status, body) = server
            .post("/python/addSysPath", json!({"path": path}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path:?}: {body}");
        assert_eq!(code(&body), "forbidden_path");
    }
    let (status, body) = server.post("/python/addSysPath", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
