//! An owner's named package environments (`createVenv`, `activateVenv`): folders
//! `<root>/<name>/site-packages`, of which at most one is active. The active one is mounted
//! read-only at `/site-packages` in every instance started from then on (loads, reloads,
//! respawns) and put on `sys.path`. The choice is kept in `<root>/ACTIVE`, so it survives a
//! restart. Packages land in them with the packages issue; until then they are empty.

use std::path::{Path, PathBuf};

use super::scratch::create_private_dir;
use super::{RegistryError, Venv};
use crate::names::{NameError, check_alias};

/// The environment packages go to when none is named, and the one instances mount when
/// none is active.
pub const DEFAULT_VENV: &str = "default";

/// Most environments per owner.
pub const MAX_VENVS: usize = 16;
const ACTIVE_FILE: &str = "ACTIVE";
const SITE_PACKAGES: &str = "site-packages";

/// An environment name: as an alias (letters, digits, `_`, `-`, `.`, not leading `.`).
pub fn check_venv(name: &str) -> Result<(), NameError> {
    check_alias(name).map_err(|err| match err {
        NameError::Length { .. } => NameError::Length { what: "env_name" },
        NameError::Characters { allowed, .. } => NameError::Characters {
            what: "env_name",
            allowed,
        },
        other => other,
    })
}

fn host_error(err: std::io::Error, what: &str) -> RegistryError {
    RegistryError::Host(anyhow::Error::from(err).context(what.to_owned()))
}

/// The environments under `root`, by name.
pub fn list(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(SITE_PACKAGES).is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| check_venv(name).is_ok())
        .collect();
    names.sort();
    names
}

/// Creates environment `name` (a checked name); `false` if it already existed.
pub fn create(root: &Path, name: &str) -> Result<(Venv, bool), RegistryError> {
    let site = root.join(name).join(SITE_PACKAGES);
    let existed = site.is_dir();
    if !existed {
        if list(root).len() >= MAX_VENVS {
            return Err(RegistryError::TooManyVenvs(MAX_VENVS));
        }
        create_private_dir(&site).map_err(|err| host_error(err, "creating an environment"))?;
    }
    Ok((venv(root, name), !existed))
}

fn venv(root: &Path, name: &str) -> Venv {
    Venv {
        name: name.to_owned(),
        site_packages: root.join(name).join(SITE_PACKAGES),
    }
}

/// Makes `name` (or none) the active environment and records it.
pub fn activate(root: &Path, name: Option<&str>) -> Result<Option<Venv>, RegistryError> {
    let chosen = match name {
        Some(name) if root.join(name).join(SITE_PACKAGES).is_dir() => Some(venv(root, name)),
        Some(_) => return Err(RegistryError::VenvNotFound),
        None => effective_default(root),
    };
    create_private_dir(root).map_err(|err| host_error(err, "creating the environments folder"))?;
    let record = root.join(ACTIVE_FILE);
    let result = match name {
        Some(name) => write_atomically(&record, name.as_bytes()),
        None => match std::fs::remove_file(&record) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        },
    };
    result.map_err(|err| host_error(err, "recording the active environment"))?;
    Ok(chosen)
}

/// The environment instances mount: the active one, else `default` if it exists.
pub fn effective(root: &Path) -> Option<Venv> {
    recorded(root).or_else(|| {
        root.join(DEFAULT_VENV)
            .join(SITE_PACKAGES)
            .is_dir()
            .then(|| venv(root, DEFAULT_VENV))
    })
}

/// Environment `name` if it exists.
pub fn existing(root: &Path, name: &str) -> Option<Venv> {
    (check_venv(name).is_ok() && root.join(name).join(SITE_PACKAGES).is_dir())
        .then(|| venv(root, name))
}

/// The recorded active environment, if it still exists.
pub fn recorded(root: &Path) -> Option<Venv> {
    let name = std::fs::read_to_string(root.join(ACTIVE_FILE)).ok()?;
    let name = name.trim();
    (check_venv(name).is_ok() && root.join(name).join(SITE_PACKAGES).is_dir())
        .then(|| venv(root, name))
}

fn effective_default(root: &Path) -> Option<Venv> {
    existing(root, DEFAULT_VENV)
}

/// Writes `bytes` to `path` through a temporary file, fsynced, then renamed (and the folder
/// fsynced): a crash leaves the old content or the new.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let temp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_environment_is_recorded_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("envs");
        assert!(recorded(&root).is_none());
        let (venv, created) = create(&root, "astro").expect("create");
        assert!(created);
        assert!(venv.site_packages.is_dir());
        assert!(!create(&root, "astro").expect("again").1);
        assert!(matches!(
            activate(&root, Some("ghost")),
            Err(RegistryError::VenvNotFound)
        ));
        activate(&root, Some("astro")).expect("activate");
        assert_eq!(recorded(&root).map(|v| v.name), Some("astro".to_owned()));
        // a record naming a folder that is gone is ignored
        std::fs::remove_dir_all(root.join("astro")).expect("remove");
        assert!(recorded(&root).is_none());
        activate(&root, None).expect("deactivate");
        assert!(!root.join(ACTIVE_FILE).exists());
    }

    #[test]
    fn environments_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..MAX_VENVS {
            create(dir.path(), &format!("env{i}")).expect("create");
        }
        assert!(matches!(
            create(dir.path(), "one-more"),
            Err(RegistryError::TooManyVenvs(_))
        ));
        assert_eq!(list(dir.path()).len(), MAX_VENVS);
    }
}
