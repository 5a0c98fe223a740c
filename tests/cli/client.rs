//! The client verbs of the built `scriptbox` binary against a real server: every verb, the
//! human and `--json` output, and the exit codes (0 success, 1 a tool or sandbox error, 2
//! usage, connection or a refused request) with one line that says what is wrong.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{binary, serve};

const KEY: &str = "client-test-key-0123456789";

const TOOL: &str = "\
def add(a, b):
    return a + b

def greet(name, punctuation='!'):
    print('greeting', name)
    return 'hello ' + name + punctuation

def boom():
    raise ValueError('no good')

def spin():
    while True:
        pass

def slow_talk():
    import time
    print('first', flush=True)
    time.sleep(1.0)
    print('second')
    return 2
";

/// What one run of the client printed, and its exit code.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(base: &str, key: Option<&str>, args: &[&str]) -> Ran {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("SCRIPTBOX_URL", base)
        .env_remove("SCRIPTBOX_API_KEY");
    if let Some(key) = key {
        command.env("SCRIPTBOX_API_KEY", key);
    }
    let output = command.output().expect("the client runs");
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(base: &str, args: &[&str]) -> String {
    let ran = run(base, Some(KEY), args);
    assert_eq!(ran.code, 0, "{args:?}: {}{}", ran.stdout, ran.stderr);
    ran.stdout
}

fn fails(base: &str, key: Option<&str>, args: &[&str], code: i32, says: &str) {
    let ran = run(base, key, args);
    assert_eq!(ran.code, code, "{args:?}: {}{}", ran.stdout, ran.stderr);
    let last = ran.stderr.trim_end().lines().last().unwrap_or("");
    assert!(
        last.contains(says),
        "{args:?}: {last:?} should say {says:?}"
    );
    assert!(
        !ran.stderr.contains("Error {"),
        "a debug dump: {}",
        ran.stderr
    );
}

/// `call` prints the tool's first line while the tool still has a second of work ahead.
fn shows_output_as_it_streams(base: &str) {
    use std::io::BufRead as _;
    let started = std::time::Instant::now();
    let mut child = Command::new(binary())
        .args(["call", "m", "slow_talk"])
        .env("SCRIPTBOX_URL", base)
        .env("SCRIPTBOX_API_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the client runs");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("text");
    let first_at = started.elapsed();
    let rest: Vec<String> = lines.map(|l| l.expect("text")).collect();
    let status = child.wait().expect("exit");
    let ended = started.elapsed();
    assert!(status.success());
    assert_eq!(first, "first");
    assert_eq!(rest, ["second", "2"], "printed once, then the result");
    assert!(
        ended - first_at > std::time::Duration::from_millis(600),
        "first line at {first_at:?}, exit at {ended:?}"
    );
}

#[test]
fn every_client_verb_against_a_real_server() {
    let _shared = super::HEAVY.blocking_read();
    let config = format!(
        "[[tenants]]\nid = \"cli\"\napi_key_sha256 = [{:?}]\nscripts_dir = \"scripts\"\n",
        scriptbox::tenants::hash_key(KEY)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config.replace(
        "scripts_dir = \"scripts\"",
        &format!("scripts_dir = {:?}", dir.path().join("shared")),
    );
    std::fs::create_dir_all(dir.path().join("shared")).expect("shared");
    let (_server, base) = serve(&config, &[]);
    let file = dir.path().join("mathy.py");
    std::fs::write(&file, TOOL).expect("tool");
    let file = file.to_str().expect("path");

    // scripts push / ls
    let pushed = ok(&base, &["scripts", "push", file]);
    assert!(pushed.contains("mathy"), "{pushed}");
    let listed = ok(&base, &["scripts", "ls"]);
    assert!(
        listed.starts_with("name") && listed.contains("mathy"),
        "{listed}"
    );
    // load / ls
    ok(
        &base,
        &["load", "mathy", "--alias", "m", "--fuel", "200000000"],
    );
    let tools = ok(&base, &["ls"]);
    assert!(
        tools
            .lines()
            .any(|l| l.starts_with("m ") && l.contains("mathy")),
        "{tools}"
    );
    // call: JSON arguments, strings as they are, keyword arguments, the tool's output
    assert_eq!(ok(&base, &["call", "m", "add", "2", "3"]).trim(), "5");
    let greeted = ok(
        &base,
        &[
            "call",
            "m",
            "greet",
            "ada",
            "--kwargs",
            r#"{"punctuation": "?"}"#,
        ],
    );
    assert_eq!(greeted, "greeting ada\n\"hello ada?\"\n");
    let json_out = ok(&base, &["--json", "call", "m", "add", "[1]", "[2]"]);
    let answer: Value = serde_json::from_str(json_out.trim()).expect("--json is JSON");
    assert_eq!(answer["data"]["result"], serde_json::json!([1, 2]));
    // a tool error and a sandbox limit: exit 1 with the code
    fails(
        &base,
        Some(KEY),
        &["call", "m", "boom"],
        1,
        "python_exception",
    );
    fails(
        &base,
        Some(KEY),
        &["call", "m", "spin"],
        1,
        "fuel_exhausted",
    );
    // the output shows as it streams, long before the call ends
    shows_output_as_it_streams(&base);
    // exec
    let ran = ok(&base, &["exec", "-c", "print('hi')\nresult = 6 * 7"]);
    assert_eq!(ran, "hi\n42\n");
    let script = dir.path().join("run.py");
    std::fs::write(&script, "result = sum(range(4))\n").expect("file");
    assert_eq!(
        ok(&base, &["exec", script.to_str().expect("path")]).trim(),
        "6"
    );
    fails(
        &base,
        Some(KEY),
        &["exec", "-c", "1/0"],
        1,
        "ZeroDivisionError",
    );
    // tasks submit / ls / show
    let task = dir.path().join("task.json");
    std::fs::write(
        &task,
        r#"{"name": "sum", "steps": [{"id": "a", "kind": "call", "alias": "m", "function_name": "add", "args": [1, 2]}]}"#,
    )
    .expect("task");
    let submitted = ok(
        &base,
        &["--json", "tasks", "submit", task.to_str().expect("path")],
    );
    let submitted: Value = serde_json::from_str(submitted.trim()).expect("json");
    let id = submitted["data"]["task_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let listed = ok(&base, &["tasks", "ls"]);
    assert!(listed.contains(&id) && listed.contains("sum"), "{listed}");
    let shown = ok(&base, &["tasks", "show", &id]);
    assert!(shown.contains("\"steps\""), "{shown}");
    // unload, then the alias is gone
    ok(&base, &["unload", "m"]);
    fails(
        &base,
        Some(KEY),
        &["call", "m", "add", "1", "2"],
        2,
        "not_found",
    );

    // Usage and connection errors: exit 2, one line.
    fails(
        &base,
        Some(KEY),
        &["call", "m", "add", "--kwargs", "nope"],
        2,
        "--kwargs must be a JSON object",
    );
    fails(&base, None, &["ls"], 2, "missing_api_key");
    fails(
        &base,
        Some("wrong-key-0123456789"),
        &["ls"],
        2,
        "invalid_api_key",
    );
    fails(
        "http://127.0.0.1:1",
        Some(KEY),
        &["ls"],
        2,
        "could not be reached",
    );
    fails(
        &base,
        Some(KEY),
        &["scripts", "push", "/no/such/file.py"],
        2,
        "reading /no/such/file.py",
    );
    let bad = dir.path().join("notes.txt");
    std::fs::write(&bad, "x").expect("file");
    fails(
        &base,
        Some(KEY),
        &["scripts", "push", bad.to_str().expect("path")],
        2,
        ".py module or a .zip",
    );
    let ran = run(&base, Some(KEY), &["call"]);
    assert_eq!(ran.code, 2, "clap's usage error: {}", ran.stderr);
    assert!(Path::new(file).exists());
}
