//! Scratch folders: `<root>/<alias>.<random>` per persistent tool (private, 0700), removed
//! with the tool.

use std::path::{Path, PathBuf};

use super::{Registry, RegistryError};
use crate::sandbox::Scratch;

impl Registry {
    /// A fresh, empty scratch folder for a tool being loaded as `alias` (private: 0700).
    pub(super) fn make_scratch(&self, alias: &str) -> Result<Option<Scratch>, RegistryError> {
        let Some(quota) = &self.settings.scratch else {
            return Ok(None);
        };
        let dir = quota
            .root
            .join(format!("{alias}.{}", uuid::Uuid::new_v4().simple()));
        create_private_dir(&dir).map_err(|err| {
            RegistryError::Host(anyhow::Error::from(err).context("creating a scratch folder"))
        })?;
        Ok(Some(Scratch {
            dir,
            max_bytes: quota.max_bytes,
            max_files: quota.max_files,
        }))
    }
}

/// Creates `dir` (and its parents) with mode 0700.
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A tool's scratch folder, removed with the tool.
pub(super) struct ScratchDir(pub(super) PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(cause = %err, "could not remove a scratch folder");
        }
    }
}

/// The bytes of the files under `root` (links not followed), looking at no more than
/// `max_entries` entries.
pub(super) fn bytes_under(root: &Path, max_entries: usize) -> u64 {
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return total;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                folders.push(entry.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}
