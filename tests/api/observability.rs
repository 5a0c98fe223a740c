//! `/metrics`, `/usage`, `/admin/usage`: counters move by exactly the calls made, labels stay
//! bounded under a tenant that makes many aliases, refusals and cancels are counted, and
//! only administrators read the node's figures.

use std::time::Duration;

use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox_tests::{TestServer, copy_scripts, tenant};
use serde_json::{Value, json};

/// The value of the sample `name{labels}` in a Prometheus text, 0 when absent. `labels` is
/// the exact label text, as the server writes it (`tenant="local",tool="a"`).
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let head = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&head))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

async fn scrape(server: &TestServer) -> String {
    let response = server
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_the_calls_made() {
    let server = TestServer::start().await;
    server.load("stream_fixture", "s").await;
    let before = scrape(&server).await;
    for _ in 0..5 {
        server.call_ok("s", "quick", json!([])).await;
    }
    let (status, _) = server
        .post(
            "/python/call",
            json!({"alias": "s", "function_name": "chatty", "args": ["x", 0]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let after = scrape(&server).await;
    let delta =
        |name: &str, labels: &str| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(
        delta(
            "scriptbox_calls_total",
            r#"tenant="local",tool="s",outcome="ok""#
        ),
        5.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "scriptbox_calls_total",
            r#"tenant="local",tool="s",outcome="error""#
        ),
        1.0
    );
    assert_eq!(
        delta(
            "scriptbox_http_requests_total",
            r#"route="/python/call",status="200""#
        ),
        5.0
    );
    assert_eq!(
        delta(
            "scriptbox_call_duration_seconds_count",
            r#"mode="persistent""#
        ),
        6.0
    );
    assert_eq!(
        sample(&after, "scriptbox_tools_loaded", r#"tenant="local""#),
        1.0
    );
    // The raw path of an unknown route never becomes a label.
    let _ = server.get("/no/such/route/abc123").await;
    let text = scrape(&server).await;
    assert!(!text.contains("abc123"));
    assert!(
        text.contains(r#"route="_unmatched",status="404""#),
        "{text}"
    );
    // Usage: the tenant's own view says the same.
    let (status, usage) = server.get("/usage").await;
    assert_eq!(status, StatusCode::OK);
    let usage = &usage["data"];
    assert_eq!(usage["tenant"], "local");
    let calls = usage["since_start"]["calls"].as_u64().expect("calls");
    assert!(calls >= 6, "{usage}");
    assert_eq!(usage["since_start"]["errors"]["error"], 1);
    assert_eq!(usage["last_hour"]["calls"], usage["since_start"]["calls"]);
    assert!(usage["since_start"]["fuel"].as_u64().expect("fuel") > 0);
    assert!(usage["since_start"]["cpu_ms"].as_f64().expect("cpu") > 0.0);
    let tool = usage["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["tool"] == "s")
        .expect("tool s");
    assert_eq!(tool["calls"], 6);
    assert!(tool["max_ms"].as_f64().expect("max") >= tool["mean_ms"].as_f64().expect("mean"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_read_the_node() {
    let server = TestServer::start_in(|config, dir| {
        let shared = dir.join("shared");
        copy_scripts(&shared);
        config.tenants = vec![
            tenant("root", "root-key", &shared, Role::Admin),
            tenant("plain", "plain-key", &shared, Role::Tenant),
        ];
    })
    .await;
    let plain = server.as_key("plain-key");
    for path in ["/metrics", "/admin/usage"] {
        let (status, body) = plain.get(path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = server.as_key("nobody").get("/metrics").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    plain.load("stream_fixture", "p").await;
    plain.call_ok("p", "quick", json!([])).await;
    // A tenant sees its own usage only.
    let (status, mine) = plain.get("/usage").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["data"]["tenant"], "plain");
    assert_eq!(mine["data"]["since_start"]["calls"], 1);
    let (status, all) = server.as_key("root-key").get("/admin/usage").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let tenants = all["data"]["tenants"].as_array().expect("tenants");
    let row = tenants
        .iter()
        .find(|t| t["tenant"] == "plain")
        .expect("plain");
    assert_eq!(row["since_start"]["calls"], 1);
    assert_eq!(row["tools_loaded"], 1);
    assert_eq!(row["aliases"], json!(["p"]));
    assert!(
        all["data"]["recent"]
            .as_array()
            .expect("recent")
            .iter()
            .any(|b| b["calls"].as_u64() >= Some(1))
    );
    // The page needs no key to fetch, and loads nothing from elsewhere.
    let (status, headers, page) = server.get_raw("/admin/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page).expect("html");
    assert!(page.contains("/admin/usage"));
    assert!(!page.contains("http://") || !page.contains("src=\"http"));
    assert!(
        headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("default-src 'none'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_making_many_aliases_cannot_grow_the_series() {
    let server = TestServer::start().await;
    let aliases = scriptbox::metrics::MAX_TOOL_SERIES + 6;
    for i in 0..aliases {
        let alias = format!("hostile{i}");
        server.load("stream_fixture", &alias).await;
        server.call_ok(&alias, "quick", json!([])).await;
        let (status, _) = server.post("/python/unload", json!({"alias": alias})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let text = scrape(&server).await;
    let series = text
        .lines()
        .filter(|l| l.starts_with("scriptbox_calls_total{tenant=\"local\""))
        .count();
    assert_eq!(series, scriptbox::metrics::MAX_TOOL_SERIES + 1, "{text}");
    assert_eq!(
        sample(
            &text,
            "scriptbox_calls_total",
            r#"tenant="local",tool="_other",outcome="ok""#
        ),
        6.0
    );
    assert_eq!(
        sample(
            &text,
            "scriptbox_metric_series_capped_total",
            r#"tenant="local""#
        ),
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_and_a_full_queue_are_counted() {
    let server = TestServer::start_with(|c| {
        c.limits.fuel = u64::MAX / 2;
        c.limits.deadline_ms = 60_000;
        c.queue_depth = 1;
    })
    .await;
    server.load("stream_fixture", "s").await;
    let before = scrape(&server).await;
    // A client that gives up on a spinning call.
    let spinning = {
        let request = server
            .request(reqwest::Method::POST, "/python/call")
            .timeout(Duration::from_millis(1000))
            .json(&json!({"alias": "s", "function_name": "speak_then_spin"}));
        tokio::spawn(request.send())
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One call waits in the queue (depth 1); the next finds it full.
    let queued = tokio::spawn(
        server
            .request(reqwest::Method::POST, "/python/call")
            .json(&json!({"alias": "s", "function_name": "quick"}))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = server
        .post(
            "/python/call",
            json!({"alias": "s", "function_name": "quick"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(spinning.await.expect("join").is_err());
    let queued = queued
        .await
        .expect("join")
        .expect("the queued call is answered");
    assert_eq!(queued.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = scrape(&server).await;
    let delta = |labels: &str| {
        sample(&after, "scriptbox_calls_total", labels)
            - sample(&before, "scriptbox_calls_total", labels)
    };
    assert_eq!(
        delta(r#"tenant="local",tool="s",outcome="cancelled""#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"tenant="local",tool="s",outcome="queue_full""#),
        1.0
    );
    assert!(
        sample(&after, "scriptbox_instances_respawned_total", "")
            > sample(&before, "scriptbox_instances_respawned_total", "")
    );
    let _: Value = server.call_ok("s", "quick", json!([])).await;
}
