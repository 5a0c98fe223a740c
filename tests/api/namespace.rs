//! The namespace routes: getVariable, setVariable, functions, eval, inject, each with its
//! bad-input cases, all running inside the tool's sandbox.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

/// A response body as text, for values `serde_json::Value` cannot hold exactly.
async fn raw_text(server: &TestServer, path: &str, body: serde_json::Value) -> String {
    server
        .request(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text")
}

async fn server() -> TestServer {
    let server = TestServer::start().await;
    server.load("namespace_fixture", "ns").await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_round_trip_any_json_value() {
    let server = server().await;
    let (status, body) = server
        .post(
            "/python/getVariable",
            json!({"alias": "ns", "variable_name": "GREETING"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"], "hello");
    assert_eq!(body["data"]["variable_name"], "GREETING");
    for value in [
        json!(null),
        json!(true),
        json!(-1.5),
        json!("ünïcødé ✓"),
        json!([1, [2, [3]], {"k": "v"}]),
        json!({"nested": {"list": [1, 2], "none": null}}),
    ] {
        let (status, body) = server
            .post(
                "/python/setVariable",
                json!({"alias": "ns", "variable_name": "STORED", "value": value}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, body) = server
            .post(
                "/python/getVariable",
                json!({"alias": "ns", "variable_name": "STORED"}),
            )
            .await;
        assert_eq!(body["data"]["result"], value);
    }
    // setting a variable the tool's functions read changes what they return
    server
        .post(
            "/python/setVariable",
            json!({"alias": "ns", "variable_name": "GREETING", "value": "hi"}),
        )
        .await;
    assert_eq!(
        server.call_ok("ns", "greet", json!(["Vega"])).await["result"],
        "hi, Vega!"
    );
    // big integers stay exact both ways (checked on the raw text: serde_json's Value would
    // round them)
    let big = "123456789012345678901234567890123456789";
    let (status, _) = server
        .post_raw(
            "/python/setVariable",
            format!(r#"{{"alias": "ns", "variable_name": "BIG", "value": {big}}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = raw_text(
        &server,
        "/python/getVariable",
        json!({"alias": "ns", "variable_name": "BIG"}),
    )
    .await;
    assert!(text.contains(&format!(r#""result":{big}"#)), "{text}");
    // a private (single underscore) variable is readable
    let (_, body) = server
        .post(
            "/python/getVariable",
            json!({"alias": "ns", "variable_name": "_hidden"}),
        )
        .await;
    assert_eq!(body["data"]["result"], 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variable_bad_input() {
    let server = server().await;
    for (route, body, status, want) in [
        (
            "/python/getVariable",
            json!({"alias": "ns", "variable_name": "NOPE"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/python/getVariable",
            json!({"alias": "ns", "variable_name": "__builtins__"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/getVariable",
            json!({"alias": "ns", "variable_name": "os.environ"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/getVariable",
            json!({"alias": "ns", "variable_name": "Telescope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unserializable_result",
        ),
        (
            "/python/getVariable",
            json!({"alias": "nobody", "variable_name": "GREETING"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/python/getVariable",
            json!({"alias": "ns"}),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "/python/setVariable",
            json!({"alias": "ns", "variable_name": "X"}),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "/python/setVariable",
            json!({"alias": "ns", "variable_name": "__class__", "value": 1}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/python/setVariable",
            json!({"alias": "ns", "variable_name": "X", "value": 1, "extra": 2}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (got, reply) = server.post(route, body.clone()).await;
        assert_eq!(got, status, "{route} {body}: {reply}");
        assert_eq!(code(&reply), want, "{route} {body}: {reply}");
    }
    let deep = format!(
        r#"{{"alias":"ns","variable_name":"X","value":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let (status, reply) = server.post_raw("/python/setVariable", deep).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_lists_signatures_from_inspect() {
    let server = server().await;
    let (status, body) = server
        .post("/python/functions", json!({"alias": "ns"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let functions = body["data"]["functions"].as_array().expect("functions");
    let names: Vec<&str> = functions
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    // the tool's own public functions; not the class, the import or private names
    assert_eq!(names, ["greet", "scale", "weird_default"], "{body}");
    let greet = &functions[0];
    assert_eq!(greet["doc"], "Greets someone.");
    assert_eq!(
        greet["signature"],
        "greet(name: str, punctuation: str = '!') -> str"
    );
    assert_eq!(greet["returns"], "str");
    assert_eq!(
        greet["parameters"],
        json!([
            {"name": "name", "kind": "positional_or_keyword", "annotation": "str"},
            {"name": "punctuation", "kind": "positional_or_keyword", "annotation": "str", "default": "!"}
        ])
    );
    let kinds: Vec<&str> = functions[1]["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "positional_or_keyword",
            "positional_or_keyword",
            "var_positional",
            "keyword_only",
            "var_keyword"
        ]
    );
    // a default that is not JSON comes back as null with its repr beside it
    let marker = &functions[2]["parameters"][0];
    assert_eq!(marker["default"], json!(null));
    assert!(
        marker["default_repr"]
            .as_str()
            .expect("repr")
            .starts_with("<object object")
    );
    let (status, _) = server
        .post("/python/functions", json!({"alias": "nobody"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_returns_json_under_the_call_limits() {
    let server = server().await;
    let (status, body) = server
        .post(
            "/python/eval",
            json!({"alias": "ns", "expression": "greet('Deneb', '?') + str(COUNTS['a'])"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"], "hello, Deneb?1");
    let text = raw_text(
        &server,
        "/python/eval",
        json!({"alias": "ns", "expression": "2 ** 100"}),
    )
    .await;
    assert!(
        text.contains(r#""result":1267650600228229401496703205376"#),
        "{text}"
    );
    // statements are not expressions
    let (status, body) = server
        .post(
            "/python/eval",
            json!({"alias": "ns", "expression": "x = 1"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["type"], "SyntaxError", "{body}");
    // the sandbox still holds: no host files
    let (_, body) = server
        .post(
            "/python/eval",
            json!({"alias": "ns", "expression": "open('/etc/passwd').read()"}),
        )
        .await;
    assert_eq!(
        body["error"]["details"]["type"], "FileNotFoundError",
        "{body}"
    );
    // and the limits: a loop that never ends is stopped and the state reset
    server
        .load_limited("namespace_fixture", "tight", json!({"fuel": 50_000_000}))
        .await;
    let (_, body) = server
        .post(
            "/python/eval",
            json!({"alias": "tight", "expression": "[0 for _ in iter(int, 1)]"}),
        )
        .await;
    assert_eq!(code(&body), "fuel_exhausted", "{body}");
    let (status, body) = server
        .post(
            "/python/eval",
            json!({"alias": "ns", "expression": "x\u{0}"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_runs_statements_in_the_tools_namespace() {
    let server = server().await;
    let (status, body) = server
        .post(
            "/python/inject",
            json!({"alias": "ns", "code_snippet": "def shout(x):\n    return x.upper()\nprint('defined')"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["stdout"], "defined\n");
    assert_eq!(
        server.call_ok("ns", "shout", json!(["vega"])).await["result"],
        "VEGA"
    );
    let (status, body) = server
        .post(
            "/python/inject",
            json!({"alias": "ns", "code_snippet": "raise ValueError('no')"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["type"], "ValueError");
    // without an alias the code runs in the session interpreter, not in the tool
    let (status, body) = server
        .post("/python/inject", json!({"code_snippet": "shout = 1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.call_ok("ns", "shout", json!(["a"])).await["result"],
        "A"
    );
    let (status, _) = server
        .post(
            "/python/inject",
            json!({"alias": "ns", "code_snippet": "x" .repeat(300_000)}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
