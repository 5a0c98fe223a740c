//! Streamed answers (`Accept: text/event-stream`) and cancel on disconnect, over real HTTP.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use scriptbox_tests::TestServer;
use serde_json::{Value, json};

/// One server-sent event, with when it arrived.
#[derive(Debug)]
struct Event {
    name: String,
    data: String,
    /// The `id` field: the final event's status.
    id: String,
    at: Duration,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// Reads a whole event stream; comments are returned as events named `:`.
async fn read_events(mut response: reqwest::Response, started: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buffer = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        // A network chunk may end inside a character: split at blank lines first.
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buffer.drain(..end + 2).collect();
            let block = std::str::from_utf8(&block).expect("utf-8");
            events.push(parse(block, started.elapsed()));
        }
    }
    assert!(buffer.is_empty(), "unterminated event: {buffer:?}");
    events
}

fn parse(block: &str, at: Duration) -> Event {
    let mut name = String::from("message");
    let mut data = Vec::new();
    let mut id = String::new();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            return Event {
                name: ":".into(),
                data: comment.trim().into(),
                id: String::new(),
                at,
            };
        }
        if let Some(value) = line.strip_prefix("event: ") {
            name = value.into();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push(value);
        } else if let Some(value) = line.strip_prefix("id: ") {
            id = value.into();
        }
    }
    Event {
        name,
        data: data.join("\n"),
        id,
        at,
    }
}

async fn stream(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    let response = server
        .request(reqwest::Method::POST, path)
        .header(ACCEPT, "text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE].to_str().expect("type"),
        "text/event-stream"
    );
    response
}

fn text_of(events: &[Event], name: &str) -> String {
    events
        .iter()
        .filter(|e| e.name == name)
        .map(|e| e.json()["text"].as_str().expect("text").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_arrives_while_the_call_runs_then_one_result() {
    let server = TestServer::start().await;
    server.load("stream_fixture", "s").await;
    let started = Instant::now();
    let response = stream(
        &server,
        "/python/call",
        json!({"alias": "s", "function_name": "chatty", "args": [5, 0.2]}),
    )
    .await;
    let events = read_events(response, started).await;
    let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
    let last = events.last().expect("events");
    assert_eq!(last.name, "result", "{names:?}");
    assert_eq!(last.id, "200");
    assert_eq!(names.iter().filter(|n| **n == "result").count(), 1);
    assert!(!names.contains(&"error"), "{names:?}");
    // The guest computes 0.2 s after each line: the first line is out long before the end.
    let first = events.iter().find(|e| e.name == "stdout").expect("stdout");
    assert!(
        first.at + Duration::from_millis(500) < last.at,
        "first stdout at {:?}, result at {:?}",
        first.at,
        last.at
    );
    let stdout = text_of(&events, "stdout");
    assert_eq!(stdout, "line 0\nline 1\nline 2\nline 3\nline 4\n");
    assert_eq!(text_of(&events, "stderr"), "note 1\nnote 3\n");
    // The last event is the JSON answer the plain call gives.
    let answer = last.json();
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["data"]["result"], 5);
    assert_eq!(answer["data"]["stdout"], stdout);
    let (status, plain) = server
        .post(
            "/python/call",
            json!({"alias": "s", "function_name": "chatty", "args": [5, 0.0]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys = |v: &Value| {
        let mut k: Vec<_> = v["data"]
            .as_object()
            .expect("data")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&plain), keys(&answer));
    assert_eq!(plain["data"]["stdout"], stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_streaming_route_streams_and_failures_end_in_an_error_event() {
    let server = TestServer::start().await;
    server.load("stream_fixture", "s").await;
    let cases = [
        (
            "/python/eval",
            json!({"alias": "s", "expression": "print('e') or 1"}),
            "e\n",
        ),
        (
            "/api/python/execute",
            json!({"code": "print('x')\n2"}),
            "x\n",
        ),
        (
            "/python/executeWithLogging",
            json!({"script_content": "print('w')"}),
            "w\n",
        ),
    ];
    for (path, body, printed) in cases {
        let events = read_events(stream(&server, path, body).await, Instant::now()).await;
        assert_eq!(text_of(&events, "stdout"), printed, "{path}: {events:?}");
        assert_eq!(events.last().expect("last").name, "result", "{path}");
    }
    // A failing call: the stream's last event is `error`, with the JSON error answer.
    let events = read_events(
        stream(
            &server,
            "/api/python/execute",
            json!({"code": "print('before')\nraise ValueError('no')"}),
        )
        .await,
        Instant::now(),
    )
    .await;
    let last = events.last().expect("last");
    assert_eq!(last.name, "error");
    assert_eq!(last.id, "422", "the status the plain answer has");
    assert_eq!(last.json()["error_code"], "python_exception");
    assert_eq!(text_of(&events, "stdout"), "before\n");
    // An unknown tool: still a stream, ending in the 404's JSON.
    let events = read_events(
        stream(
            &server,
            "/python/call",
            json!({"alias": "nope", "function_name": "f"}),
        )
        .await,
        Instant::now(),
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "error");
    assert_eq!(events[0].id, "404");
    assert_eq!(events[0].json()["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_cap_holds_across_a_stream() {
    let server = TestServer::start().await;
    // obeyed: 2,000 bytes under a 4,096-byte cap
    server
        .load_limited("stream_fixture", "s", json!({"output_bytes": 4096}))
        .await;
    let events = read_events(
        stream(
            &server,
            "/python/call",
            json!({"alias": "s", "function_name": "flood", "args": [2000]}),
        )
        .await,
        Instant::now(),
    )
    .await;
    assert_eq!(text_of(&events, "stdout").len(), 2000);
    assert_eq!(events.last().expect("last").name, "result");
    // violated: 20,000 bytes; the stream stops at the cap and ends in output_limit
    let events = read_events(
        stream(
            &server,
            "/python/call",
            json!({"alias": "s", "function_name": "flood", "args": [20000]}),
        )
        .await,
        Instant::now(),
    )
    .await;
    let streamed = text_of(&events, "stdout");
    assert!(streamed.len() <= 4096, "{} bytes streamed", streamed.len());
    assert!(streamed.len() > 3000, "{} bytes streamed", streamed.len());
    let last = events.last().expect("last");
    assert_eq!(last.name, "error");
    assert_eq!(last.json()["error"]["code"], "output_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_bounded_and_characters_whole() {
    let server = TestServer::start().await;
    server.load("stream_fixture", "s").await;
    let events = read_events(
        stream(
            &server,
            "/python/call",
            json!({"alias": "s", "function_name": "wide", "args": [20000]}),
        )
        .await,
        Instant::now(),
    )
    .await;
    let chunks: Vec<String> = events
        .iter()
        .filter(|e| e.name == "stdout")
        .map(|e| e.json()["text"].as_str().expect("text").to_owned())
        .collect();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= 16 << 10));
    assert_eq!(chunks.concat(), "\u{2603}".repeat(20000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_accept_values_get_json() {
    let server = TestServer::start().await;
    server.load("stream_fixture", "s").await;
    for accept in ["application/json", "text/html", "*/*"] {
        let response = server
            .request(reqwest::Method::POST, "/python/call")
            .header(ACCEPT, accept)
            .json(&json!({"alias": "s", "function_name": "quick"}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["data"]["result"], "quick", "{accept}");
    }
    // a route that does not stream answers JSON to a stream request
    let response = server
        .request(reqwest::Method::GET, "/python/list")
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("application/json")
    );
    // bad input to a streaming route: the JSON error, not a stream
    let response = server
        .request(reqwest::Method::POST, "/python/call")
        .header(ACCEPT, "text/event-stream")
        .json(&json!({"alias": "s"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// A server whose tool `s` may spin for a minute: without a cancel, the next call would
/// wait that long.
async fn spin_server() -> TestServer {
    let server = TestServer::start_with(|c| {
        c.limits.fuel = u64::MAX / 2;
        c.limits.deadline_ms = 60_000;
    })
    .await;
    server.load("stream_fixture", "s").await;
    server
}

/// Waits for the tool to answer `quick` again after its caller went away; how long it took.
async fn answered_again(server: &TestServer, gone: Instant) -> (Duration, Value) {
    let (status, body) = server
        .post(
            "/python/call",
            json!({"alias": "s", "function_name": "quick"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (gone.elapsed(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_that_goes_away_stops_the_guest() {
    let server = spin_server().await;
    let mut response = stream(
        &server,
        "/python/call",
        json!({"alias": "s", "function_name": "speak_then_spin"}),
    )
    .await;
    // Wait for the guest to say it started, then hang up.
    let mut seen = String::new();
    while !seen.contains("started") {
        let chunk = response.chunk().await.expect("chunk").expect("more");
        seen.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
    drop(response);
    let gone = Instant::now();
    let (after, body) = answered_again(&server, gone).await;
    eprintln!("stream dropped -> next call answered in {after:?}");
    assert!(after < Duration::from_secs(2), "{after:?}");
    assert_eq!(body["data"]["state_reset"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_that_goes_away_stops_the_guest() {
    let server = spin_server().await;
    let gave_up = server
        .request(reqwest::Method::POST, "/python/call")
        .timeout(Duration::from_millis(500))
        .json(&json!({"alias": "s", "function_name": "speak_then_spin"}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the call should not answer");
    let gone = Instant::now();
    let (after, body) = answered_again(&server, gone).await;
    eprintln!("plain client gone -> next call answered in {after:?}");
    assert!(after < Duration::from_secs(2), "{after:?}");
    assert_eq!(body["data"]["state_reset"], true, "{body}");
}
