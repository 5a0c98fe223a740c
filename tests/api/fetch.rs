//! fetch-python-wasm.sh: verification, and its clear failures (no pip, no network, hash
//! mismatch). The real download is exercised by the harness on a fresh machine and by CI.

use std::path::Path;
use std::process::{Command, Output};

use scriptbox::config::{Config, SOURCE_ROOT};

fn fetch(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(Path::new(SOURCE_ROOT).join("fetch-python-wasm.sh"))
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run fetch script")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The script failed with `code` and said `text`.
fn assert_fails(output: &Output, code: i32, text: &str) {
    let said = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{said}");
    assert!(said.contains(text), "expected {text:?} in: {said}");
}

#[test]
fn check_passes_on_the_fetched_artifacts() {
    let _ = scriptbox_tests::engine(); // makes sure they were fetched
    let dest = Config::default().artifacts_dir;
    let output = fetch(&["--check", "--dest", dest.to_str().expect("utf-8")], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("verified"));
}

#[test]
fn check_without_artifacts_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("none");
    let output = fetch(&["--check", "--dest", dest.to_str().expect("utf-8")], &[]);
    assert_fails(&output, 6, "no artifacts");
}

#[test]
fn a_tampered_tree_is_a_hash_mismatch() {
    let _ = scriptbox_tests::engine();
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("dist");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let real = Config::default().artifacts_dir.join("SHA256SUMS");
    let mut sums = std::fs::read_to_string(real).expect("sums");
    sums.push_str("0000  extra\n");
    std::fs::write(dest.join("SHA256SUMS"), sums).expect("write");
    let output = fetch(&["--check", "--dest", dest.to_str().expect("utf-8")], &[]);
    assert_fails(&output, 5, "does not match its pinned hash");
}

#[test]
fn no_pip_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("dist");
    // a PATH with bash and coreutils but no python3
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for tool in [
        "bash",
        "dirname",
        "mktemp",
        "rm",
        "mkdir",
        "sed",
        "cut",
        "sha256sum",
    ] {
        if let Ok(path) = which(tool) {
            std::os::unix::fs::symlink(path, bin.join(tool)).expect("link");
        }
    }
    let output = fetch(
        &["--dest", dest.to_str().expect("utf-8")],
        &[("PATH", bin.to_str().expect("utf-8"))],
    );
    assert_fails(&output, 3, "python3 not found");
    assert!(!dest.exists(), "nothing half-written");
}

#[test]
fn no_network_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("dist");
    let output = fetch(
        &["--dest", dest.to_str().expect("utf-8")],
        &[
            ("PIP_INDEX_URL", "http://127.0.0.1:9/simple"),
            ("PIP_FIND_LINKS", ""),
            ("PIP_NO_CACHE_DIR", "1"),
            ("PIP_RETRIES", "0"),
            ("PIP_TIMEOUT", "2"),
        ],
    );
    assert_fails(&output, 4, "could not download");
    assert!(!dest.exists(), "nothing half-written");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != ".fetch.lock")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary folder removed: {leftovers:?}"
    );
}

fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join(tool);
        if path.exists() {
            return Ok(path);
        }
    }
    Err(())
}
