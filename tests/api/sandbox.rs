//! What a tool can see and do inside the sandbox: only the read-only mounts, no environment
//! but ours, no network, no processes.

use scriptbox_tests::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sees_only_its_mounts() {
    let server = TestServer::start().await;
    server.load("probe", "p").await;
    let call = |f: &'static str, arg: &'static str| {
        let server = &server;
        async move { server.call_ok("p", f, json!([arg])).await["result"].clone() }
    };
    assert_eq!(call("read", "/etc/passwd").await["ok"], false);
    assert_eq!(call("read", "/scripts/my_calc.py").await["ok"], true);
    assert_eq!(call("read", "/scripts/../../etc/passwd").await["ok"], false);
    assert_eq!(call("write", "/scripts/evil.py").await["ok"], false);
    // /tmp is the tool's own scratch folder (tests/attacks covers its quotas)
    assert_eq!(call("write", "/tmp/x").await["ok"], true);
    assert_eq!(call("write", "/evil").await["ok"], false);
    assert!(!server.scripts_dir.join("evil.py").exists());
    // there is no root: only the three mounts exist
    assert_eq!(call("listdir", "/").await["ok"], false);
    assert_eq!(
        call("listdir", "/usr/local/lib").await["entries"],
        json!(["python315.zip"])
    );
    assert_eq!(call("listdir", "/tmp").await["entries"], json!(["x"]));
    let env = server.call_ok("p", "environ", json!([])).await["result"].clone();
    let keys: Vec<&String> = env.as_object().expect("env").keys().collect();
    for key in &keys {
        assert!(
            key.as_str() == "PYTHONDONTWRITEBYTECODE",
            "unexpected variable {key}"
        );
    }
    assert_eq!(
        server.call_ok("p", "connect", json!([])).await["result"]["ok"],
        false
    );
    assert_eq!(
        server.call_ok("p", "spawn", json!([])).await["result"]["ok"],
        false
    );
}
