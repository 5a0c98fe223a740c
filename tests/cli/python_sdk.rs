//! The Python SDK (`clients/python`) tested with pytest against the real server binary: the
//! test makes the SDK's test environment once per machine (`clients/python/.venv`,
//! git-ignored, every wheel pinned by SHA-256 in `requirements-test.txt`), starts a server
//! with two tenants, and runs `pytest clients/python/tests` with its URL and key.

use std::path::Path;
use std::process::Command;

use scriptbox::config::SOURCE_ROOT;

use super::serve;

const KEY: &str = "python-sdk-test-key-0123456789";
const OTHER_KEY: &str = "python-sdk-other-key-0123456789";
const ADMIN_KEY: &str = "python-sdk-admin-key-0123456789";

/// The venv's python, made (and its pinned packages installed) if missing.
fn venv() -> std::path::PathBuf {
    let sdk = Path::new(SOURCE_ROOT).join("clients/python");
    let dir = sdk.join(".venv");
    let python = dir.join("bin/python");
    let ready = dir.join(".installed");
    let wanted = std::fs::read_to_string(sdk.join("requirements-test.txt")).expect("pins");
    if std::fs::read_to_string(&ready).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .status()
        .expect("python3 -m venv (Debian: apt-get install python3-venv)");
    assert!(status.success(), "making the venv failed");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary", ":all:", "--require-hashes", "-r"])
        .arg(sdk.join("requirements-test.txt"))
        .status()
        .expect("pip");
    assert!(
        status.success(),
        "installing the SDK's test requirements failed"
    );
    std::fs::write(&ready, wanted).expect("marker");
    python
}

#[test]
fn the_python_sdk_passes_its_tests_against_a_real_server() {
    let _alone = super::HEAVY.blocking_write();
    let python = venv();
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("shared");
    let config = format!(
        "[[tenants]]\nid = \"sdk\"\napi_key_sha256 = [{:?}]\nscripts_dir = {shared:?}\n\
         [tenants.quotas]\nmax_tools = 3\n\
         [[tenants]]\nid = \"other\"\napi_key_sha256 = [{:?}]\nscripts_dir = {shared:?}\n\
         [[tenants]]\nid = \"ops\"\nrole = \"admin\"\napi_key_sha256 = [{:?}]\nscripts_dir = {shared:?}\n",
        scriptbox::tenants::hash_key(KEY),
        scriptbox::tenants::hash_key(OTHER_KEY),
        scriptbox::tenants::hash_key(ADMIN_KEY),
    );
    let (_server, base) = serve(&config, &[]);
    let sdk = Path::new(SOURCE_ROOT).join("clients/python");
    let output = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&sdk)
        .env("PYTHONPATH", &sdk)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SCRIPTBOX_URL", &base)
        .env("SCRIPTBOX_API_KEY", KEY)
        .env("SCRIPTBOX_OTHER_KEY", OTHER_KEY)
        .env("SCRIPTBOX_ADMIN_KEY", ADMIN_KEY)
        .output()
        .expect("pytest runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "pytest failed:\n{said}");
    assert!(said.contains(" passed"), "{said}");
    eprintln!("{said}");
}
