//! The attack suite: each case tries one way past the sandbox, a quota or another tenant,
//! asserts that it failed and how (error code or guest exception), and then that the server
//! still answers a benign call.
//!
//! A separate test binary from tests/api so the two run side by side under `cargo test`.

mod connection;
mod guest;
mod input;
mod isolation;
mod tenancy;

use reqwest::StatusCode;
use scriptbox_tests::{Api, TestServer};
use serde_json::{Value, json};

/// A keyless server with the attacker fixture loaded as `a` and a benign tool as `calc`.
pub async fn armed(adjust: impl FnOnce(&mut scriptbox::config::Config)) -> TestServer {
    let server = TestServer::start_with(adjust).await;
    server.load("attacker", "a").await;
    server.load("my_calc", "calc").await;
    server
}

/// The benign call every case ends with.
pub async fn still_serves(api: &Api) {
    let (status, body) = api.call("calc", "add", json!([2, 3]), json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "benign call after the attack: {body}"
    );
    assert_eq!(body["data"]["result"], 5);
    let (status, _) = api.get("/health").await;
    assert_eq!(status, StatusCode::OK);
}

/// Calls `a.<function>(*args)` and returns the result, asserting the call itself succeeded.
pub async fn attack_ok(server: &Api, function: &str, args: Value) -> Value {
    let (status, body) = server.call("a", function, args, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{function}: {body}");
    body["data"]["result"].clone()
}
