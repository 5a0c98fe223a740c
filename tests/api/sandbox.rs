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
    assert_eq!(call("write", "/tmp/x").await["ok"], false);
    assert_eq!(call("write", "/evil").await["ok"], false);
    assert!(!server.scripts_dir.join("evil.py").exists());
    let root = call("listdir", "/").await;
    if root["ok"] == true {
        let entries: Vec<String> = serde_json::from_value(root["entries"].clone()).expect("list");
        for entry in &entries {
            assert!(
                ["usr", "scriptbox", "scripts"].contains(&entry.as_str()),
                "{entries:?}"
            );
        }
    }
    let env = server.call_ok("p", "environ", json!([])).await["result"].clone();
    let keys: Vec<&String> = env.as_object().expect("env").keys().collect();
    for key in &keys {
        assert!(
            ["PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "TMPDIR"].contains(&key.as_str()),
            "unexpected variable {key}"
        );
    }
    assert!(std::env::var("HOME").is_err() || !env.to_string().contains("HOME"));
    assert_eq!(
        server.call_ok("p", "connect", json!([])).await["result"]["ok"],
        false
    );
    assert_eq!(
        server.call_ok("p", "spawn", json!([])).await["result"]["ok"],
        false
    );
}
