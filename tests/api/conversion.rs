//! The conversion table (`docs/api.md`), both ways: values made in Python as JSON, and JSON
//! as the Python values a function receives, for every JSON type and the tagged ones.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::{Value, json};

async fn made(server: &TestServer, kind: &str) -> Value {
    server.call_ok("c", "make", json!([kind])).await["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_values_become_json() {
    let server = TestServer::start().await;
    server.load("conversion_fixture", "c").await;
    for (kind, expected) in [
        ("bytes", json!({"$bytes": "AP9oaQ=="})),
        ("bytearray", json!({"$bytes": "YWI="})),
        ("memoryview", json!({"$bytes": "eHl6"})),
        ("set", json!([1, 2, 3])),
        ("frozenset", json!(["a", "b"])),
        (
            "datetime",
            json!({"$datetime": "2026-11-24T05:30:01.250000+00:00"}),
        ),
        (
            "naive_datetime",
            json!({"$datetime": "2026-01-02T03:04:05"}),
        ),
        ("date", json!({"$date": "2026-11-24"})),
        ("time", json!({"$time": "23:59:58"})),
        ("tuple", json!([1, [2, "three"]])),
        ("unicode", json!("é 漢字 🚀 \u{0000} \"quoted\"")),
        ("float", json!(0.1)),
        ("negative_zero", json!(-0.0)),
        ("big_float", json!(1e308)),
        ("small_float", json!(5e-324)),
        ("bool", json!(true)),
        (
            "nested_bytes",
            json!({"payload": [{"$bytes": "YQ=="}, {"deep": {"$bytes": "Yg=="}}]}),
        ),
    ] {
        assert_eq!(made(&server, kind).await, expected, "{kind}");
    }
    // a set whose items do not sort keeps its own order, but holds them all
    let mixed = made(&server, "mixed_set").await;
    let mut items: Vec<String> = mixed
        .as_array()
        .expect("array")
        .iter()
        .map(Value::to_string)
        .collect();
    items.sort();
    assert_eq!(items, ["\"a\"", "1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_json_cannot_hold_are_refused_by_name() {
    let server = TestServer::start().await;
    server.load("conversion_fixture", "c").await;
    for (kind, named) in [
        ("complex", "complex"),
        ("decimal", "decimal.Decimal"),
        ("function", "function"),
        ("self_list", "contains itself"),
        ("deep", "deeper than 100"),
        ("str_subclass_key", "dict key of type float"),
    ] {
        let (status, body) = server.call("c", "make", json!([kind]), json!({})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {body}");
        assert_eq!(code(&body), "unserializable_result", "{kind}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(named), "{kind}: {message}");
        assert_eq!(body["error"]["details"]["state_reset"], false, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_arrive_as_python_values() {
    let server = TestServer::start().await;
    server.load("conversion_fixture", "c").await;
    let (status, body) = server
        .call(
            "c",
            "describe",
            json!([
                null, true, 7, -1.5, "é🚀", [1, [2]], {"k": {}},
                {"$bytes": "AP8="},
                {"$datetime": "2026-11-24T05:30:00+00:00"},
                {"$date": "2026-11-24"},
                {"$time": "12:00:00"},
                {"$bytes": 5},
                {"$other": "x"},
                {"$bytes": "AA==", "and": 1}
            ]),
            json!({"when": {"$date": "2000-01-01"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let args = &body["data"]["result"]["args"];
    let expected = [
        json!({"NoneType": "None"}),
        json!({"bool": "True"}),
        json!({"int": "7"}),
        json!({"float": "-1.5"}),
        json!({"str": "'é🚀'"}),
        json!({"list": [{"int": "1"}, {"list": [{"int": "2"}]}]}),
        json!({"dict": {"k": {"dict": {}}}}),
        json!({"bytes": "b'\\x00\\xff'"}),
        json!({"datetime": "datetime.datetime(2026, 11, 24, 5, 30, tzinfo=datetime.timezone.utc)"}),
        json!({"date": "datetime.date(2026, 11, 24)"}),
        json!({"time": "datetime.time(12, 0)"}),
        // not tags: a non-string value, an unknown tag, more than one key
        json!({"dict": {"$bytes": {"int": "5"}}}),
        json!({"dict": {"$other": {"str": "'x'"}}}),
        json!({"dict": {"$bytes": {"str": "'AA=='"}, "and": {"int": "1"}}}),
    ];
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(&args[i], want, "argument {i}");
    }
    assert_eq!(
        body["data"]["result"]["kwargs"]["when"],
        json!({"date": "datetime.date(2000, 1, 1)"})
    );

    // tagged values survive a round trip exactly
    for value in [
        json!({"$bytes": "AP9oaQ=="}),
        json!({"$datetime": "2026-11-24T05:30:01.250000+00:00"}),
        json!({"$date": "2026-11-24"}),
        json!({"$time": "23:59:58"}),
        json!([{"$bytes": ""}, {"x": {"$date": "1999-12-31"}}]),
    ] {
        let data = server.call_ok("c", "echo", json!([value])).await;
        assert_eq!(data["result"], value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tagged_argument_is_a_client_error() {
    let server = TestServer::start().await;
    server.load("conversion_fixture", "c").await;
    for bad in [
        json!({"$bytes": "A"}),
        json!({"$bytes": "@@@@"}),
        json!({"$datetime": "yesterday"}),
        json!({"$date": "2026-13-01"}),
        json!({"$time": "25:00"}),
    ] {
        let (status, body) = server.call("c", "echo", json!([bad]), json!({})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("does not parse"), "{bad}: {message}");
    }
    // the tool is unharmed
    let data = server.call_ok("c", "echo", json!([1])).await;
    assert_eq!(data["state_reset"], false);
}
