//! What a guest may see of the host filesystem: read-only mounts shared by every instance,
//! the tool's own read-only scripts and, optionally, its writable scratch folder. Nothing
//! else is reachable (no preopen means no path).

use std::path::PathBuf;

pub use super::fs::Scratch;

/// Where the guest finds its standard library (`python3XY.zip`): fixed by the interpreter.
pub const STDLIB_GUEST: &str = "/usr/local/lib";
/// Where the guest finds the scriptbox driver.
pub const DRIVER_GUEST: &str = "/scriptbox";
/// Where the guest finds the tool scripts.
pub const SCRIPTS_GUEST: &str = "/scripts";
/// Where the guest finds its writable scratch folder.
pub const SCRATCH_GUEST: &str = "/tmp";
/// Where the guest finds its package environment's `site-packages`, if it has one.
pub const SITE_PACKAGES_GUEST: &str = "/site-packages";
/// The driver's file name inside [`DRIVER_GUEST`].
pub const DRIVER_FILE: &str = "_scriptbox_driver.py";
/// argv[0] the interpreter expects.
pub const ARGV0: &str = "/usr/local/bin/python.wasm";

/// Host folders granted to every instance, each read-only.
#[derive(Debug, Clone)]
pub struct Mounts {
    /// The folder holding `python3XY.zip`, mounted at [`STDLIB_GUEST`].
    pub stdlib: PathBuf,
    /// The folder holding the driver, mounted at [`DRIVER_GUEST`].
    pub driver: PathBuf,
}

/// What one tool's instances see besides the shared mounts.
#[derive(Debug, Clone)]
pub struct ToolMounts {
    /// The owner's scripts, mounted read-only at [`SCRIPTS_GUEST`].
    pub scripts: PathBuf,
    /// A writable folder at [`SCRATCH_GUEST`], with quotas.
    pub scratch: Option<Scratch>,
    /// Files the guest may hold open at once (beyond stdio and the mounts).
    pub max_open_files: u32,
    /// Extra guest paths appended to `sys.path` (checked by the caller to lie inside the
    /// mounts above).
    pub sys_paths: Vec<String>,
    /// A package environment's `site-packages`, mounted read-only at
    /// [`SITE_PACKAGES_GUEST`] and put on `sys.path` after the scripts.
    pub site_packages: Option<PathBuf>,
    /// What the tool imports that a pre-initialised image can have ready (not a mount, but
    /// like the mounts it is the same for every instance of the tool).
    pub preload: super::Preload,
}
