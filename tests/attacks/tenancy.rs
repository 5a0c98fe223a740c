//! Tenants against each other and against the key check and quotas.

use std::time::Duration;

use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox_tests::{Api, TestServer, code, copy_scripts, tenant};
use serde_json::json;

use crate::still_serves;

const KEY_A: &str = "key-of-tenant-a-0123456789";
const KEY_B: &str = "key-of-tenant-b-0123456789";
const KEY_ADMIN: &str = "key-of-the-admin-0123456789";

/// A server with tenants `a` and `b` (each its own scripts folder, both with the fixtures)
/// and an `admin`; `a` and `b` each have the benign tool loaded as `calc`.
async fn two_tenants(
    adjust: impl FnOnce(&mut scriptbox::config::Config),
) -> (TestServer, Api, Api) {
    let server = TestServer::start_in(|config, dir| {
        let mut tenants = Vec::new();
        for (id, key, role) in [
            ("a", KEY_A, Role::Tenant),
            ("b", KEY_B, Role::Tenant),
            ("admin", KEY_ADMIN, Role::Admin),
        ] {
            let scripts = dir.join(format!("scripts-{id}"));
            copy_scripts(&scripts);
            tenants.push(tenant(id, key, &scripts, role));
        }
        config.tenants = tenants;
        adjust(config);
    })
    .await;
    let (a, b) = (server.as_key(KEY_A), server.as_key(KEY_B));
    for api in [&a, &b] {
        api.load("my_calc", "calc").await;
    }
    (server, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_key_or_with_a_wrong_one_are_refused() {
    let (server, a, _) = two_tenants(|_| {}).await;
    let (status, body) = server.get("/python/list").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "missing_api_key");
    for wrong in [
        "",
        "nope",
        &KEY_A[..KEY_A.len() - 1],
        &format!("{KEY_A}x"),
        &KEY_A.to_uppercase(),
    ] {
        let (status, body) = server.as_key(wrong).get("/python/list").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert_eq!(code(&body), "invalid_api_key");
    }
    // health needs no key
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    still_serves(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_guessing_is_rate_limited_per_address() {
    let (server, a, _) = two_tenants(|c| c.http.auth_failures_per_minute = 5).await;
    for i in 0..5 {
        let (status, _) = server
            .as_key(&format!("guess-{i}"))
            .get("/python/list")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // past the limit even a correct key from this address gets no answer about itself
    for key in ["guess-5", KEY_A] {
        let response = server
            .as_key(key)
            .request(reqwest::Method::GET, "/python/list")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(code(&body), "too_many_auth_failures");
    }
    // the lockout is for key checks; health still answers
    assert_eq!(server.get("/health").await.0, StatusCode::OK);
    drop(a);
}

/// A key check from `server`'s address with `X-Forwarded-For: forwarded`; its status.
async fn guess_from(server: &TestServer, key: &str, forwarded: &str) -> StatusCode {
    server
        .as_key(key)
        .request(reqwest::Method::GET, "/python/list")
        .header("x-forwarded-for", forwarded)
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_key_guessing_is_limited_per_forwarded_address() {
    let (server, a, _) = two_tenants(|c| {
        c.http.auth_failures_per_minute = 3;
        c.http.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    for i in 0..3 {
        let status = guess_from(&server, &format!("guess-{i}"), "127.0.0.7").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        guess_from(&server, KEY_A, "127.0.0.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // another client behind the same proxy is not locked out
    assert_eq!(
        guess_from(&server, KEY_A, "127.0.0.8").await,
        StatusCode::OK
    );
    // the audit log names the forwarded address
    // (written in the background: read until it is there, at most 2 s)
    let admin = server.as_key(KEY_ADMIN);
    let started = std::time::Instant::now();
    loop {
        let (status, page) = admin.get("/admin/audit?tenant=&limit=50").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let failures: Vec<&serde_json::Value> = page["data"]["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["event"] == "auth_failed")
            .collect();
        if failures.len() >= 4 {
            assert!(
                failures
                    .iter()
                    .all(|e| e["detail"]["client"] == "127.0.0.7"),
                "{page}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_trusted_proxy_x_forwarded_for_is_ignored() {
    let (server, a, _) = two_tenants(|c| c.http.auth_failures_per_minute = 3).await;
    for i in 0..3 {
        let status = guess_from(&server, &format!("guess-{i}"), "127.0.0.7").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // a forged header does not get the guesser a fresh address
    assert_eq!(
        guess_from(&server, KEY_A, "127.0.0.8").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_tools() {
    let (_server, a, b) = two_tenants(|_| {}).await;
    a.load("counter", "a_private").await;
    let listed = b.get("/python/list").await.1;
    assert_eq!(listed["data"]["scripts"], json!(["calc"]), "{listed}");
    // calling, reloading and unloading a's alias with b's key: 404, as if it did not exist
    let (status, body) = b.call("a_private", "increment", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(code(&body), "not_found");
    for route in ["/python/reload", "/python/unload"] {
        let (status, _) = b.post(route, json!({"alias": "a_private"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{route}");
    }
    // the same answer as for an alias nobody has
    let (_, nobody) = b.call("nobody", "increment", json!([]), json!({})).await;
    assert_eq!(nobody["error"]["message"], body["error"]["message"]);
    // a's tool is untouched
    assert_eq!(
        a.call_ok("a_private", "increment", json!([])).await["result"],
        1
    );
    still_serves(&a).await;
    still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_alias_in_two_tenants_are_two_instances() {
    let (_server, a, b) = two_tenants(|_| {}).await;
    a.load("counter", "c").await;
    b.load("counter", "c").await;
    assert_eq!(a.call_ok("c", "increment", json!([])).await["result"], 1);
    assert_eq!(a.call_ok("c", "increment", json!([])).await["result"], 2);
    assert_eq!(b.call_ok("c", "increment", json!([])).await["result"], 1);
    still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_load_or_read_another_tenants_scripts() {
    let (server, a, b) = two_tenants(|_| {}).await;
    // a script only a has
    let a_scripts = server.data_dir.parent().expect("dir").join("scripts-a");
    std::fs::write(
        a_scripts.join("only_a.py"),
        "SECRET = 'a-secret'\ndef get():\n    return SECRET\n",
    )
    .expect("write");
    a.load("only_a", "mine").await;
    let (status, body) = b
        .post(
            "/python/load",
            json!({"script_name": "only_a", "alias": "stolen"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    b.load("attacker", "probe").await;
    let (_, read) = b
        .call("probe", "read", json!(["/scripts/only_a.py"]), json!({}))
        .await;
    assert_eq!(read["data"]["result"]["ok"], false, "{read}");
    still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_another_tenants_scratch() {
    let (_server, a, b) = two_tenants(|_| {}).await;
    a.load("attacker", "w").await;
    b.load("attacker", "r").await;
    let wrote = a
        .call_ok("w", "write", json!(["/tmp/secret.txt", "a-secret"]))
        .await;
    assert_eq!(wrote["result"]["ok"], true);
    assert_eq!(
        a.call_ok("w", "read", json!(["/tmp/secret.txt"])).await["result"]["ok"],
        true
    );
    let read = b.call_ok("r", "read", json!(["/tmp/secret.txt"])).await;
    assert_eq!(read["result"]["ok"], false, "{read}");
    assert_eq!(read["result"]["error"], "FileNotFoundError");
    still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_refused_the_admin_routes() {
    let (server, a, _) = two_tenants(|_| {}).await;
    let (status, body) = a.get("/admin/tenants").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "forbidden");
    let (status, body) = server.as_key(KEY_ADMIN).get("/admin/tenants").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().expect("tenants").len(), 3);
    still_serves(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_is_limited_per_tenant() {
    let (_server, a, b) = two_tenants(|c| {
        c.tenants[0].quotas.requests_per_second = 1;
        c.tenants[0].quotas.burst = 3;
    })
    .await;
    // the load in two_tenants used one; two more pass, then 429
    let mut limited = None;
    for _ in 0..4 {
        let response = a
            .request(reqwest::Method::GET, "/python/list")
            .send()
            .await
            .expect("send");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the rate limit must bite");
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(code(&body), "rate_limited");
    // b is not affected
    still_serves(&b).await;
    // and a recovers once its budget refills
    tokio::time::sleep(Duration::from_millis(1100)).await;
    still_serves(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_and_call_quotas_hold_per_tenant() {
    let (server, a, b) = two_tenants(|c| {
        c.tenants[0].quotas.max_tools = 2;
        c.tenants[0].quotas.max_concurrent_calls = 1;
        c.limits.fuel = u64::MAX / 2;
    })
    .await;
    a.load("attacker", "slow").await;
    let (status, body) = a
        .post(
            "/python/load",
            json!({"script_name": "counter", "alias": "third"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "too_many_tools");
    // b can still load
    b.load("counter", "third").await;
    // one call in flight for a: a second is refused at once
    let sleeper = {
        let a = a.clone();
        tokio::spawn(async move { a.call("slow", "sleep", json!([1.0]), json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = a.call("calc", "add", json!([1, 2]), json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "too_many_calls");
    still_serves(&b).await;
    let (status, _) = sleeper.await.expect("join");
    assert_eq!(status, StatusCode::OK);
    still_serves(&a).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_may_lower_but_never_raise_its_limits() {
    let (_server, a, _) = two_tenants(|c| {
        c.tenants[0].limits = Some(scriptbox::sandbox::Limits {
            fuel: 100_000_000,
            ..Default::default()
        });
        c.tenants[0].default_limits.deadline_ms = Some(2_000);
    })
    .await;
    let (status, body) = a
        .post(
            "/python/load",
            json!({"script_name": "my_calc", "alias": "x", "limits": {"fuel": 100_000_001}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let listed = a.get("/python/list").await.1;
    let calc = &listed["data"]["tools"][0];
    assert_eq!(calc["limits"]["fuel"], 100_000_000, "{listed}");
    assert_eq!(calc["limits"]["deadline_ms"], 2_000, "{listed}");
    // a default may be raised up to the maximum by asking
    let raised = a
        .load_limited("my_calc", "y", json!({"deadline_ms": 5_000}))
        .await;
    assert_eq!(raised["data"]["limits"]["deadline_ms"], 5_000);
    still_serves(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_is_per_tenant() {
    let (_server, a, b) = two_tenants(|c| c.tenants[0].quotas.max_body_bytes = 4096).await;
    let args = json!(["x".repeat(8000), ""]);
    let (status, body) = a.call("calc", "add", args.clone(), json!({})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, body) = b.call("calc", "add", args, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    still_serves(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_overload_sheds_calls_but_health_answers() {
    let (_server, a, b) = two_tenants(|c| {
        c.max_concurrent_calls = 1;
        c.limits.fuel = u64::MAX / 2;
    })
    .await;
    a.load("attacker", "slow").await;
    let sleeper = {
        let a = a.clone();
        tokio::spawn(async move { a.call("slow", "sleep", json!([1.0]), json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = b.call("calc", "add", json!([1, 2]), json!({})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "overloaded");
    assert_eq!(b.get("/health").await.0, StatusCode::OK);
    assert_eq!(b.get("/python/list").await.0, StatusCode::OK);
    assert_eq!(sleeper.await.expect("join").0, StatusCode::OK);
    still_serves(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_tasks_and_globals_are_invisible_to_another() {
    let (_server, a, b) = two_tenants(|_| {}).await;
    let (status, body) = a
        .post(
            "/tasks",
            json!({"name": "secret", "steps": [{"id": "s", "kind": "script", "code": "1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["data"]["task_id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // b cannot see, cancel, delete or resume it, and does not list it
    for path in [format!("/tasks/{id}"), format!("/api/tasks/status/{id}")] {
        let (status, body) = b.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    for (method, path) in [
        (reqwest::Method::DELETE, format!("/tasks/{id}")),
        (reqwest::Method::DELETE, format!("/api/tasks/cancel/{id}")),
        (reqwest::Method::POST, format!("/tasks/{id}/resume")),
    ] {
        let response = b.request(method, &path).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let (_, body) = b.get("/tasks").await;
    assert_eq!(body["data"]["tasks"], json!([]), "{body}");
    let (status, body) = a.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // global variables and registered functions are per tenant too
    a.post(
        "/python/syncVariableToGlobal",
        json!({"name": "secret", "value": "a's"}),
    )
    .await;
    let (_, body) = b
        .post("/python/syncVariableFromGlobal", json!({"name": "secret"}))
        .await;
    assert_eq!(body["data"]["found"], false, "{body}");
}
