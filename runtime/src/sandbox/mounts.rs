//! What a guest may see of the host filesystem. Everything is read-only; nothing else is
//! reachable (no preopen means no path).

use std::path::PathBuf;

/// Where the guest finds its standard library (`python3XY.zip`): fixed by the interpreter.
pub const STDLIB_GUEST: &str = "/usr/local/lib";
/// Where the guest finds the scriptbox driver.
pub const DRIVER_GUEST: &str = "/scriptbox";
/// Where the guest finds the tool scripts.
pub const SCRIPTS_GUEST: &str = "/scripts";
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
    /// The tool scripts, mounted at [`SCRIPTS_GUEST`].
    pub scripts: PathBuf,
}
