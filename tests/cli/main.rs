//! The `scriptbox serve` binary itself: config file + env overrides, and graceful shutdown on
//! SIGTERM with an in-flight call that is allowed to finish. (A test target of the `scriptbox`
//! package, see runtime/Cargo.toml, so Cargo builds the binary first.)

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scriptbox::config::SOURCE_ROOT;
use serde_json::{Value, json};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_scriptbox"))
}

/// A scripts folder with the example tools and the test fixtures.
fn scripts_in(dir: &Path) -> PathBuf {
    let scripts = dir.join("scripts");
    std::fs::create_dir_all(&scripts).expect("scripts dir");
    for source in ["scripts", "tests/scripts"] {
        for entry in std::fs::read_dir(Path::new(SOURCE_ROOT).join(source)).expect("read") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "py") {
                std::fs::copy(&path, scripts.join(path.file_name().expect("name"))).expect("copy");
            }
        }
    }
    scripts
}

/// The server process; killed if a test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

mod client;
mod cluster;
mod control_plane_crash;
mod layout;
mod one_build;
mod python_sdk;
mod tasks_crash;

/// The cluster test (whose load and recovery are timed) and the Python tests (whose first
/// run installs a venv) run alone: they take this for writing; every other test that starts
/// servers takes it for reading. On a 2-core machine, anything beside the cluster test's
/// three nodes starved its load (a fresh clone's runs, twice).
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Starts the binary and returns it with the address it logged.
fn serve(config: &str, env: &[(&str, &str)]) -> (Running, String) {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    serve_in(&dir, config, env)
}

/// As [`serve`], with its scripts and data in `dir` (so a restart finds the same data).
fn serve_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> (Running, String) {
    let scripts = scripts_in(dir);
    let file = dir.join("scriptbox.toml");
    std::fs::write(
        &file,
        format!(
            "port = 0\nscripts_dir = {:?}\ndata_dir = {:?}\n{config}",
            scripts,
            dir.join("data")
        ),
    )
    .expect("config");
    let mut command = Command::new(binary());
    command
        .args(["serve", "--config"])
        .arg(&file)
        .env("SCRIPTBOX_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // Everything it logs is also kept in <dir>/server.log, to read when a test fails.
    let mut log = std::fs::File::create(dir.join("server.log")).expect("server.log");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            let _ = tx.send(line);
        }
    });
    // A cold module cache means one compile (minutes); a warm one, milliseconds.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut said = Vec::new();
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|err| {
            panic!(
                "no 'listening' line from the server ({err}); it said:\n{}",
                said.join("\n")
            )
        });
        said.push(line.clone());
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("addr").to_owned();
        }
    };
    (Running(child), format!("http://{addr}"))
}

/// Sends `request`; status 0 when the server is gone (it is killed mid-request).
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_obeys_config_and_env_and_shuts_down_gracefully() {
    let _shared = HEAVY.read().await;
    let (mut running, base) = serve(
        "[limits]\ndeadline_ms = 4000\n",
        &[("SCRIPTBOX_BIND", "127.0.0.1")],
    );
    let client = reqwest::Client::new();
    let loaded: Value = client
        .post(format!("{base}/python/load"))
        .body(r#"{"script_name": "limits_fixture", "alias": "f"}"#)
        .send()
        .await
        .expect("load")
        .json()
        .await
        .expect("json");
    assert_eq!(loaded["data"]["limits"]["deadline_ms"], 4000, "{loaded}");
    // an in-flight call when SIGTERM arrives still completes
    let call = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/python/call");
        async move {
            client
                .post(url)
                .json(&json!({"alias": "f", "function_name": "sleep", "args": [1.0]}))
                .send()
                .await
                .expect("call")
                .json::<Value>()
                .await
                .expect("json")
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&running.0);
    let body = call.await.expect("join");
    assert_eq!(body["data"]["result"], 1.0, "{body}");
    let started = Instant::now();
    loop {
        if let Some(status) = running.0.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "prot = 8000\n").expect("write");
    let output = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("unknown field `prot`"), "{text}");
}

#[test]
fn a_public_bind_without_tenants_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(binary())
        .args(["serve", "--bind", "0.0.0.0", "--port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve 0.0.0.0 without API keys"),
        "{stderr}"
    );
}

#[test]
fn hash_key_prints_the_digest_of_stdin() {
    use std::io::Write as _;
    let mut child = Command::new(binary())
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"test\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}
