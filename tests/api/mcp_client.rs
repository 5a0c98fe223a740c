//! The MCP endpoint driven by the official Rust SDK's client (`rmcp`, streamable HTTP, the
//! session protocol): list -> call -> a limit hit -> progress -> cancel -> list_changed.
//! (The Python SDK's client drives the same from clients/python/tests/test_mcp.py.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, ProgressNotificationParam, Request,
    ServerResult,
};
use rmcp::service::{
    ClientLifecycleMode, NotificationContext, PeerRequestOptions, RoleClient, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ClientServiceExt as _};
use scriptbox_tests::TestServer;
use serde_json::{Value, json};

/// What the server told the client without being asked.
#[derive(Clone, Default)]
struct Heard {
    list_changes: Arc<tokio::sync::Notify>,
    changes: Arc<Mutex<usize>>,
    progress: Arc<Mutex<Vec<(f64, String, Instant)>>>,
}

impl ClientHandler for Heard {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        *self.changes.lock().expect("lock") += 1;
        self.list_changes.notify_one();
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let message = params.message.unwrap_or_default();
        let at = Instant::now();
        self.progress
            .lock()
            .expect("lock")
            .push((params.progress, message, at));
    }
}

type Client = RunningService<RoleClient, Heard>;

async fn connect(server: &TestServer, heard: Heard) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", server.base));
    let transport = StreamableHttpClientTransport::from_config(config);
    heard
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .expect("the rmcp client connects")
}

fn params(name: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(arguments)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn call(client: &Client, name: &str, arguments: Value) -> CallToolResult {
    client
        .call_tool(params(name, arguments))
        .await
        .expect("tools/call answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rmcp_client_lists_calls_hits_a_limit_streams_cancels_and_hears_changes() {
    let server = TestServer::start().await;
    server
        .load_limited(
            "limits_fixture",
            "lim",
            json!({"fuel": 200_000_000, "deadline_ms": 10_000}),
        )
        .await;
    server.load("stream_fixture", "s").await;
    let heard = Heard::default();
    let client = connect(&server, heard.clone()).await;

    // list
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"s.chatty"), "{names:?}");
    assert!(names.contains(&"run_python"), "{names:?}");
    let chatty = tools.iter().find(|t| t.name == "s.chatty").expect("chatty");
    assert_eq!(chatty.input_schema["required"], json!(["lines", "pause"]));

    // call
    let done = call(
        &client,
        "run_python",
        json!({"code": "sum(args)", "args": [1, 2, 3]}),
    )
    .await;
    assert_ne!(done.is_error, Some(true), "{}", text(&done));
    assert_eq!(done.structured_content, Some(json!({"result": 6})));
    let done = call(&client, "s.quick", json!({})).await;
    assert_eq!(done.structured_content, Some(json!({"result": "quick"})));

    // a limit hit is a tool error that names the limit
    let hit = call(&client, "lim.spin_forever", json!({})).await;
    assert_eq!(hit.is_error, Some(true));
    assert!(text(&hit).starts_with("fuel"), "{}", text(&hit));
    let bad = call(&client, "s.chatty", json!({"lines": 1})).await;
    assert_eq!(bad.is_error, Some(true));
    assert!(text(&bad).contains("pause"), "{}", text(&bad));

    // progress: a cancellable request carries a progress token; the output comes as it runs
    let request = ClientRequest::CallToolRequest(Request::new(params(
        "s.chatty",
        json!({"lines": 3, "pause": 0.3}),
    )));
    let handle = client
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("sent");
    let answer = handle.await_response().await.expect("answer");
    let answered = Instant::now();
    let ServerResult::CallToolResult(done) = answer else {
        panic!("a call result: {answer:?}")
    };
    assert_eq!(done.structured_content, Some(json!({"result": 3})));
    let progress = heard.progress.lock().expect("lock").clone();
    let messages: Vec<&str> = progress.iter().map(|(_, m, _)| m.as_str()).collect();
    assert_eq!(
        messages.concat(),
        "line 0\nline 1\n[stderr] note 1\nline 2\n",
        "{messages:?}"
    );
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");
    assert!(answered - progress[0].2 > Duration::from_millis(400));

    // cancel: the guest stops, the tool answers at once afterwards
    let request =
        ClientRequest::CallToolRequest(Request::new(params("s.speak_then_spin", json!({}))));
    let handle = client
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle
        .cancel(Some("enough".into()))
        .await
        .expect("cancelled");
    let started = Instant::now();
    let done = call(&client, "s.quick", json!({})).await;
    assert_eq!(done.structured_content, Some(json!({"result": "quick"})));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // list_changed on a load and on an unload (the session's GET stream is open by now)
    server.load("stream_fixture", "s2").await;
    tokio::time::timeout(Duration::from_secs(5), heard.list_changes.notified())
        .await
        .expect("list_changed after a load");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "s2.quick"));
    let (status, body) = server.post("/python/unload", json!({"alias": "s2"})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    tokio::time::timeout(Duration::from_secs(5), heard.list_changes.notified())
        .await
        .expect("list_changed after an unload");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(!tools.iter().any(|t| t.name == "s2.quick"));
    assert_eq!(*heard.changes.lock().expect("lock"), 2);
    // A call is not a change.
    call(&client, "s.quick", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*heard.changes.lock().expect("lock"), 2);

    client.cancel().await.expect("closed");
    server.stop().await;
}
