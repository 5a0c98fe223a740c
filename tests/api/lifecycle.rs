//! load / list / call / unload / reload, arguments, state, conversions, concurrency.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_list_call_unload_reload() {
    let server = TestServer::start().await;
    let loaded = server.load("counter", "c").await;
    assert_eq!(loaded["data"]["alias"], "c");
    assert_eq!(loaded["data"]["script_name"], "counter");
    assert_eq!(
        server.call_ok("c", "increment", json!([])).await["result"],
        1
    );
    assert_eq!(
        server.call_ok("c", "increment", json!([5])).await["result"],
        6
    );
    assert_eq!(server.call_ok("c", "get", json!([])).await["result"], 6);

    // reload re-imports the script (picking up an edit) and resets its state
    std::fs::write(
        server.scripts_dir.join("counter.py"),
        "count = 100\n\ndef increment(by=1):\n    global count\n    count += by\n    return count\n\ndef get():\n    return count\n",
    )
    .expect("edit script");
    let (status, body) = server.post("/python/reload", json!({"alias": "c"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.call_ok("c", "increment", json!([])).await["result"],
        101
    );

    // a reload whose import fails keeps the old instance
    std::fs::write(
        server.scripts_dir.join("counter.py"),
        "raise ImportError('nope')\n",
    )
    .expect("edit");
    let (status, body) = server.post("/python/reload", json!({"alias": "c"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "load_failed");
    assert_eq!(server.call_ok("c", "get", json!([])).await["result"], 101);

    let (status, list) = server.get("/python/list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"]["tools"][0]["calls"], 5);

    let (status, _) = server.post("/python/unload", json!({"alias": "c"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.call("c", "get", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let (_, list) = server.get("/python/list").await;
    assert_eq!(list["data"]["scripts"], json!([]));
    let (status, _) = server.post("/python/unload", json!({"alias": "c"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.post("/python/reload", json!({"alias": "c"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_kwargs_and_conversions() {
    let server = TestServer::start().await;
    server.load("limits_fixture", "f").await;
    let (status, body) = server
        .call(
            "f",
            "echo",
            json!([1, "two", [3], {"four": 4}]),
            json!({"k": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["result"]["args"],
        json!([1, "two", [3], {"four": 4}])
    );
    assert_eq!(body["data"]["result"]["kwargs"]["k"], json!(null));

    // integers beyond 2^64 travel exactly, both ways (checked on the raw text)
    let response = server
        .client
        .post(format!("{}/python/call", server.base))
        .body(r#"{"alias": "f", "function_name": "give", "args": ["bigint"]}"#)
        .send()
        .await
        .expect("call");
    let text = response.text().await.expect("text");
    assert!(text.contains(r#""result":18446744073709551617"#), "{text}");

    assert_eq!(
        server.call_ok("f", "give", json!(["tuple"])).await["result"],
        json!([1, 2, 3])
    );
    assert_eq!(
        server.call_ok("f", "give", json!(["none"])).await["result"],
        json!(null)
    );
    assert_eq!(
        server.call_ok("f", "give", json!(["nested"])).await["result"],
        json!({"a": [1, {"b": [2.5, "c"]}]})
    );
    for (kind, names) in [
        ("nan", "nan"),
        ("inf", "inf"),
        ("object", "object"),
        ("intkey", "dict key of type int"),
    ] {
        let (status, body) = server.call("f", "give", json!([kind]), json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        assert_eq!(code(&body), "unserializable_result", "{kind}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(names), "{kind}: {message}");
    }

    // Python exceptions: type, message and traceback of the tenant's own code
    let (status, body) = server.call("f", "fail", json!(["kaput"]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "python_exception");
    assert_eq!(body["error"]["details"]["type"], "ValueError");
    assert_eq!(body["error"]["details"]["message"], "kaput");
    let traceback = body["error"]["details"]["traceback"].as_str().expect("tb");
    assert!(traceback.contains("limits_fixture.py"), "{traceback}");
    assert!(
        !traceback.contains("_scriptbox_driver"),
        "driver frames are hidden: {traceback}"
    );
    assert_eq!(body["error"]["details"]["state_reset"], false);

    // wrong arity is a Python TypeError, not a server error
    let (status, body) = server.call("f", "fail", json!([1, 2, 3]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["type"], "TypeError");

    // deep recursion is a RecursionError, and the instance survives it
    let (status, body) = server
        .call("f", "recurse", json!([100000]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["type"], "RecursionError");
    assert_eq!(
        server.call_ok("f", "recurse", json!([50])).await["result"],
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_captured_per_call() {
    let server = TestServer::start().await;
    server.load("limits_fixture", "f").await;
    let data = server.call_ok("f", "shout", json!([10])).await;
    assert_eq!(data["stdout"], "yyyyyyyyyy");
    assert_eq!(data["stderr"], "");
    let data = server.call_ok("f", "echo", json!([])).await;
    assert_eq!(
        data["stdout"], "",
        "output does not leak into the next call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_over_five_aliases() {
    let server = std::sync::Arc::new(TestServer::start().await);
    for i in 0..5 {
        server.load("my_calc", &format!("calc{i}")).await;
    }
    let mut calls = Vec::new();
    for n in 0..50u64 {
        let server = std::sync::Arc::clone(&server);
        calls.push(tokio::spawn(async move {
            let alias = format!("calc{}", n % 5);
            let (status, body) = server
                .call(&alias, "add", json!([n, 1000]), json!({}))
                .await;
            (n, status, body)
        }));
    }
    for call in calls {
        let (n, status, body) = call.await.expect("join");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["result"], n + 1000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy() {
    let server = std::sync::Arc::new(TestServer::start_with(|c| c.queue_depth = 1).await);
    server.load("limits_fixture", "f").await;
    let mut calls = Vec::new();
    for _ in 0..4 {
        let server = std::sync::Arc::clone(&server);
        calls.push(tokio::spawn(async move {
            server.call("f", "sleep", json!([0.5]), json!({})).await
        }));
    }
    let mut busy = 0;
    let mut ok = 0;
    for call in calls {
        let (status, body) = call.await.expect("join");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(code(&body), "busy");
                busy += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok={ok} busy={busy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_scripts_fail_to_load_cleanly() {
    let server = TestServer::start_with(|c| {
        c.start.deadline_ms = 2_000;
    })
    .await;
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "broken_import", "alias": "b"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "load_failed");
    assert_eq!(body["error"]["details"]["type"], "RuntimeError");
    let (status, body) = server
        .post(
            "/python/load",
            json!({"script_name": "slow_import", "alias": "s"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        ["deadline_exceeded", "fuel_exhausted"].contains(&code(&body)),
        "{body}"
    );
    let (_, list) = server.get("/python/list").await;
    assert_eq!(
        list["data"]["scripts"],
        json!([]),
        "failed loads leave nothing behind"
    );
    // the alias is free again
    server.load("my_calc", "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_mid_call_stops_it_and_the_tool_answers_on() {
    let server = TestServer::start().await;
    server.load("limits_fixture", "f").await;
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 1);
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .expect("client");
    let gave_up = impatient
        .post(format!("{}/python/call", server.base))
        .json(&json!({"alias": "f", "function_name": "sleep", "args": [1.0]}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client should have timed out");
    // The abandoned call was stopped (docs/api.md, "Cancel on disconnect"): the instance
    // was replaced, the next call says so, and the tool goes on from a fresh state.
    let next = server.call_ok("f", "bump", json!([])).await;
    assert_eq!(next["result"], 1, "{next}");
    assert_eq!(next["state_reset"], true, "{next}");
    assert_eq!(server.call_ok("f", "bump", json!([])).await["result"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_values_never_crash_the_tool() {
    let server = TestServer::start().await;
    server.load("hostile", "h").await;
    // integers beyond CPython's 4,300-digit guard still travel exactly
    let digits = "7".repeat(5000);
    let response = server
        .client
        .post(format!("{}/python/call", server.base))
        .body(format!(
            r#"{{"alias": "h", "function_name": "echo", "args": [{digits}]}}"#
        ))
        .send()
        .await
        .expect("call");
    let text = response.text().await.expect("text");
    assert!(
        text.contains(&format!(r#""result":{digits}"#)),
        "{}",
        &text[..200.min(text.len())]
    );
    // a lone surrogate cannot be UTF-8: refused as a result, escaped in output
    let response = server
        .client
        .post(format!("{}/python/call", server.base))
        .body(r#"{"alias": "h", "function_name": "echo", "args": ["\ud800"]}"#)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(code(&body), "unserializable_result", "{body}");
    assert_eq!(body["error"]["details"]["state_reset"], false);
    let response = server
        .client
        .post(format!("{}/python/call", server.base))
        .body(r#"{"alias": "h", "function_name": "shout", "args": ["a\udc80b"]}"#)
        .send()
        .await
        .expect("call");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["data"]["stdout"], "a\\udc80b\n", "{body}");
    // a module __getattr__ that raises is the tool's exception, not a server error
    let (status, body) = server.call("h", "lazy", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["type"], "KeyError");
    assert_eq!(server.call_ok("h", "echo", json!([1])).await["result"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_enforces_the_output_cap_even_if_the_driver_is_tampered_with() {
    let server = TestServer::start().await;
    server
        .load_limited("hostile", "h", json!({"output_bytes": 1000}))
        .await;
    // the first call lifts the driver's budget for later calls; the second prints past the cap
    server.call_ok("h", "cheat_output", json!([10])).await;
    let (status, body) = server
        .call("h", "cheat_output", json!([5000]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "output_limit");
    assert_eq!(body["error"]["details"]["state_reset"], true);
    assert_eq!(server.call_ok("h", "echo", json!([2])).await["result"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_stops_a_running_call() {
    let server = std::sync::Arc::new(TestServer::start().await);
    server.load("limits_fixture", "f").await;
    let call = tokio::spawn({
        let server = std::sync::Arc::clone(&server);
        async move { server.call("f", "sleep", json!([5.0]), json!({})).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, _) = server.post("/python/unload", json!({"alias": "f"})).await;
    assert_eq!(status, StatusCode::OK);
    let started = std::time::Instant::now();
    let (status, body) = call.await.expect("join");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "tool_unloaded");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    // the alias is free for a new load
    server.load("my_calc", "f").await;
}
