//! A task survives a crash: the real binary is killed with SIGKILL mid-task and restarted on
//! the same data dir; the task is still there, marked interrupted, and resumes without
//! re-running the step that had finished.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::serve_in;

async fn get(client: &reqwest::Client, url: String) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json")
}

fn step<'a>(task: &'a Value, id: &str) -> &'a Value {
    task["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or(&Value::Null)
}

/// Polls the task until `done` says so.
async fn until(client: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let body = get(client, url.to_owned()).await;
        if done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_its_tasks_and_resumes_them() {
    let _shared = super::HEAVY.read().await;
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let client = reqwest::Client::new();
    let (mut running, base) = serve_in(&dir, "", &[]);
    let loaded = post(
        &client,
        format!("{base}/python/load"),
        json!({"script_name": "task_fixture", "alias": "t"}),
    )
    .await;
    assert_eq!(loaded["success"], true, "{loaded}");
    let submitted = post(
        &client,
        format!("{base}/tasks"),
        json!({"name": "long", "steps": [
            {"id": "first", "kind": "call", "alias": "t", "function_name": "double", "args": [21]},
            {"id": "wait", "kind": "call", "alias": "t", "function_name": "wait_for",
             "args": ["go.flag"], "depends_on": ["first"], "timeout_ms": 600000},
        ]}),
    )
    .await;
    let id = submitted["data"]["task_id"]
        .as_str()
        .expect("task_id")
        .to_owned();
    let url = format!("{base}/tasks/{id}");
    until(&client, &url, |t| step(t, "wait")["status"] == "running").await;

    running.0.kill().expect("SIGKILL");
    running.0.wait().expect("wait");

    let (_running, base) = serve_in(&dir, "", &[]);
    let url = format!("{base}/tasks/{id}");
    let task = get(&client, url.clone()).await["data"].clone();
    assert_eq!(task["status"], "interrupted", "{task}");
    assert_eq!(step(&task, "first")["status"], "succeeded");
    assert_eq!(step(&task, "first")["result"], 42);
    assert_eq!(step(&task, "wait")["status"], "interrupted");
    let listed = get(&client, format!("{base}/tasks?status=interrupted")).await;
    assert_eq!(
        listed["data"]["tasks"][0]["task_id"],
        id.as_str(),
        "{listed}"
    );

    // the tool came back with the restart (it starts when the resumed step calls it): let
    // the step finish, resume
    let list = get(&client, format!("{base}/python/list")).await;
    assert_eq!(list["data"]["scripts"], json!(["t"]), "{list}");
    std::fs::write(dir.join("scripts/go.flag"), "").expect("flag");
    let resumed = post(&client, format!("{url}/resume"), json!({})).await;
    assert_eq!(resumed["success"], true, "{resumed}");
    let task = until(&client, &url, |t| t["status"] == "succeeded").await;
    assert_eq!(step(&task, "wait")["result"], "go");
    // the finished step was not run again: one attempt, started once
    assert_eq!(step(&task, "first")["attempts"], 1);
    let starts = task["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|c| c["step_id"] == "first" && c["status"] == "running")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(starts, 1, "{task}");
    // resuming a task that succeeded is refused
    let again = client
        .post(format!("{url}/resume"))
        .send()
        .await
        .expect("resume");
    assert_eq!(again.status(), reqwest::StatusCode::CONFLICT);
}
