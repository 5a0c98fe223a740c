//! Where a tool's script comes from: the owner's scripts folder.

use std::path::Path;

/// Whether `<dir>/<name>.py` or `<dir>/<name>/__init__.py` is a regular file (a symlink
/// counts only if it resolves inside `dir`, which the guest's read-only mount enforces too).
pub fn script_exists(dir: &Path, name: &str) -> bool {
    let Ok(root) = dir.canonicalize() else {
        return false;
    };
    [
        dir.join(format!("{name}.py")),
        dir.join(name).join("__init__.py"),
    ]
    .iter()
    .any(|candidate| {
        candidate
            .canonicalize()
            .is_ok_and(|real| real.starts_with(&root) && real.is_file())
    })
}
