//! `installPackage` for scriptbox: pure-Python packages per tenant, installed for the sandbox
//! only, without running host code.
//!
//! The system this replaces ran `sh -c "pip install <name>"`: a shell injection, and `pip
//! install` of an sdist runs the package's build code on the host. This crate keeps the useful
//! part (pip's resolver and its index client) and removes everything that executes
//! package-controlled code on the host:
//!
//! * **Strict input.** [`parse_requirement`] accepts only a PEP 508 name and a small PEP 440
//!   specifier grammar, so nothing that reaches pip can be an option (`--index-url=…`), a URL,
//!   a marker, an editable install or shell syntax.
//! * **No shell.** [`Fetcher`] runs `python3 -I -m pip download` with [`std::process::Command`],
//!   one argv entry per argument, an emptied environment, a private `HOME`/working directory
//!   and a timeout.
//! * **Wheels only, never sdists.** pip is told `--only-binary=:all: --platform any
//!   --implementation py --abi none`, so it can only *download* pure-Python wheels; it never
//!   builds anything, and `download` never installs or imports what it fetched. Distributions
//!   compiled into the sandbox's interpreter ([`builtin`]) are pinned for pip with stand-in
//!   wheels and a constraints file, so a dependency on e.g. numpy resolves to the built-in copy.
//! * **Careful unpacking.** [`wheel`] refuses path traversal (`..`, absolute names, backslashes,
//!   drive letters, NUL), symlinks and other special entries, duplicates, native code
//!   (`.so`/`.pyd`/`.dylib`/`.dll`, non-pure tags, `Root-Is-Purelib: false`), and counts the
//!   bytes actually written against the limits instead of trusting the zip headers.
//! * **Atomic installs.** [`Site`] unpacks every wheel of one install into a staging directory
//!   inside the site-packages folder, checks conflicts and the tenant's quota, then renames the
//!   entries into place and commits by renaming the record file. A crash at any point is rolled
//!   back (or forward) the next time the site is opened.
//!
//! What still runs on the host is pip itself (trusted code from the host's Python) talking to
//! the package index. Code from the packages only ever runs inside the sandbox, where the site
//! folder is mounted read-only.
//!
//! Everything here is blocking; the HTTP layer calls it from blocking threads.

pub mod builtin;
pub mod pip;
pub mod requirement;
pub mod site;
pub mod wheel;

pub use builtin::{BUILT_IN, built_in, built_in_version};
pub use pip::{Fetcher, Source};
pub use requirement::{Requirement, normalize_name, parse_requirement};
pub use site::{Installed, Site};
pub use wheel::{Unpacked, WheelInfo, check_entry_name, inspect_wheel, unpack_wheel};

const MIB: u64 = 1024 * 1024;

/// Size limits applied to the wheels of one install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest wheel file accepted (compressed size on disk).
    pub max_wheel_bytes: u64,
    /// Most bytes one install may write when unpacking all of its wheels; counted while
    /// copying, not taken from the zip headers.
    pub max_unpacked_bytes: u64,
    /// Most entries (files and directories) in one wheel.
    pub max_files: usize,
    /// Most wheels (the package plus its dependencies) in one install.
    pub max_wheels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_wheel_bytes: 50 * MIB,
            max_unpacked_bytes: 200 * MIB,
            max_files: 10_000,
            max_wheels: 50,
        }
    }
}

/// Everything that can go wrong. Each `Display` message is a sentence that can be shown to a
/// client as is: it never contains host paths or raw pip output (those go to the logs).
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("Invalid package name: {reason}.")]
    InvalidName { reason: String },

    #[error("Invalid version: {reason}.")]
    InvalidVersion { reason: String },

    #[error("Package '{name}' is built into the sandbox's Python and is already available.")]
    AlreadyAvailable { name: String },

    #[error("Package '{name}' ships only compiled extensions; it cannot run in the sandbox.")]
    NativeOnly { name: String },

    #[error(
        "Package '{name}' publishes only source archives and no wheels; building them would run its code, so it cannot be installed."
    )]
    SourceOnly { name: String },

    #[error("Package '{name}' was not found on the package index.")]
    NotFound { name: String },

    #[error("No version of package '{name}' matches '{specifier}'{}.", available_suffix(.available))]
    NoSuchVersion {
        name: String,
        specifier: String,
        /// The newest versions pip offered (at most 20), oldest first.
        available: Vec<String>,
    },

    #[error("Package '{name}' has no release that supports Python {python_version}.")]
    UnsupportedPython {
        name: String,
        python_version: String,
    },

    #[error("The package's dependencies cannot be satisfied together: {reason}.")]
    DependencyConflict { reason: String },

    #[error("The package index could not be reached from this server; try again later.")]
    NoNetwork,

    #[error("Downloading the package did not finish within {seconds} seconds.")]
    Timeout { seconds: u64 },

    #[error("The wheel was refused as unsafe: {0}.")]
    UnsafeWheel(String),

    #[error("The wheel is not a valid wheel: {0}.")]
    InvalidWheel(String),

    #[error("The package is too large: {0}.")]
    TooLarge(String),

    #[error(
        "Entry '{entry}' of package '{name}' would overwrite one that belongs to package '{owner}'."
    )]
    FileConflict {
        name: String,
        entry: String,
        owner: String,
    },

    #[error(
        "Installing needs {needed} bytes but only {available} bytes of the package quota are left."
    )]
    QuotaExceeded { needed: u64, available: u64 },

    #[error("Package '{name}' is not installed.")]
    NotInstalled { name: String },

    #[error("Package installation is unavailable on this server: {0}.")]
    PipUnavailable(String),

    #[error("Downloading the package failed: {0}.")]
    Pip(String),

    #[error("A file-system operation failed while {what}: {source}.")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn available_suffix(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!(" (available: {})", available.join(", "))
    }
}

impl PackageError {
    /// A stable snake_case code for API responses; one per variant.
    pub fn code(&self) -> &'static str {
        match self {
            PackageError::InvalidName { .. } => "invalid_package_name",
            PackageError::InvalidVersion { .. } => "invalid_version",
            PackageError::AlreadyAvailable { .. } => "already_available",
            PackageError::NativeOnly { .. } => "native_only",
            PackageError::SourceOnly { .. } => "source_only",
            PackageError::NotFound { .. } => "package_not_found",
            PackageError::NoSuchVersion { .. } => "no_such_version",
            PackageError::UnsupportedPython { .. } => "unsupported_python",
            PackageError::DependencyConflict { .. } => "dependency_conflict",
            PackageError::NoNetwork => "no_network",
            PackageError::Timeout { .. } => "pip_timeout",
            PackageError::UnsafeWheel(_) => "unsafe_wheel",
            PackageError::InvalidWheel(_) => "invalid_wheel",
            PackageError::TooLarge(_) => "too_large",
            PackageError::FileConflict { .. } => "file_conflict",
            PackageError::QuotaExceeded { .. } => "quota_exceeded",
            PackageError::NotInstalled { .. } => "not_installed",
            PackageError::PipUnavailable(_) => "pip_unavailable",
            PackageError::Pip(_) => "pip_failed",
            PackageError::Io { .. } => "io_error",
        }
    }

    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> PackageError {
        move |source| PackageError::Io { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_messages_are_sentences() {
        let errors = vec![
            PackageError::InvalidName { reason: "r".into() },
            PackageError::InvalidVersion { reason: "r".into() },
            PackageError::AlreadyAvailable {
                name: "numpy".into(),
            },
            PackageError::NativeOnly {
                name: "astropy".into(),
            },
            PackageError::SourceOnly {
                name: "docopt".into(),
            },
            PackageError::NotFound { name: "x".into() },
            PackageError::NoSuchVersion {
                name: "attrs".into(),
                specifier: "==0.0.1".into(),
                available: vec!["25.4.0".into(), "26.1.0".into()],
            },
            PackageError::UnsupportedPython {
                name: "x".into(),
                python_version: "3.15".into(),
            },
            PackageError::DependencyConflict { reason: "r".into() },
            PackageError::NoNetwork,
            PackageError::Timeout { seconds: 5 },
            PackageError::UnsafeWheel("r".into()),
            PackageError::InvalidWheel("r".into()),
            PackageError::TooLarge("r".into()),
            PackageError::FileConflict {
                name: "a".into(),
                entry: "e".into(),
                owner: "b".into(),
            },
            PackageError::QuotaExceeded {
                needed: 2,
                available: 1,
            },
            PackageError::NotInstalled { name: "x".into() },
            PackageError::PipUnavailable("r".into()),
            PackageError::Pip("r".into()),
            PackageError::Io {
                what: "testing",
                source: std::io::Error::other("boom"),
            },
        ];
        let mut codes: Vec<&str> = errors.iter().map(PackageError::code).collect();
        for e in &errors {
            let text = e.to_string();
            assert!(text.ends_with('.'), "{text}");
            assert!(
                text.chars().next().is_some_and(char::is_uppercase),
                "{text}"
            );
        }
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
        assert_eq!(
            errors[6].to_string(),
            "No version of package 'attrs' matches '==0.0.1' (available: 25.4.0, 26.1.0)."
        );
    }
}
