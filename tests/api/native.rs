//! Trusted native modules over HTTP: the `/module/*` routes (administrators only) with the
//! example modules (`astro_native`, `astro_report`, built by cargo) and a misbehaving fixture,
//! and guest code calling module functions its tenant's policy allows.

use std::path::Path;

use reqwest::StatusCode;
use scriptbox::config::Role;
use scriptbox_tests::{TestServer, code, copy_scripts, install_native_module, tenant};
use serde_json::{Value, json};
use sha2::Digest as _;

/// A server whose modules folder holds `modules` (built and copied in).
async fn with_modules(modules: &[&str]) -> TestServer {
    let modules: Vec<String> = modules.iter().map(|m| (*m).to_owned()).collect();
    TestServer::start_with(move |config| {
        for name in &modules {
            install_native_module(&config.native.modules_dir, name);
        }
    })
    .await
}

/// `(name, state)` of each module in a `/module/list` answer.
fn states(body: &Value) -> Vec<(&str, &str)> {
    body["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or(""),
                m["state"].as_str().unwrap_or(""),
            )
        })
        .collect()
}

/// `astro_report.report` for Vega from Greenwich, over `/module/call`.
async fn report(server: &scriptbox_tests::Api) -> (StatusCode, Value) {
    server
        .post(
            "/module/call",
            json!({"name": "astro_report", "function": "report", "args": VEGA_AT_GREENWICH()}),
        )
        .await
}

fn write_manifest(modules_dir: &Path, name: &str, manifest: Value) {
    let folder = modules_dir.join(name);
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(folder.join("module.json"), manifest.to_string()).expect("manifest");
}

fn modules_dir(server: &TestServer) -> std::path::PathBuf {
    server
        .data_dir
        .parent()
        .expect("server dir")
        .join("modules")
}

const VEGA_AT_GREENWICH: fn() -> Value = || {
    json!({"ra_deg": 279.23473479, "dec_deg": 38.78368896, "latitude_deg": 51.4769,
           "longitude_deg": -0.0005, "unix_s": 1_795_996_800.0})
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_loads_after_its_dependency_and_calls_it_through_the_host() {
    let server = with_modules(&["astro_native", "astro_report"]).await;
    let (status, body) = server.get("/module/list").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let states = states(&body);
    assert_eq!(
        states,
        [("astro_native", "unloaded"), ("astro_report", "unloaded")]
    );

    let (status, body) = server
        .post("/module/load", json!({"name": "astro_report"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["loaded"],
        json!(["astro_native", "astro_report"])
    );
    assert_eq!(body["data"]["state"], "loaded");

    let (status, body) = report(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = &body["data"]["result"];
    // config.json sets the threshold the module's init read.
    assert_eq!(report["min_altitude_deg"], 10.0);
    let altitude = report["altitude_deg"].as_f64().expect("altitude");
    assert_eq!(report["observable"], altitude >= 10.0);

    // The same position straight from the dependency, and from the Python tool.
    let (_, direct) = server
        .post(
            "/module/call",
            json!({"name": "astro_native", "function": "altaz", "args": VEGA_AT_GREENWICH()}),
        )
        .await;
    assert_eq!(direct["data"]["result"]["altitude_deg"], altitude);
    server.load("astronomy_tool", "astro").await;
    let python = server
        .call_ok("astro", "calculate_altitude", vega_at_greenwich_args())
        .await;
    let python_altitude = python["result"]["altitude_deg"]
        .as_f64()
        .expect("python altitude");
    assert!(
        (python_altitude - altitude).abs() < 1e-5,
        "{python_altitude} vs {altitude}"
    );

    let (status, body) = server
        .post("/module/status", json!({"name": "astro_native"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["state"], "loaded");
    assert_eq!(body["data"]["dependents"], json!(["astro_report"]));
    assert_eq!(body["data"]["functions"], json!(["sidereal_time", "altaz"]));
    // Calls from REST and from guests are counted; astro_report reaching it through the host
    // is part of astro_report's call.
    assert_eq!(body["data"]["calls"], 1, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_a_dependency_is_refused_while_its_dependents_are_loaded() {
    let server = with_modules(&["astro_native", "astro_report"]).await;
    server
        .post("/module/load", json!({"name": "astro_report"}))
        .await;
    let (status, body) = server
        .post("/module/unload", json!({"name": "astro_native"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "module_in_use");
    assert_eq!(
        body["error"]["details"]["dependents"],
        json!(["astro_report"])
    );
    let (status, body) = server
        .post("/module/disable", json!({"name": "astro_native"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Reload keeps the dependent consistent: it is loaded again after the new copy.
    let (status, body) = server
        .post("/module/reload", json!({"name": "astro_native"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["loaded"],
        json!(["astro_native", "astro_report"])
    );
    let (status, body) = report(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for name in ["astro_report", "astro_native"] {
        let (status, body) = server.post("/module/unload", json!({"name": name})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["state"], "unloaded");
    }
    let (status, body) = server
        .post(
            "/module/call",
            json!({"name": "astro_native", "function": "altaz", "args": VEGA_AT_GREENWICH()}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "module_state");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_errors_name_the_whole_chain() {
    let server = with_modules(&["astro_native"]).await;
    let dir = modules_dir(&server);
    let manifest = |name: &str, deps: Value| {
        json!({"name": name, "version": "1.0.0", "library": "libnone.so",
               "dependencies": deps, "functions": ["f"]})
    };
    write_manifest(&dir, "cyc_a", manifest("cyc_a", json!(["cyc_b"])));
    write_manifest(&dir, "cyc_b", manifest("cyc_b", json!(["cyc_c"])));
    write_manifest(&dir, "cyc_c", manifest("cyc_c", json!(["cyc_a"])));
    write_manifest(&dir, "top", manifest("top", json!(["middle"])));
    write_manifest(&dir, "middle", manifest("middle", json!(["gone"])));
    write_manifest(
        &dir,
        "too_new",
        manifest("too_new", json!(["astro_native@^2"])),
    );

    let cases = [
        (
            "cyc_a",
            "dependency cycle: cyc_a -> cyc_b -> cyc_c -> cyc_a",
        ),
        (
            "top",
            r#"top -> middle needs "gone", which is not installed"#,
        ),
        (
            "too_new",
            r#"too_new needs "astro_native" ^2, but version 0.1.0 is installed"#,
        ),
    ];
    for (name, message) in cases {
        let (status, body) = server.post("/module/load", json!({"name": name})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        assert_eq!(code(&body), "dependency_error");
        assert_eq!(body["error"]["message"], message);
    }
    // A dependency that fails to load stops its dependents; the links before it stay.
    write_manifest(
        &dir,
        "needs_broken",
        manifest("needs_broken", json!(["astro_native", "broken_lib"])),
    );
    write_manifest(&dir, "broken_lib", manifest("broken_lib", json!([])));
    let (status, body) = server
        .post("/module/load", json!({"name": "needs_broken"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "module_load_failed");
    for (name, state) in [
        ("astro_native", "loaded"),
        ("broken_lib", "error"),
        ("needs_broken", "unloaded"),
    ] {
        let (_, body) = server.post("/module/status", json!({"name": name})).await;
        assert_eq!(body["data"]["state"], state, "{name}: {body}");
    }
    let (status, body) = server
        .post("/module/load", json!({"name": "nowhere"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_that_breaks_its_promises_is_not_loaded() {
    let server = with_modules(&["fixture_native"]).await;
    let dir = modules_dir(&server);
    let folder = dir.join("fixture_native");
    let original = std::fs::read_to_string(folder.join("module.json")).expect("manifest");
    let mut manifest: Value = serde_json::from_str(&original).expect("json");

    // A function the library does not export.
    manifest["functions"] = json!(["echo", "nope"]);
    std::fs::write(folder.join("module.json"), manifest.to_string()).expect("write");
    let (status, body) = server
        .post("/module/load", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "module_load_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not export `scriptbox_fn_nope`")),
        "{body}"
    );
    let (_, status_body) = server
        .post("/module/status", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status_body["data"]["state"], "error");

    // A hash that does not match.
    manifest["functions"] = json!(["echo"]);
    manifest["sha256"] = json!("0".repeat(64));
    std::fs::write(folder.join("module.json"), manifest.to_string()).expect("write");
    let (status, body) = server
        .post("/module/load", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SHA-256")),
        "{body}"
    );

    // An invalid manifest is reported with the reason, in the list and in status.
    std::fs::write(
        folder.join("module.json"),
        r#"{"name": "fixture_native", "colour": 1}"#,
    )
    .expect("write");
    let (status, body) = server
        .post("/module/status", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "invalid_manifest");
    let (_, list) = server.get("/module/list").await;
    assert_eq!(list["data"][0]["state"], "error", "{list}");

    // The right hash loads.
    let library = std::fs::read_dir(&folder)
        .expect("folder")
        .filter_map(Result::ok)
        .find(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "so" || x == "dylib")
        })
        .expect("library")
        .path();
    let digest = hex::encode(sha2::Sha256::digest(
        std::fs::read(&library).expect("library"),
    ));
    manifest["sha256"] = json!(digest);
    std::fs::write(folder.join("module.json"), manifest.to_string()).expect("write");
    let (status, body) = server
        .post("/module/load", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_errors_panics_and_bad_input_are_clear_answers() {
    let server = with_modules(&["fixture_native"]).await;
    let (status, body) = server
        .post("/module/load", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let call = |function: &str, args: Value| json!({"name": "fixture_native", "function": function, "args": args});

    let (status, body) = server
        .post("/module/call", call("echo", json!({"a": [1, 2.5, "x"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"], json!({"a": [1, 2.5, "x"]}));

    let (status, body) = server.post("/module/call", call("fail", json!(null))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "module_error");
    assert_eq!(
        body["error"]["message"],
        "fixture_native.fail failed: fixture failure"
    );

    let (status, body) = server
        .post("/module/call", call("explode", json!(null)))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "module_error");
    assert_eq!(
        body["error"]["message"],
        "fixture_native.explode failed: the module panicked: fixture panic"
    );
    // The server and the module are still there.
    let (status, _) = server.post("/module/call", call("echo", json!(1))).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = server
        .post("/module/call", call("sleep", json!({"ms": "soon"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["message"],
        "fixture_native.sleep failed: ms must be a whole number"
    );

    let (status, body) = server
        .post("/module/call", call("missing", json!(null)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server
        .post_raw(
            "/module/call",
            r#"{"name": "fixture_native", "function": "echo", "args": [1,"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "invalid_json");
    let (status, body) = server
        .post(
            "/module/call",
            json!({"name": "fixture_native", "fn": "echo"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    for (function, available) in [("echo", true), ("nope", false)] {
        let (status, body) = server
            .post(
                "/module/hasFunction",
                json!({"name": "fixture_native", "functionName": function}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["available"], available, "{function}");
    }
    let (status, body) = server
        .post(
            "/module/hasFunction",
            json!({"name": "ghost", "functionName": "echo"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = server
        .post("/module/status", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // fail, explode and sleep's bad argument; an unknown function never reaches the module.
    assert_eq!(body["data"]["failures"], 3, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_module_times_out_and_keeps_its_call_slot() {
    let server = TestServer::start_with(|config| {
        install_native_module(&config.native.modules_dir, "fixture_native");
        config.native.call_timeout_ms = 300;
        config.native.max_concurrent_calls = 1;
    })
    .await;
    server
        .post("/module/load", json!({"name": "fixture_native"}))
        .await;
    let call = |function: &str, args: Value| json!({"name": "fixture_native", "function": function, "args": args});
    // Obeyed: within the timeout.
    let (status, body) = server
        .post("/module/call", call("sleep", json!({"ms": 10})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Violated: the caller gets 504 after 300 ms ...
    let started = std::time::Instant::now();
    let (status, body) = server
        .post("/module/call", call("sleep", json!({"ms": 1500})))
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(code(&body), "module_timeout");
    assert!(started.elapsed() < std::time::Duration::from_millis(1200));
    // ... while the module's thread keeps the only slot until it returns.
    let (status, body) = server.post("/module/call", call("echo", json!(1))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "busy");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, body) = server.post("/module/call", call("echo", json!(2))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_module_is_refused_until_enabled_and_paths_stay_in_the_modules_folder() {
    let server = with_modules(&["fixture_native"]).await;
    let (status, body) = server
        .post("/module/disable", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["state"], "disabled");
    let (status, body) = server
        .post("/module/load", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "module_state");
    for route in ["/module/unload", "/module/reload"] {
        let (status, body) = server.post(route, json!({"name": "fixture_native"})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{route}: {body}");
        assert_eq!(code(&body), "module_state");
    }
    let (_, body) = server
        .post("/module/status", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(body["data"]["state"], "disabled");
    let (status, _) = server
        .post("/module/enable", json!({"name": "fixture_native"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    for path in [
        "../fixture_native",
        "/etc",
        "fixture_native/..",
        "astro_native",
    ] {
        let (status, body) = server
            .post(
                "/module/load",
                json!({"name": "fixture_native", "path": path}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(code(&body), "forbidden_path");
    }
    let (status, body) = server
        .post(
            "/module/load",
            json!({"name": "fixture_native", "path": "fixture_native"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

/// `calculate_altitude` / `native_altitude`'s positional arguments for the same moment.
fn vega_at_greenwich_args() -> Value {
    json!([
        279.23473479,
        38.78368896,
        51.4769,
        -0.0005,
        "2026-11-30T00:00:00Z"
    ])
}

const ADMIN: &str = "admin-key-0123456789-abcdefghij";
const ALLOWED: &str = "allowed-key-0123456789-abcdefgh";
const OTHER: &str = "other-key-0123456789-abcdefghij";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_reach_modules_only_from_guest_code_and_only_as_their_policy_allows() {
    let server = TestServer::start_in(|config, dir| {
        install_native_module(&config.native.modules_dir, "astro_native");
        let scripts = dir.join("tenant-scripts");
        copy_scripts(&scripts);
        let mut allowed = tenant("allowed", ALLOWED, &scripts, Role::Tenant);
        allowed.policy.native_functions = vec!["astro_native.altaz".to_owned()];
        config.tenants = vec![
            tenant("root", ADMIN, &scripts, Role::Admin),
            allowed,
            tenant("other", OTHER, &scripts, Role::Tenant),
        ];
    })
    .await;
    let admin = server.as_key(ADMIN);
    let allowed = server.as_key(ALLOWED);
    let other = server.as_key(OTHER);

    // Only administrators use the module routes.
    for api in [&allowed, &other] {
        let (status, body) = api.get("/module/list").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(code(&body), "forbidden");
        let (status, _) = api
            .post("/module/load", json!({"name": "astro_native"}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = api
            .post(
                "/module/call",
                json!({"name": "astro_native", "function": "altaz"}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    for api in [&allowed, &other] {
        api.load("astronomy_tool", "astro").await;
    }
    // Not loaded yet: the allowed tenant's guest gets a clear error.
    let (status, body) = allowed
        .call(
            "astro",
            "native_altitude",
            vega_at_greenwich_args(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["error"]["details"]["type"], "scriptbox.HostError",
        "{body}"
    );
    assert!(
        body["error"]["details"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("module \"astro_native\" is not loaded (it is unloaded)")),
        "{body}"
    );

    let (status, body) = admin
        .post("/module/load", json!({"name": "astro_native"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let native = allowed
        .call_ok("astro", "native_altitude", vega_at_greenwich_args())
        .await;
    assert_eq!(native["result"]["computed_by"], "astro_native");
    let python = allowed
        .call_ok("astro", "calculate_altitude", vega_at_greenwich_args())
        .await;
    let (a, b) = (
        native["result"]["altitude_deg"].as_f64().expect("native"),
        python["result"]["altitude_deg"].as_f64().expect("python"),
    );
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");

    // The other tenant's policy allows nothing.
    let (status, body) = other
        .call(
            "astro",
            "native_altitude",
            vega_at_greenwich_args(),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["type"], "scriptbox.HostError");
    assert!(
        body["error"]["details"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("astro_native.altaz is not allowed")),
        "{body}"
    );
    // A function the allowed tenant's policy does not name is refused the same way.
    let (status, body) = allowed
        .post(
            "/api/python/execute",
            json!({"code": "import scriptbox\nscriptbox.native('astro_native', 'sidereal_time', unix_s=0, longitude_deg=0)",
                   "mode": "session"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(
        body["details"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("astro_native.sidereal_time is not allowed")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_reloads_and_unloads_never_deadlock() {
    let server = with_modules(&["astro_native", "astro_report"]).await;
    server
        .post("/module/load", json!({"name": "astro_report"}))
        .await;
    // The callers keep calling until the reloads are done (at most 2,000 calls each), so
    // every reload happens while calls are in flight.
    let reloading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let api = (*server).clone();
            let reloading = std::sync::Arc::clone(&reloading);
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while reloading.load(std::sync::atomic::Ordering::Relaxed) && outcomes.len() < 2000
                {
                    let (status, body) = api
                        .post(
                            "/module/call",
                            json!({"name": "astro_report", "function": "report",
                                   "args": VEGA_AT_GREENWICH()}),
                        )
                        .await;
                    outcomes.push((
                        status,
                        code(&body).to_owned(),
                        body["error"]["message"].as_str().unwrap_or("").to_owned(),
                    ));
                }
                outcomes
            })
        })
        .collect();
    for _ in 0..5 {
        let (status, body) = server
            .post("/module/reload", json!({"name": "astro_native"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    reloading.store(false, std::sync::atomic::Ordering::Relaxed);
    let all = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut all = Vec::new();
        for caller in callers {
            all.extend(caller.await.expect("caller"));
        }
        all
    })
    .await
    .expect("every call was answered (no deadlock)");
    // Each call either ran, or met astro_report (409) or its dependency (422 naming it)
    // between unload and load again.
    for (status, code, message) in &all {
        assert!(
            *status == StatusCode::OK
                || (*status == StatusCode::CONFLICT && code == "module_state")
                || (*status == StatusCode::UNPROCESSABLE_ENTITY
                    && code == "module_error"
                    && message.contains("\"astro_native\" is not loaded")),
            "{status} {code} {message}"
        );
    }
    assert!(!all.is_empty());
    // Afterwards both work: no copy was left half torn down.
    let (_, body) = server
        .post("/module/status", json!({"name": "astro_report"}))
        .await;
    assert_eq!(body["data"]["state"], "loaded");
    let (status, body) = report(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loaded_and_disabled_modules_are_restored_after_a_restart() {
    let kept = tempfile::tempdir().expect("tempdir");
    let (data, modules) = (kept.path().join("data"), kept.path().join("modules"));
    for name in ["astro_native", "astro_report", "fixture_native"] {
        install_native_module(&modules, name);
    }
    let start = || {
        let (data, modules) = (data.clone(), modules.clone());
        TestServer::start_with(move |config| {
            config.data_dir = data;
            config.native.modules_dir = modules;
        })
    };
    let server = start().await;
    server
        .post("/module/load", json!({"name": "astro_report"}))
        .await;
    server
        .post("/module/disable", json!({"name": "fixture_native"}))
        .await;
    server.stop().await;

    let server = start().await;
    let (_, body) = server.get("/module/list").await;
    let states = states(&body);
    assert_eq!(
        states,
        [
            ("astro_native", "loaded"),
            ("astro_report", "loaded"),
            ("fixture_native", "disabled")
        ]
    );
    let (status, body) = report(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_step_calls_a_native_function_the_policy_allows() {
    let server = TestServer::start_with(|config| {
        install_native_module(&config.native.modules_dir, "astro_native");
        config.policy.native_functions = vec!["astro_native.sidereal_time".to_owned()];
    })
    .await;
    server
        .post("/module/load", json!({"name": "astro_native"}))
        .await;
    let (status, body) = server
        .post(
            "/tasks",
            json!({"name": "native", "steps": [
                {"id": "where", "kind": "script", "code": "{'longitude_deg': 15.0}"},
                {"id": "lst", "kind": "native", "module": "astro_native",
                 "function": "sidereal_time", "args": {"unix_s": 946_728_000.0},
                 "inputs": {"longitude_deg": "where.longitude_deg"}},
                {"id": "refused", "kind": "native", "module": "astro_native",
                 "function": "altaz", "depends_on": ["lst"], "optional": true}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["data"]["task_id"].as_str().expect("id").to_owned();
    let task = crate::tasks::finished(&server, &id).await;
    let lst = crate::tasks::step(&task, "lst");
    assert_eq!(lst["status"], "succeeded", "{task}");
    let local = lst["result"]["local_sidereal_deg"].as_f64().expect("lst");
    assert!((local - 295.460_618_37).abs() < 1e-6, "{local}");
    let refused = crate::tasks::step(&task, "refused");
    assert_eq!(refused["status"], "failed", "{task}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("astro_native.altaz is not allowed")),
        "{task}"
    );

    let (status, body) = server
        .post(
            "/tasks",
            json!({"name": "bad", "steps": [
                {"id": "x", "kind": "native", "module": "Astro!", "function": "f"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_abandoned_native_calls_cannot_take_every_slot() {
    let server = TestServer::start_with(|config| {
        install_native_module(&config.native.modules_dir, "fixture_native");
        config.native.max_concurrent_calls = 2; // the tenant's share: 1
        config.policy.native_functions = vec!["fixture_native.*".to_owned()];
    })
    .await;
    server
        .post("/module/load", json!({"name": "fixture_native"}))
        .await;
    let sleepy = json!({
        "code": "import scriptbox\nscriptbox.native('fixture_native', 'sleep', ms=1500)",
        "timeout": 0.3,
    });
    // The guest gives up at its deadline; the module's thread sleeps on with the slot.
    let (status, body) = server.post("/api/python/execute", sleepy).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let echo = json!({"code": "import scriptbox\nresult = scriptbox.native('fixture_native', 'echo', [1])"});
    let (status, body) = server.post("/api/python/execute", echo.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["details"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("already has its share of native calls")),
        "{body}"
    );
    // The rest of the slots still serve others (here the administrator's REST call).
    let (status, body) = server
        .post(
            "/module/call",
            json!({"name": "fixture_native", "function": "echo", "args": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, body) = server.post("/api/python/execute", echo).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], json!([1]));
    server.stop().await;
}
