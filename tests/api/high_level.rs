//! The newer version's routes (`/api/python/execute`, `executeFile`, `executeFunction`,
//! `statistics`), `inject` without an alias (the session interpreter), and package
//! environments (`createVenv`, `activateVenv`).

use std::time::Instant;

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_runs_code_in_a_fresh_sandbox() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/api/python/execute",
            json!({"code": "x = 2\nprint('hi')\nx * 21"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["result"], 42);
    assert_eq!(body["stdout"], "hi\n");
    assert_eq!(body["stderr"], "");
    assert_eq!(body["error"], json!(null));
    assert_eq!(body["mode"], "isolated");
    assert!(
        body["executionTime"].as_f64().expect("time") > 0.0,
        "{body}"
    );
    // args are bound as `args`; without a final expression the variable `result` answers
    let (_, body) = server
        .post(
            "/api/python/execute",
            json!({"code": "result = {'total': sum(args)}", "args": [1, 2, 3]}),
        )
        .await;
    assert_eq!(body["result"], json!({"total": 6}), "{body}");
    // nothing survives: x is gone in the next run
    let (status, body) = server
        .post("/api/python/execute", json!({"code": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["error_code"], "python_exception");
    assert_eq!(body["details"]["type"], "NameError");
    assert!(
        body["error"].as_str().unwrap_or("").contains("NameError"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_interpreter_keeps_state_for_inject_and_execute() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/python/inject", json!({"code_snippet": "z = 7"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server
        .post(
            "/api/python/execute",
            json!({"code": "z * 6", "mode": "session"}),
        )
        .await;
    assert_eq!(body["result"], 42, "{body}");
    assert_eq!(body["mode"], "session");
    // the session is not a tool: it is not listed, and isolated runs do not see it
    let (_, body) = server.get("/python/list").await;
    assert_eq!(body["data"]["tools"], json!([]), "{body}");
    let (status, _) = server
        .post("/api/python/execute", json!({"code": "z"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_timeout_is_obeyed_and_enforced() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/api/python/execute",
            json!({"code": "sum(range(1000))", "timeout": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for mode in ["isolated", "session"] {
        let started = Instant::now();
        let (status, body) = server
            .post(
                "/api/python/execute",
                json!({"code": "import time\ntime.sleep(30)", "timeout": 0.3, "mode": mode}),
            )
            .await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{mode}: {body}");
        assert_eq!(body["error_code"], "deadline_exceeded", "{mode}: {body}");
        assert!(took.as_millis() < 3000, "{mode}: took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_refuses_bad_input() {
    let server = TestServer::start().await;
    for body in [
        json!({}),
        json!({"code": 5}),
        json!({"code": "1", "mode": "turbo"}),
        json!({"code": "1", "timeout": -1}),
        json!({"code": "1", "timeout": 0}),
        json!({"code": "1\u{0}"}),
        json!({"code": "1", "unknown": true}),
    ] {
        let (status, answer) = server.post("/api/python/execute", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["success"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_file_runs_a_script_as_main_with_argv() {
    let server = TestServer::start().await;
    let tools = server.scripts_dir.join("cli");
    std::fs::create_dir_all(&tools).expect("dir");
    std::fs::write(
        tools.join("report.py"),
        "import sys\nprint('running', __name__)\nresult = sys.argv\n",
    )
    .expect("write");
    let (status, body) = server
        .post(
            "/api/python/executeFile",
            json!({"path": "cli/report.py", "args": ["a b", 1, true]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["result"],
        json!(["/scripts/cli/report.py", "a b", "1", "true"])
    );
    assert_eq!(body["stdout"], "running __main__\n");
    for path in [
        "../x.py",
        "/etc/passwd",
        "cli/report.txt",
        ".hidden.py",
        "cli//report.py",
        "cli/../cli/report.py",
    ] {
        let (status, body) = server
            .post("/api/python/executeFile", json!({"path": path}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let (status, _) = server
        .post("/api/python/executeFile", json!({"path": "cli/none.py"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .post(
            "/api/python/executeFile",
            json!({"path": "cli/report.py", "args": [{"no": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_function_imports_a_script_and_calls_it() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/api/python/executeFunction",
            json!({"module": "namespace_fixture", "function": "greet", "args": ["Vega"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "hello, Vega!");
    let (_, body) = server
        .post(
            "/api/python/executeFunction",
            json!({"module": "namespace_fixture", "function": "greet",
                   "args": {"name": "Deneb", "punctuation": "?"}}),
        )
        .await;
    assert_eq!(body["result"], "hello, Deneb?", "{body}");
    for (body, status) in [
        (
            json!({"module": "nope", "function": "f"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"module": "../x", "function": "f"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"module": "namespace_fixture", "function": "_private"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"module": "namespace_fixture", "function": "greet", "args": "Vega"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"module": "namespace_fixture", "function": "missing"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (got, answer) = server
            .post("/api/python/executeFunction", body.clone())
            .await;
        assert_eq!(got, status, "{body}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_the_callers_work() {
    let server = TestServer::start().await;
    server.load("namespace_fixture", "ns").await;
    server.call_ok("ns", "greet", json!(["a"])).await;
    server.call_ok("ns", "greet", json!(["b"])).await;
    server
        .post("/api/python/execute", json!({"code": "1"}))
        .await;
    server
        .post(
            "/python/syncVariableToGlobal",
            json!({"name": "g", "value": 1}),
        )
        .await;
    let (status, body) = server.get("/api/python/statistics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = &body["data"];
    assert_eq!(stats["tools"], 1, "{body}");
    assert_eq!(stats["calls"], 2);
    assert_eq!(stats["fresh_runs"], 1);
    assert_eq!(stats["globals"], 1);
    assert_eq!(stats["calls_in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_venv_is_mounted_in_instances_started_later() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post("/python/createVenv", json!({"env_name": "astro"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["created"], true);
    let (_, body) = server
        .post("/python/createVenv", json!({"env_name": "astro"}))
        .await;
    assert_eq!(body["data"]["created"], false);
    assert_eq!(body["data"]["venvs"], json!(["astro"]));
    // a package as the packages issue will install it
    let site = server.data_dir.join("envs/local/astro/site-packages");
    std::fs::write(site.join("venvmod.py"), "ANSWER = 42\n").expect("write");

    let import = json!({"code": "__import__('venvmod').ANSWER"});
    let (status, _) = server.post("/api/python/execute", import.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, body) = server
        .post("/python/activateVenv", json!({"env_name": "astro"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["active"], "astro");
    let (_, body) = server.post("/api/python/execute", import.clone()).await;
    assert_eq!(body["result"], 42, "{body}");
    // mounted read-only
    let (_, body) = server
        .post(
            "/api/python/execute",
            json!({"code": "open('/site-packages/evil.py', 'w')"}),
        )
        .await;
    assert_eq!(body["success"], false, "{body}");
    assert!(!site.join("evil.py").exists());
    // deactivated: later instances no longer see it
    let (_, body) = server
        .post("/python/activateVenv", json!({"env_name": null}))
        .await;
    assert_eq!(body["data"]["active"], json!(null), "{body}");
    let (status, _) = server.post("/api/python/execute", import).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    for (route, body, status) in [
        (
            "/python/createVenv",
            json!({"env_name": "../up"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/python/createVenv",
            json!({"env_name": null}),
            StatusCode::BAD_REQUEST,
        ),
        ("/python/createVenv", json!({}), StatusCode::BAD_REQUEST),
        (
            "/python/activateVenv",
            json!({"env_name": "ghost"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/python/activateVenv",
            json!({"env_name": 3}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, answer) = server.post(route, body.clone()).await;
        assert_eq!(got, status, "{route} {body}: {answer}");
        let _ = code(&answer);
    }
}
