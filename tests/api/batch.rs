//! batchExecute and setErrorHandlingStrategy: results and errors per item, as the tool's
//! strategy says.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::{Value, json};

async fn server() -> TestServer {
    let server = TestServer::start().await;
    server.load("my_calc", "calc").await;
    server.load("counter", "count").await;
    server.load("attacker", "a").await;
    server
}

/// A batch of `add(1, 2)`, `raise_deep()`, `add(3, 4)` on tool `a`.
fn mixed() -> Value {
    json!({"alias": "a", "calls": [
        {"function_name": "read", "args": ["/scripts/my_calc.py"]},
        {"function_name": "raise_deep"},
        {"function_name": "read_stdin"}
    ]})
}

async fn set(server: &TestServer, body: Value) -> (StatusCode, Value) {
    server.post("/python/setErrorHandlingStrategy", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_every_call_in_order() {
    let server = server().await;
    let (status, body) = server
        .post(
            "/python/batchExecute",
            json!({"alias": "calc", "calls": [
                {"function_name": "add", "args": [1, 2]},
                {"function_name": "add", "kwargs": {"a": 10, "b": 20}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["succeeded"], 2);
    assert_eq!(body["data"]["results"][0]["data"]["result"], 3);
    assert_eq!(body["data"]["results"][1]["data"]["result"], 30);
    // the original's form: names only, called without arguments, in order
    let (status, body) = server
        .post(
            "/python/batchExecute",
            json!({"alias": "count", "function_names": ["increment", "increment", "get"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results: Vec<&Value> = body["data"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|item| &item["data"]["result"])
        .collect();
    assert_eq!(results, [&json!(1), &json!(2), &json!(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_decide_what_a_failure_does() {
    let server = server().await;
    // throw (the default): the batch stops at the failure and answers with it
    let (status, body) = server.post("/python/batchExecute", mixed()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "python_exception");
    let results = body["error"]["details"]["results"]
        .as_array()
        .expect("results so far");
    assert_eq!(results.len(), 2, "{body}");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[1]["error"]["code"], "python_exception");

    // return_default for this alias: null with a warning, and the batch goes on
    let (status, body) = set(&server, json!({"strategy": "return_default", "alias": "a"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.post("/python/batchExecute", mixed()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["strategy"], "return_default");
    assert_eq!(body["data"]["failed"], 1);
    let item = &body["data"]["results"][1];
    assert_eq!(item["ok"], false);
    assert_eq!(item["data"]["result"], Value::Null);
    assert_eq!(item["data"]["warning"]["code"], "python_exception");
    assert_eq!(body["data"]["results"][2]["data"]["result"], "");
    // ... and a single call too
    let (status, body) = server.call("a", "raise_deep", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["warning"]["details"]["type"],
        "json.decoder.JSONDecodeError"
    );
    // but not a request the server refuses (bad input stays an error)
    let (status, _) = server
        .call("a", "no_such_function", json!([]), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // log_and_continue (by number, as the original): the error in its item, the batch goes on
    let (status, _) = set(&server, json!({"strategy": 2, "alias": "a"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server.post("/python/batchExecute", mixed()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["results"][1]["error"]["code"],
        "python_exception"
    );
    assert_eq!(body["data"]["results"][2]["ok"], true);
    let (status, _) = server.call("a", "raise_deep", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // the tenant default applies to aliases without their own
    let (status, _) = set(&server, json!({"strategy": 1})).await;
    assert_eq!(status, StatusCode::OK);
    server.load("attacker", "b").await;
    let (status, body) = server.call("b", "raise_deep", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_strategy_bad_input() {
    let server = server().await;
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"function_name": "add", "args": [1, 1]}))
        .collect();
    for (body, status, want) in [
        (
            json!({"alias": "calc", "calls": [], }),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "calc", "calls": many}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "calc"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "calc", "calls": [{"function_name": "add"}], "function_names": ["add"]}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "nobody", "function_names": ["add"]}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"alias": "calc", "calls": [{"function_name": "add", "args": 5}]}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "calc", "calls": [{"function_name": "_private"}]}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (got, reply) = server.post("/python/batchExecute", body.clone()).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert_eq!(code(&reply), want, "{body}: {reply}");
    }
    for body in [
        json!({"strategy": "sometimes"}),
        json!({"strategy": 3}),
        json!({"strategy": -1}),
        json!({"strategy": null}),
        json!({"strategy": "throw", "alias": "../x"}),
        json!({}),
    ] {
        let (status, reply) = set(&server, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
    }
}
