//! The integration guide's Quick Start and Patterns 1-4, verbatim where the guide gives a
//! request.

use reqwest::StatusCode;
use scriptbox_tests::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_curl_commands() {
    let server = TestServer::start().await;
    // curl -X POST .../python/load -H "Content-Type: application/json" -d '{...}'
    let response = server
        .client
        .post(format!("{}/python/load", server.base))
        .header("Content-Type", "application/json")
        .body(r#"{"script_name": "astronomy_tool", "alias": "astro"}"#)
        .send()
        .await
        .expect("load");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let (status, list) = server.get("/python/list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["success"], true);
    assert_eq!(list["data"]["scripts"], json!(["astro"]));
    let (status, body) = server
        .post_raw(
            "/python/call",
            r#"{"alias": "astro", "function_name": "calculate_altitude"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let result = &body["data"]["result"];
    let altitude = result["altitude_deg"].as_f64().expect("altitude");
    assert!((-90.0..=90.0).contains(&altitude), "{result}");
    assert_eq!(result["observer"]["latitude_deg"], 51.4769);
    assert!(body["data"]["fuel_used"].as_u64().expect("fuel") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altitude_is_astronomically_right() {
    let server = TestServer::start().await;
    server.load("astronomy_tool", "astro").await;
    // Polaris stands within a degree of the observer's latitude at any time.
    let (status, body) = server
        .call(
            "astro",
            "calculate_altitude",
            json!([]),
            json!({"ra_deg": 37.95456067, "dec_deg": 89.26410897, "latitude_deg": 48.0,
                   "longitude_deg": 11.0, "utc": "2026-03-20T12:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alt = body["data"]["result"]["altitude_deg"]
        .as_f64()
        .expect("alt");
    assert!((alt - 48.0).abs() < 1.0, "Polaris altitude {alt}");
    // The Sun-free check: at the 2000.0 epoch (JD 2451545.0) GMST is 280.46 degrees.
    let data = server
        .call_ok(
            "astro",
            "greenwich_sidereal_deg",
            json!(["2000-01-01T12:00:00Z"]),
        )
        .await;
    let gmst = data["result"].as_f64().expect("gmst");
    assert!((gmst - 280.46061837).abs() < 1e-6, "{gmst}");
    // Vega from Greenwich, 2026-06-21 00:00 UTC: near the zenith (about 77 degrees).
    let (_, body) = server
        .call(
            "astro",
            "calculate_altitude",
            json!([]),
            json!({"utc": "2026-06-21T00:00:00Z"}),
        )
        .await;
    let alt = body["data"]["result"]["altitude_deg"]
        .as_f64()
        .expect("alt");
    assert!((alt - 77.0).abs() < 3.0, "Vega altitude {alt}");
    let (status, body) = server
        .call(
            "astro",
            "calculate_altitude",
            json!([]),
            json!({"latitude_deg": 123}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["type"], "ValueError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_one_to_four() {
    let server = TestServer::start().await;
    server.load("my_calc", "calc").await;
    server.load("my_data", "data").await;
    server.load("my_class", "myclass").await;
    server.load("my_tool", "tool").await;
    assert_eq!(
        server.call_ok("calc", "add", json!([5, 3])).await["result"],
        8
    );
    assert_eq!(
        server.call_ok("data", "get_status", json!([])).await["result"],
        json!({"status": "ready", "temperature": 25.5})
    );
    assert_eq!(
        server.call_ok("myclass", "add", json!([5, 3])).await["result"],
        8
    );
    assert_eq!(
        server.call_ok("myclass", "get_result", json!([])).await["result"],
        8
    );
    let info = server.call_ok("tool", "get_tool_info", json!([])).await;
    assert_eq!(info["result"]["name"], "my_tool");
    assert_eq!(
        server.call_ok("tool", "process", json!([{"x": 1}])).await["result"],
        json!({"result": {"x": 1}, "mode": "default"})
    );
    assert_eq!(
        server
            .call_ok("tool", "process_data", json!([{"x": 1}]))
            .await["result"],
        json!({"status": "success", "processed": {"x": 1}})
    );
}
