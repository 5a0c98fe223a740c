//! Guest code working against the sandbox: files, processes, the network, every limit, and
//! the protocol it shares with the driver.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use scriptbox_tests::code;
use serde_json::{Value, json};

use crate::{armed, attack_ok, still_serves};

async fn failed_with(result: &Value, errors: &[&str]) {
    assert_eq!(result["ok"], false, "{result}");
    let error = result["error"].as_str().unwrap_or("");
    assert!(errors.contains(&error), "{result} not one of {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_host_files_fails() {
    let server = armed(|_| {}).await;
    for path in [
        "/etc/passwd",
        "/etc/shadow",
        "/proc/self/environ",
        "/proc/self/maps",
        "/sys/kernel/hostname",
        "/scripts/../../../../etc/passwd",
        "/tmp/../../etc/passwd",
        "/usr/local/lib/../../../etc/passwd",
    ] {
        let result = attack_ok(&server, "read", json!([path])).await;
        failed_with(
            &result,
            &["FileNotFoundError", "PermissionError", "OSError"],
        )
        .await;
    }
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_outside_scratch_fails() {
    let server = armed(|_| {}).await;
    for path in [
        "/scripts/evil.py",
        "/usr/local/lib/evil.py",
        "/scriptbox/evil.py",
        "/evil",
    ] {
        let result = attack_ok(&server, "write", json!([path])).await;
        failed_with(
            &result,
            &["PermissionError", "FileNotFoundError", "OSError"],
        )
        .await;
    }
    assert!(!server.scripts_dir.join("evil.py").exists());
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_holds_nothing_of_the_host() {
    // SAFETY-free check: a secret in the server's own environment must not reach the guest.
    let server = armed(|_| {}).await;
    let env = attack_ok(&server, "environ", json!([])).await;
    let keys: Vec<&String> = env.as_object().expect("env").keys().collect();
    assert_eq!(keys, vec!["PYTHONDONTWRITEBYTECODE"], "{env}");
    let paths = attack_ok(&server, "host_paths", json!([])).await;
    let text = paths.to_string();
    assert!(
        !text.contains(server.data_dir.to_str().expect("utf-8")),
        "{text}"
    );
    assert!(!text.contains("/home/"), "{text}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_fail() {
    let server = armed(|_| {}).await;
    let result = attack_ok(&server, "sockets", json!([])).await;
    assert_eq!(result["ok"], false, "{result}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocesses_fail() {
    let server = armed(|_| {}).await;
    let result = attack_ok(&server, "subprocess_run", json!([])).await;
    assert_eq!(result["ok"], false, "{result}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_fails() {
    let server = armed(|_| {}).await;
    let result = attack_ok(&server, "fork", json!([])).await;
    failed_with(&result, &["AttributeError", "OSError", "PermissionError"]).await;
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_fail() {
    let server = armed(|_| {}).await;
    let result = attack_ok(&server, "thread", json!([])).await;
    failed_with(
        &result,
        &["RuntimeError", "ModuleNotFoundError", "ImportError"],
    )
    .await;
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_stopped_by_fuel() {
    let server = armed(|_| {}).await;
    let (status, body) = server.call("a", "spin", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "fuel_exhausted");
    assert_eq!(body["error"]["details"]["state_reset"], true);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_stopped_by_the_deadline() {
    let server = armed(|c| c.limits.fuel = u64::MAX / 2).await;
    server
        .load_limited("attacker", "slow", json!({"deadline_ms": 300}))
        .await;
    let started = Instant::now();
    let (status, body) = server.call("slow", "spin", json!([]), json!({})).await;
    assert_eq!(code(&body), "deadline_exceeded", "{status} {body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_past_the_deadline_is_stopped() {
    let server = armed(|_| {}).await;
    server
        .load_limited("attacker", "slow", json!({"deadline_ms": 300}))
        .await;
    let started = Instant::now();
    let (_, body) = server.call("slow", "sleep", json!([3600]), json!({})).await;
    assert_eq!(code(&body), "deadline_exceeded", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_gets_memory_error() {
    let server = armed(|_| {}).await;
    server
        .load_limited("attacker", "small", json!({"memory_bytes": 128u64 << 20}))
        .await;
    let (status, body) = server
        .call("small", "memory_bomb", json!([]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "python_exception");
    assert_eq!(body["error"]["details"]["type"], "MemoryError", "{body}");
    // the instance is replaced afterwards, so its grown memory goes back to the host
    assert_eq!(body["error"]["details"]["state_reset"], true);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursion_bomb_gets_recursion_error() {
    let server = armed(|_| {}).await;
    let (status, body) = server
        .call("a", "recursion_bomb", json!([]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["type"], "RecursionError", "{body}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_in_c_code_is_contained() {
    let server = armed(|_| {}).await;
    let (status, body) = server
        .call("a", "c_recursion_bomb", json!([]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // CPython's C recursion guard answers RecursionError; were it to miss, the wasm stack
    // guard traps and the instance is replaced. Either way the host is untouched.
    let contained =
        body["error"]["details"]["type"] == "RecursionError" || code(&body) == "guest_crashed";
    assert!(contained, "{body}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_flood_is_cut_at_the_cap() {
    let server = armed(|_| {}).await;
    server
        .load_limited("attacker", "loud", json!({"output_bytes": 100_000}))
        .await;
    let (status, body) = server.call("loud", "flood", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "output_limit", "{body}");
    assert!(
        body.to_string().len() < 400_000,
        "the reply itself is bounded"
    );
    still_serves(&server).await;
}

/// The scratch folder of the local tenant's tool `alias`.
fn tool_scratch(server: &scriptbox_tests::TestServer, alias: &str) -> std::path::PathBuf {
    let tenant = server.data_dir.join("scratch").join("local");
    std::fs::read_dir(&tenant)
        .expect("tenant scratch")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{alias}.")))
        })
        .expect("the tool's scratch folder")
}

/// Disk bytes under `dir`, as the quota counts them.
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for entry in walk(dir) {
        total += entry
            .symlink_metadata()
            .map(|m| m.blocks() * 512)
            .unwrap_or(0);
    }
    total
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                pending.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_disk_stops_at_the_quota() {
    let quota = 8u64 << 20;
    let server = armed(|c| c.quotas.scratch_bytes = quota).await;
    let result = attack_ok(&server, "fill_disk", json!([])).await;
    assert_eq!(result["errno"], "ENOSPC", "{result}");
    let written = result["written"].as_u64().expect("written");
    assert!(written > 0 && written <= quota, "{result}");
    let scratch = tool_scratch(&server, "a");
    let used = disk_usage(&scratch);
    assert!(used <= quota, "host usage {used} over the quota {quota}");
    // the quota holds on the next call too, with small writes squeezing into the slack
    let again = attack_ok(&server, "fill_disk", json!([4096])).await;
    assert_eq!(again["errno"], "ENOSPC", "{again}");
    let used = disk_usage(&scratch);
    assert!(used <= quota, "host usage {used} over the quota {quota}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scratch_file_behind_a_stdio_number_is_still_charged() {
    let quota = 4u64 << 20;
    let server = armed(|c| c.quotas.scratch_bytes = quota).await;
    let result = attack_ok(&server, "stdio_swap_fill", json!([])).await;
    assert_eq!(result["errno"], "ENOSPC", "{result}");
    let used = disk_usage(&tool_scratch(&server, "a"));
    assert!(used <= quota, "host usage {used} over the quota {quota}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sized_past_the_quota_is_refused() {
    let server = armed(|c| c.quotas.scratch_bytes = 8 << 20).await;
    let within = attack_ok(&server, "sparse_giant", json!([1 << 20])).await;
    assert_eq!(within["ok"], true, "{within}");
    let giant = attack_ok(&server, "sparse_giant", json!([1u64 << 40])).await;
    assert_eq!(giant["ok"], false, "{giant}");
    assert_eq!(giant["errno"], "EFBIG", "{giant}");
    let sizes: u64 = walk(&tool_scratch(&server, "a"))
        .iter()
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(sizes <= 8 << 20, "apparent size {sizes}");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_stop_at_the_file_quota() {
    let server = armed(|c| c.quotas.scratch_files = 50).await;
    let result = attack_ok(&server, "many_files", json!([])).await;
    assert_eq!(result["errno"], "EDQUOT", "{result}");
    assert_eq!(result["made"], 50, "{result}");
    let dirs = attack_ok(&server, "many_dirs", json!([])).await;
    assert_eq!(dirs["errno"], "EDQUOT", "{dirs}");
    // 50 entries, plus the tenant's folder and the two tools' scratch folders themselves
    assert!(walk(&server.data_dir.join("scratch")).len() <= 50 + 3);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_symlinks_and_hard_links_are_refused() {
    let server = armed(|_| {}).await;
    assert_eq!(
        attack_ok(&server, "write", json!(["/tmp/own"])).await["ok"],
        true
    );
    for (function, target) in [
        ("symlink", "/etc/passwd"),
        ("symlink", "../../../../etc/passwd"),
        ("symlink", "/tmp/own"),
        ("hardlink", "/tmp/own"),
        ("hardlink", "/scripts/attacker.py"),
    ] {
        let result = attack_ok(&server, function, json!([target, "/tmp/link"])).await;
        assert_eq!(result["ok"], false, "{function} {target}: {result}");
        assert_eq!(result["errno"], "EPERM", "{function} {target}: {result}");
    }
    let links = walk(&server.data_dir.join("scratch"))
        .into_iter()
        .filter(|p| p.is_symlink() || p.file_name().is_some_and(|n| n == "link"))
        .count();
    assert_eq!(links, 0);
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_descriptor_exhaustion_stops_at_the_quota() {
    let server = armed(|c| c.quotas.max_open_files = 32).await;
    let result = attack_ok(&server, "exhaust_fds", json!([])).await;
    assert_eq!(result["errno"], "EMFILE", "{result}");
    assert!(result["opened"].as_u64().expect("opened") <= 32, "{result}");
    // the descriptors were closed again: the tool still opens files
    assert_eq!(
        attack_ok(&server, "read", json!(["/scripts/my_calc.py"])).await["ok"],
        true
    );
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_fake_frames_are_only_output() {
    let server = armed(|_| {}).await;
    let (status, body) = server.call("a", "fake_frame", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"], "real");
    assert!(
        body["data"]["stdout"]
            .as_str()
            .expect("stdout")
            .contains("forged")
    );
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_stdin_gets_nothing() {
    let server = armed(|_| {}).await;
    let result = attack_ok(&server, "read_stdin", json!([])).await;
    assert_eq!(result, "");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_frame_for_another_call_stops_the_instance() {
    let server = armed(|_| {}).await;
    let (status, body) = server
        .call("a", "forge_wrong_id", json!([]), json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "guest_crashed", "{body}");
    assert_eq!(body["error"]["details"]["state_reset"], true);
    assert!(!body.to_string().contains("forged"));
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hijacked_door_gets_no_extra_fuel_or_time() {
    let server = armed(|c| c.limits.fuel = 200_000_000).await;
    // The tool answers its own call through the door, then keeps the next request and spins
    // on it. The next call is bounded by its own budget, like any other call.
    let (status, body) = server.call("a", "hijack", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"], "hijacked");
    let started = Instant::now();
    let (status, body) = server.call("a", "read_stdin", json!([]), json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "fuel_exhausted", "{body}");
    assert_eq!(body["error"]["details"]["state_reset"], true);
    assert!(started.elapsed() < Duration::from_secs(10));
    // and the replacement instance is clean
    assert_eq!(attack_ok(&server, "read_stdin", json!([])).await, "");
    still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracebacks_show_only_the_tools_own_frames() {
    let server = armed(|_| {}).await;
    let (_, body) = server.call("a", "raise_deep", json!([]), json!({})).await;
    let traceback = body["error"]["details"]["traceback"]
        .as_str()
        .expect("traceback");
    assert!(traceback.contains("/scripts/attacker.py"), "{traceback}");
    assert!(traceback.contains("JSONDecodeError"), "{traceback}");
    for leak in [
        "_scriptbox_driver",
        "/scriptbox/",
        "python315.zip",
        "/home/",
        "/tmp/",
    ] {
        assert!(!traceback.contains(leak), "{leak} in {traceback}");
    }
    let text = body.to_string();
    assert!(!text.contains(server.data_dir.to_str().expect("utf-8")));
    still_serves(&server).await;
}
