//! The fetched interpreter: checks that it is there and, if allowed, runs
//! `fetch-python-wasm.sh` (a fixed script with fixed arguments; no client text) to get it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::config::SOURCE_ROOT;

/// Files the server needs from the artifacts folder.
const REQUIRED: &[&str] = &[
    "python-snapshot.wasm",
    "python.wasm",
    "lib/python315.zip",
    "SHA256SUMS",
];

pub fn present(dir: &Path) -> bool {
    REQUIRED.iter().all(|f| dir.join(f).is_file())
}

/// The fetch script shipped with the source tree.
pub fn fetch_script() -> PathBuf {
    Path::new(SOURCE_ROOT).join("fetch-python-wasm.sh")
}

/// Makes sure the interpreter is in `dir`, fetching it when `fetch` is set.
pub fn ensure(dir: &Path, fetch: bool) -> anyhow::Result<()> {
    if present(dir) {
        return Ok(());
    }
    if !fetch {
        bail!(
            "the interpreter is missing from {}; run fetch-python-wasm.sh",
            dir.display()
        );
    }
    let script = fetch_script();
    tracing::info!(dest = %dir.display(), "interpreter missing; running {}", script.display());
    let status = Command::new("bash")
        .arg(&script)
        .arg("--dest")
        .arg(dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || !present(dir) {
        bail!(
            "{} failed ({status}); see its output above",
            script.display()
        );
    }
    Ok(())
}
