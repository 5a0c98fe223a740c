//! exports/discover, exports/all and exports/invoke: get_tool_info() merged with signatures.

use reqwest::StatusCode;
use scriptbox_tests::{TestServer, code};
use serde_json::json;

async fn server() -> TestServer {
    let server = TestServer::start().await;
    server.load("astronomy_tool", "astro").await;
    server.load("my_calc", "calc").await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_merges_tool_info_with_signatures() {
    let server = server().await;
    let (status, body) = server
        .post("/python/exports/discover", json!({"alias": "astro"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    assert_eq!(data["alias"], "astro");
    assert_eq!(data["tool_info"]["name"], "astronomy_tool");
    let names: Vec<&str> = data["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "calculate_altitude",
            "greenwich_sidereal_deg",
            "native_altitude"
        ]
    );
    assert!(
        data["functions"][0]["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "ra_deg")
    );
    // a tool without get_tool_info exports its public functions
    let (_, body) = server
        .post("/python/exports/discover", json!({"alias": "calc"}))
        .await;
    assert_eq!(body["data"]["tool_info"], json!(null));
    assert_eq!(body["data"]["functions"][0]["name"], "add");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_lists_every_tool_and_keeps_going_past_a_broken_one() {
    let server = server().await;
    server.load("broken_info", "broken").await;
    let (status, body) = server.get("/python/exports/all").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["data"].as_array().expect("items");
    let aliases: Vec<&str> = items.iter().filter_map(|i| i["alias"].as_str()).collect();
    assert_eq!(aliases, ["astro", "broken", "calc"]);
    assert_eq!(items[1]["error"]["code"], "python_exception", "{body}");
    assert_eq!(items[1]["error"]["details"]["type"], "RuntimeError");
    assert_eq!(items[2]["functions"][0]["name"], "add");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_calls_exported_functions_with_any_json_kwargs() {
    let server = server().await;
    let (status, body) = server
        .post(
            "/python/exports/invoke",
            json!({"alias": "astro", "function_name": "calculate_altitude", "kwargs": {
                "ra_deg": 37.95, "dec_deg": 89.26, "latitude_deg": 48.0, "utc": "2026-03-20T12:00:00Z"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["data"]["result"]["altitude_deg"]
            .as_f64()
            .expect("altitude")
            > 40.0
    );
    // kwargs of any JSON type reach the function as Python values
    let (_, body) = server
        .post("/python/exports/invoke", json!({"alias": "calc", "function_name": "add", "kwargs": {"a": [1, {"x": null}], "b": ["z"]}}))
        .await;
    assert_eq!(body["data"]["result"], json!([1, {"x": null}, "z"]));
    for (body, status, want) in [
        (
            json!({"alias": "astro", "function_name": "get_tool_info"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"alias": "astro", "function_name": "_private"}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "calc", "function_name": "add", "kwargs": [1, 2]}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "calc", "function_name": "add", "args": [1, 2]}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            json!({"alias": "nobody", "function_name": "add"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (got, reply) = server.post("/python/exports/invoke", body.clone()).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert_eq!(code(&reply), want, "{body}: {reply}");
    }
    let (status, _) = server
        .post("/python/exports/discover", json!({"alias": "nobody"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
