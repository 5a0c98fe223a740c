//! The guest driver's source, embedded in the binary and written to the data folder at start,
//! so the file the sandbox mounts is always the one this build was tested with.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sandbox::mounts::DRIVER_FILE;

pub const DRIVER_SOURCE: &str = include_str!("../../python-wasm/guest/_scriptbox_driver.py");

/// Writes the driver into `<data_dir>/guest/` (read-only) and returns that folder.
pub fn install_driver(data_dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("guest");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(DRIVER_FILE);
    let current = std::fs::read_to_string(&path).ok();
    if current.as_deref() != Some(DRIVER_SOURCE) {
        let tmp = dir.join(format!(".{DRIVER_FILE}.{}", std::process::id()));
        std::fs::write(&tmp, DRIVER_SOURCE)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("installing {}", path.display()))?;
    }
    dir.canonicalize().context("the guest folder")
}
