//! Tasks and workflows: DAG order and parallelism, step timeouts that stop guests, retries,
//! cancel, input passing, validation, tenancy, and the original /api/tasks routes. (The
//! crash test, which needs the real binary, is in tests/cli.)

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::{Value, json};

/// Submits a task; its id.
async fn submit(server: &TestServer, task: Value) -> String {
    let (status, body) = server.post("/tasks", task).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["data"]["task_id"]
        .as_str()
        .expect("task_id")
        .to_owned()
}

/// Waits until the task has finished; its record.
pub(crate) async fn finished(server: &TestServer, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = server.get(&format!("/tasks/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let state = body["data"]["status"].as_str().unwrap_or("");
        if !matches!(state, "pending" | "running") {
            return body["data"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "task never finished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn step<'a>(task: &'a Value, id: &str) -> &'a Value {
    task["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or(&Value::Null)
}

fn call(id: &str, alias: &str, function: &str, args: Value) -> Value {
    json!({"id": id, "kind": "call", "alias": alias, "function_name": function, "args": args})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_in_dependency_order_and_in_parallel() {
    let server = TestServer::start().await;
    for alias in ["a", "b", "c"] {
        server.load("task_fixture", alias).await;
    }
    let mut last = call("last", "c", "stamp", json!(["last"]));
    last["depends_on"] = json!(["one", "two"]);
    let id = submit(
        &server,
        json!({"name": "dag", "max_concurrency": 2, "steps": [
            call("one", "a", "stamp", json!(["one", 400])),
            call("two", "b", "stamp", json!(["two", 400])),
            last,
        ]}),
    )
    .await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let (one, two, last) = (step(&task, "one"), step(&task, "two"), step(&task, "last"));
    let at = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    // parallel: each started before the other finished
    assert!(at(one, "started_at") < at(two, "finished_at"), "{task}");
    assert!(at(two, "started_at") < at(one, "finished_at"), "{task}");
    // ordered: the last started after both finished
    let after = at(one, "finished_at").max(at(two, "finished_at"));
    assert!(at(last, "started_at") >= after, "{task}");
    assert_eq!(one["result"]["label"], "one");

    // with max_concurrency 1 the two independent steps do not overlap
    let id = submit(
        &server,
        json!({"name": "serial", "max_concurrency": 1, "steps": [
            call("one", "a", "stamp", json!(["one", 200])),
            call("two", "b", "stamp", json!(["two", 200])),
        ]}),
    )
    .await;
    let task = finished(&server, &id).await;
    let (one, two) = (step(&task, "one"), step(&task, "two"));
    assert!(at(two, "started_at") >= at(one, "finished_at"), "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_stops_a_spinning_guest() {
    let server = TestServer::start().await;
    server.load("task_fixture", "a").await;
    // 100 ms: well inside the time the default fuel lasts when spinning (about 0.3 s here),
    // so it is the deadline, not the fuel, that stops it
    let mut spin = call("spin", "a", "spin", json!([]));
    spin["timeout_ms"] = json!(100);
    let started = Instant::now();
    let id = submit(&server, json!({"name": "spin", "steps": [spin]})).await;
    let task = finished(&server, &id).await;
    let took = started.elapsed();
    assert_eq!(task["status"], "failed", "{task}");
    let spin = step(&task, "spin");
    assert_eq!(spin["status"], "failed");
    assert!(
        spin["error"].as_str().unwrap_or("").contains("deadline"),
        "{spin}"
    );
    let ran =
        spin["finished_at"].as_f64().unwrap_or(0.0) - spin["started_at"].as_f64().unwrap_or(0.0);
    assert!(ran < 0.1 + 1.0, "the step ran {ran} s");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // the guest really stopped: the tool answers at once
    let data = server.call_ok("a", "double", json!([2])).await;
    assert_eq!(data["result"], 4);

    // the task's own timeout stops it too
    let id = submit(
        &server,
        json!({"name": "overall", "timeout_ms": 300, "steps": [call("nap", "a", "nap", json!([30]))]}),
    )
    .await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "timed_out", "{task}");
    assert!(
        matches!(
            step(&task, "nap")["status"].as_str(),
            Some("timed_out" | "failed")
        ),
        "{task}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_and_optional_steps() {
    let server = TestServer::start().await;
    server.load("task_fixture", "a").await;
    let mut flaky = call("flaky", "a", "flaky", json!([2]));
    flaky["retries"] = json!(2);
    flaky["retry_backoff_ms"] = json!(50);
    let id = submit(&server, json!({"name": "retry", "steps": [flaky]})).await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let flaky = step(&task, "flaky");
    assert_eq!(flaky["attempts"], 3);
    assert_eq!(flaky["result"], 3);
    let retrying = task["history"]
        .as_array()
        .map(|h| h.iter().filter(|c| c["status"] == "retrying").count());
    assert_eq!(retrying, Some(2), "{task}");

    // not enough retries: the task fails after 2 attempts
    server.post("/python/reload", json!({"alias": "a"})).await;
    let mut flaky = call("flaky", "a", "flaky", json!([5]));
    flaky["retries"] = json!(1);
    let id = submit(&server, json!({"name": "retry", "steps": [flaky]})).await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "failed");
    assert_eq!(step(&task, "flaky")["attempts"], 2);
    assert!(
        task["error"]
            .as_str()
            .unwrap_or("")
            .contains("flaky failure 2"),
        "{task}"
    );

    // an optional step's failure does not fail the task; its dependents still run
    let mut broken = call("broken", "a", "double", json!([]));
    broken["optional"] = json!(true);
    let mut after = call("after", "a", "double", json!([5]));
    after["depends_on"] = json!(["broken"]);
    let id = submit(
        &server,
        json!({"name": "optional", "steps": [broken, after]}),
    )
    .await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(step(&task, "broken")["status"], "failed");
    assert_eq!(step(&task, "after")["result"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_pass_earlier_results_into_later_steps() {
    let server = TestServer::start().await;
    server.load("task_fixture", "a").await;
    let id = submit(
        &server,
        json!({"name": "pipeline", "steps": [
            call("first", "a", "double", json!([21])),
            {"id": "second", "kind": "script", "code": "inputs['x'] + 1", "inputs": {"x": "first"}},
            {"id": "third", "kind": "call", "alias": "a", "function_name": "double",
             "inputs": {"x": "second"}},
            {"id": "label", "kind": "call", "alias": "a", "function_name": "stamp",
             "args": ["deep"]},
            {"id": "pick", "kind": "script", "code": "inputs['l']", "inputs": {"l": "label.label"}},
        ]}),
    )
    .await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(step(&task, "first")["result"], 42);
    assert_eq!(step(&task, "second")["result"], 43);
    assert_eq!(step(&task, "third")["result"], 86);
    assert_eq!(step(&task, "pick")["result"], "deep");

    // a path that is not in the result fails that step, naming it
    let id = submit(
        &server,
        json!({"name": "bad-path", "steps": [
            call("first", "a", "double", json!([1])),
            {"id": "second", "kind": "script", "code": "1", "inputs": {"x": "first.nope"}},
        ]}),
    )
    .await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "failed");
    assert!(
        step(&task, "second")["error"]
            .as_str()
            .unwrap_or("")
            .contains("has no \"nope\""),
        "{task}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_steps() {
    let server = TestServer::start().await;
    server.load("task_fixture", "a").await;
    let mut after = call("after", "a", "double", json!([1]));
    after["depends_on"] = json!(["nap"]);
    let id = submit(
        &server,
        json!({"name": "long", "steps": [call("nap", "a", "nap", json!([30])), after]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, body) = server
        .request(reqwest::Method::DELETE, &format!("/tasks/{id}"))
        .send()
        .await
        .expect("delete")
        .json::<Value>()
        .await
        .map(|b| (StatusCode::OK, b))
        .expect("json");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "cancelled", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(step(&body["data"], "nap")["status"], "cancelled");
    assert_eq!(step(&body["data"], "after")["status"], "skipped");
    // the guest was stopped: the tool answers at once
    let started = Instant::now();
    server.call_ok("a", "double", json!([1])).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // a finished task is deleted by DELETE; then it is gone
    let response = server
        .request(reqwest::Method::DELETE, &format!("/tasks/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = server.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tasks_are_refused_naming_the_steps() {
    let server = TestServer::start().await;
    let mut a = call("a", "x", "f", json!([]));
    a["depends_on"] = json!(["b"]);
    let mut b = call("b", "x", "f", json!([]));
    b["depends_on"] = json!(["a"]);
    for (task, says) in [
        (
            json!({"name": "t", "steps": [a, b]}),
            r#"the steps "a", "b" form a dependency cycle"#,
        ),
        (
            json!({"name": "t", "steps": [call("a", "x", "f", json!([])), call("a", "x", "f", json!([]))]}),
            r#"duplicate step id "a""#,
        ),
        (
            json!({"name": "t", "steps": [{"id": "a", "kind": "call", "alias": "x", "function_name": "f", "depends_on": ["zzz"]}]}),
            r#"step "a" depends on unknown step "zzz""#,
        ),
        (
            json!({"name": "t", "steps": [{"id": "a", "kind": "warp"}]}),
            "unknown kind",
        ),
        (json!({"name": "t", "steps": []}), "1 to 64 steps"),
        (json!({"steps": []}), "name"),
        (
            json!({"name": "t", "steps": [{"id": "a", "kind": "script", "code": "1", "script_name": "x"}]}),
            "exactly one of code and script_name",
        ),
    ] {
        let (status, body) = server.post("/tasks", task.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{task}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(says), "{task}: {message}");
    }
    let (status, _) = server.get("/tasks/nonexistent").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get("/tasks?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.get("/tasks?status=weird").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_list_pages_and_filters() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = submit(
            &server,
            json!({"name": format!("t{n}"), "steps": [{"id": "s", "kind": "script", "code": "1"}]}),
        )
        .await;
        finished(&server, &id).await;
        ids.push(id);
    }
    let (_, body) = server.get("/tasks?limit=2").await;
    let page: Vec<&str> = body["data"]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["task_id"].as_str())
        .collect();
    assert_eq!(
        page,
        [ids[4].as_str(), ids[3].as_str()],
        "newest first: {body}"
    );
    let cursor = body["data"]["next_cursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let (_, body) = server.get(&format!("/tasks?limit=2&cursor={cursor}")).await;
    assert_eq!(
        body["data"]["tasks"][0]["task_id"],
        ids[2].as_str(),
        "{body}"
    );
    let (_, body) = server.get("/tasks?status=succeeded&limit=100").await;
    assert_eq!(body["data"]["tasks"].as_array().map(Vec::len), Some(5));
    assert_eq!(body["data"]["next_cursor"], json!(null));
    let (_, body) = server.get("/tasks?status=failed").await;
    assert_eq!(body["data"]["tasks"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_task_routes_run_a_script() {
    let server = TestServer::start().await;
    let (status, body) = server
        .post(
            "/api/tasks/script",
            json!({"scriptContent": "result = sum(args)", "args": [1, 2, 3], "timeout": 5,
                   "retryCount": 1, "moduleImports": ["math"], "requirements": ["numpy"]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["data"]["task_id"].as_str().expect("id").to_owned();
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "succeeded", "{task}");
    let (status, body) = server.get(&format!("/api/tasks/status/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "succeeded");
    assert_eq!(body["data"]["steps"][0]["result"], 6, "{body}");

    // scriptName runs a script of the scripts folder; a missing requirement fails clearly
    let (_, body) = server
        .post(
            "/api/tasks/script",
            json!({"scriptContent": "1", "requirements": ["surely-not-installed"]}),
        )
        .await;
    let id = body["data"]["task_id"].as_str().expect("id").to_owned();
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "failed");
    assert!(
        task["error"]
            .as_str()
            .unwrap_or("")
            .contains("surely_not_installed"),
        "{task}"
    );

    // active lists the running ones; cancel stops one
    let (_, body) = server
        .post(
            "/api/tasks/script",
            json!({"scriptContent": "import time\ntime.sleep(30)"}),
        )
        .await;
    let id = body["data"]["task_id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, body) = server.get("/api/tasks/active").await;
    assert!(
        body["data"]["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["task_id"] == id.as_str())),
        "{body}"
    );
    let response = server
        .request(reqwest::Method::DELETE, &format!("/api/tasks/cancel/{id}"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), StatusCode::OK);
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "cancelled");
    // cancelling it again: it already finished
    let response = server
        .request(reqwest::Method::DELETE, &format!("/api/tasks/cancel/{id}"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), StatusCode::CONFLICT);
    for bad in [
        json!({}),
        json!({"scriptContent": "1", "scriptName": "x"}),
        json!({"scriptName": "../x"}),
        json!({"scriptContent": "1", "timeout": -1}),
        json!({"scriptContent": "1", "moduleImports": ["os; rm"]}),
    ] {
        let (status, body) = server.post("/api/tasks/script", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_ne!(code(&body), "<none>");
    }
}

/// A custom step kind, as a library user adds one (see runtime/examples/custom_task.rs):
/// doubles its input `n`.
struct Twice;

impl scriptbox::tasks::Task for Twice {
    fn kind(&self) -> &'static str {
        "twice"
    }

    fn validate(
        &self,
        params: &std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>,
        inputs: &[&str],
    ) -> Result<(), String> {
        scriptbox::tasks::kinds::only(params, &[])?;
        if inputs != ["n"] {
            return Err("twice takes exactly one input, n".into());
        }
        Ok(())
    }

    fn run<'a>(
        &'a self,
        ctx: scriptbox::tasks::StepContext<'a>,
    ) -> scriptbox::tasks::StepFuture<'a> {
        Box::pin(async move {
            let n: i64 = ctx
                .inputs
                .get("n")
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .ok_or("n must be an integer")?;
            serde_json::value::to_raw_value(&(2 * n)).map_err(|e| e.to_string())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_step_kind_runs_beside_the_builtin_ones() {
    let mut kinds = scriptbox::tasks::Kinds::builtin();
    kinds.register(std::sync::Arc::new(Twice));
    let server = TestServer::start_with_kinds(|_, _| {}, kinds).await;
    let id = submit(
        &server,
        json!({"name": "custom", "steps": [
            {"id": "seed", "kind": "script", "code": "21"},
            {"id": "double", "kind": "twice", "inputs": {"n": "seed"}},
        ]}),
    )
    .await;
    let task = finished(&server, &id).await;
    assert_eq!(step(&task, "double")["result"], 42, "{task}");
    let (status, body) = server
        .post(
            "/tasks",
            json!({"name": "t", "steps": [{"id": "x", "kind": "twice"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("exactly one input")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_quotas_are_obeyed_and_enforced() {
    let server = TestServer::start_with(|c| {
        c.quotas.max_running_tasks = 1;
        c.quotas.max_tasks = 3;
        c.quotas.task_store_bytes = 100;
    })
    .await;
    let sleeper = json!({"name": "s", "steps": [{"id": "s", "kind": "script", "code": "import time\ntime.sleep(30)"}]});
    let quick =
        |code: &str| json!({"name": "q", "steps": [{"id": "q", "kind": "script", "code": code}]});
    // one running at a time
    let long = submit(&server, sleeper.clone()).await;
    let (status, body) = server.post("/tasks", quick("1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "too_many_tasks");
    server
        .request(reqwest::Method::DELETE, &format!("/tasks/{long}"))
        .send()
        .await
        .expect("cancel");
    // three kept at most (the cancelled one counts until deleted)
    let first = submit(&server, quick("1")).await;
    finished(&server, &first).await;
    let second = submit(&server, quick("'x' * 150")).await;
    finished(&server, &second).await;
    let (status, body) = server.post("/tasks", quick("1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // deleting frees room, but the 150-byte result is over the 100-byte store quota
    server
        .request(reqwest::Method::DELETE, &format!("/tasks/{long}"))
        .send()
        .await
        .expect("delete");
    let (status, body) = server.post("/tasks", quick("1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("bytes of results"),
        "{body}"
    );
    server
        .request(reqwest::Method::DELETE, &format!("/tasks/{second}"))
        .send()
        .await
        .expect("delete");
    let third = submit(&server, quick("2")).await;
    assert_eq!(finished(&server, &third).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cancelled_while_queued_leaves_the_tool_alone() {
    let server = TestServer::start().await;
    server.load("task_fixture", "a").await;
    // keep the tool busy for 2 s
    let (status, _) = server
        .post(
            "/python/callAsync",
            json!({"alias": "a", "function_name": "nap", "args": [2]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // a step queued behind it gives up (300 ms + the runner's grace) before it ever runs
    let mut queued = call("queued", "a", "double", json!([1]));
    queued["timeout_ms"] = json!(300);
    let id = submit(&server, json!({"name": "q", "steps": [queued]})).await;
    let task = finished(&server, &id).await;
    assert_eq!(task["status"], "failed", "{task}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // the job it left in the queue was skipped: the tool's instance was never replaced
    let (_, body) = server.get("/python/list").await;
    assert_eq!(body["data"]["tools"][0]["resets"], 0, "{body}");
    let data = server.call_ok("a", "double", json!([4])).await;
    assert_eq!(data["result"], 8);
    assert_eq!(data["state_reset"], false);
}
