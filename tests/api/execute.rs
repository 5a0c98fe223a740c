//! executeWithLogging and executeWithProfiling: client code in a fresh sandbox.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_captures_output_and_appends_the_tenants_log() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/python/executeWithLogging",
            json!({"script_content": "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)", "log_file": "run.log"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["stdout"], "to stdout\n");
    assert_eq!(body["data"]["stderr"], "to stderr\n");
    assert_eq!(body["data"]["log_file"], "run.log");
    let log = server.data_dir.join("logs").join("local").join("run.log");
    let text = std::fs::read_to_string(&log).expect("log written");
    assert!(
        text.contains("to stdout") && text.contains("to stderr"),
        "{text}"
    );
    // a failing script still logs what it printed, and answers its exception
    let (status, body) = server
        .post(
            "/python/executeWithLogging",
            json!({"script_content": "print('before')\n1/0", "log_file": "run.log"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["type"], "ZeroDivisionError");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("before"), "{text}");
    // fresh each time: nothing survives between runs, and no tool is needed
    let (_, body) = server
        .post(
            "/python/executeWithLogging",
            json!({"script_content": "x = 1"}),
        )
        .await;
    assert_eq!(body["success"], true);
    let (_, body) = server
        .post(
            "/python/executeWithLogging",
            json!({"script_content": "print(x)"}),
        )
        .await;
    assert_eq!(body["error"]["details"]["type"], "NameError", "{body}");
    // the sandbox holds: no host files
    let (_, body) = server
        .post(
            "/python/executeWithLogging",
            json!({"script_content": "open('/etc/passwd')"}),
        )
        .await;
    assert_eq!(body["error"]["details"]["type"], "FileNotFoundError");
    // log names never leave the tenant's folder or reach Python
    for bad in [
        "../escape.log",
        "/tmp/x.log",
        "run.txt",
        ".hidden.log",
        "a\u{0}.log",
        "x'); import os; ('.log",
        ".log",
    ] {
        let (status, reply) = server
            .post(
                "/python/executeWithLogging",
                json!({"script_content": "pass", "log_file": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {reply}");
    }
    assert!(!server.data_dir.join("logs").join("escape.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiling_returns_the_cprofile_table() {
    let server = TestServer::start().await;
    let script =
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(15)\nprint('done')";
    let (status, body) = server
        .post(
            "/python/executeWithProfiling",
            json!({"script_content": script, "top_n": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["data"]["result"];
    let rows = result["rows"].as_array().expect("rows");
    assert!(rows.len() <= 5 && !rows.is_empty());
    let fib = rows
        .iter()
        .find(|r| r["function"] == "fib")
        .expect("fib row");
    assert_eq!(fib["ncalls"], 1973, "{fib}");
    assert!(fib["cumtime"].as_f64().expect("cumtime") >= fib["tottime"].as_f64().expect("tottime"));
    assert!(result["total_calls"].as_u64().expect("total") >= 1973);
    assert_eq!(body["data"]["stdout"], "done\n");
    for bad in [
        json!({"script_content": "pass", "top_n": 0}),
        json!({"script_content": "pass", "top_n": 5000}),
        json!({"top_n": 5}),
    ] {
        let (status, reply) = server
            .post("/python/executeWithProfiling", bad.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {reply}");
    }
    let (status, body) = server
        .post(
            "/python/executeWithProfiling",
            json!({"script_content": "def broken(:"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["type"], "SyntaxError");
    assert_eq!(code(&body), "python_exception");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_the_drivers_bytecode_compiled_at_start() {
    // Instances from the base snapshot (images off, or not ready yet) run the driver's file.
    let server = TestServer::start_with(|config| config.images = false).await;
    let (status, body) = server
        .post(
            "/api/python/execute",
            json!({"code": "import __main__\nresult = __main__.__file__"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let file = body["result"].as_str().expect("the driver's file");
    assert!(
        file.starts_with("/scriptbox/_scriptbox_driver.") && file.ends_with(".pyc"),
        "{file}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_cached_driver_bytecode_falls_back_to_the_source() {
    let cache = tempfile::tempdir().expect("cache dir");
    let hash = blake3::hash(scriptbox::guest::DRIVER_SOURCE.as_bytes()).to_hex();
    let bad = cache
        .path()
        .join(format!("_scriptbox_driver.{}.pyc", &hash[..16]));
    std::fs::write(&bad, b"not bytecode").expect("bad pyc");
    let dir = cache.path().to_path_buf();
    let server = TestServer::start_with(move |config| {
        config.cache_dir = dir;
        config.images = false;
    })
    .await;
    let (status, body) = server
        .post(
            "/api/python/execute",
            json!({"code": "import __main__\nresult = __main__.__file__"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "/scriptbox/_scriptbox_driver.py");
    assert!(!bad.exists(), "the broken file is forgotten");
    server.stop().await;
}
