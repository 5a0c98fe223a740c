//! Downloading pure-Python wheels with pip, as a subprocess, without a shell.
//!
//! The command line is (one argv entry per item, no shell involved):
//!
//! ```text
//! python3 -I -m pip download --only-binary=:all: --platform any --implementation py
//!     --abi none --python-version 3.15 --isolated --no-input --disable-pip-version-check
//!     --progress-bar off --no-cache-dir --retries 2 -d DEST
//!     --find-links BUILTIN_STUBS --constraint BUILTIN_CONSTRAINTS
//!     [--no-index --find-links LOCAL_DIR]   # Source::Local
//!     REQUIREMENT
//! ```
//!
//! When pip finds nothing usable, up to two follow-up runs tell the client why (skipped when
//! pip's output already answers):
//!
//! ```text
//! python3 -I -m pip download --only-binary=:all: … --no-deps -d TMP NAME   # a wheel for the host? → native_only
//! python3 -I -m pip index versions --isolated … NAME                      # any release at all?   → source_only / package_not_found
//! ```
//!
//! The first may download one host wheel into the temporary directory (it is deleted; it is
//! never built, installed or imported); the second reads only the index page.
//!
//! `--only-binary=:all:` with a foreign target (`--platform any --implementation py --abi
//! none`) means pip can only fetch pure-Python wheels: it never builds an sdist, so no package
//! code runs on the host. `-I` (Python's isolated mode) and `--isolated` (pip's) ignore
//! `PYTHON*`/`PIP_*` variables, user site-packages and user configuration, and the environment
//! is emptied anyway; the working directory and `HOME` are a fresh temporary directory. pip's
//! global/site configuration files (`/etc/pip.conf`, a virtualenv's `pip.conf`) still apply:
//! they belong to the operator, who may use them for a mirror or a CA bundle.

mod classify;
mod process;
mod stubs;

pub use classify::{NoMatch, PipFailure, classify};

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::builtin::built_in;
use crate::{PackageError, Requirement, normalize_name};
use process::{RunOutput, run};

/// At most this many versions are listed in [`PackageError::NoSuchVersion`].
const MAX_AVAILABLE: usize = 20;
/// `pip --version` should answer quickly; do not spend the whole budget on it.
const VERSION_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where pip looks for distributions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Source {
    /// pip's configured index: PyPI unless the operator's global pip configuration says
    /// otherwise.
    #[default]
    Index,
    /// Only the wheels in this directory (`--no-index --find-links DIR`); for offline use and
    /// tests.
    Local(PathBuf),
}

/// Runs `pip download` for the sandbox's target. See the module documentation for the exact
/// command line.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// The host Python that runs pip (only pip itself runs there, never package code).
    pub python: PathBuf,
    pub source: Source,
    /// Budget for one [`Fetcher::download`] call, all pip runs included.
    pub timeout: Duration,
    /// The sandbox's Python version, `major.minor`.
    pub python_version: String,
    /// Most bytes one pip run may download (its temporary files included); past it pip is
    /// killed and the install refused as too large.
    pub max_download_bytes: u64,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher {
            python: PathBuf::from("python3"),
            source: Source::Index,
            timeout: Duration::from_secs(120),
            python_version: "3.15".to_string(),
            max_download_bytes: 256 << 20,
        }
    }
}

impl Fetcher {
    /// pip's version (e.g. `pip 23.2.1`), or [`PackageError::PipUnavailable`] if pip cannot
    /// be run. Useful as a start-up check.
    pub fn pip_version(&self) -> Result<String, PackageError> {
        let work = WorkDir::new()?;
        self.check_pip(&work, Instant::now() + self.timeout)
    }

    /// Downloads the wheels for `req` and its dependencies into `dest` (created if missing;
    /// it should be empty, since every `*.whl` in it is returned) and returns their paths,
    /// sorted. Distributions built into the interpreter are left out: the sandbox already has
    /// them. Nothing is installed, built or imported.
    pub fn download(&self, req: &Requirement, dest: &Path) -> Result<Vec<PathBuf>, PackageError> {
        let deadline = Instant::now() + self.timeout;
        if !is_major_minor(&self.python_version) {
            return Err(PackageError::PipUnavailable(
                "the configured sandbox Python version is not of the form 3.15".into(),
            ));
        }
        let work = WorkDir::new()?;
        self.check_pip(&work, deadline)?;

        fs::create_dir_all(dest).map_err(PackageError::io("creating the download directory"))?;
        let dest = std::path::absolute(dest)
            .map_err(PackageError::io("creating the download directory"))?;
        let stubs = work.path().join("builtin");
        let constraints = work.path().join("builtin-constraints.txt");
        fs::create_dir(&stubs).map_err(PackageError::io("preparing pip"))?;
        stubs::write_stub_wheels(&stubs).map_err(|e| {
            tracing::warn!(error = %e, "writing the built-in stand-in wheels failed");
            PackageError::Pip("the built-in package list could not be prepared".into())
        })?;
        fs::write(&constraints, stubs::constraints()).map_err(PackageError::io("preparing pip"))?;

        let mut args = self.common_args();
        args.extend(os_args(&[
            "--platform",
            "any",
            "--implementation",
            "py",
            "--abi",
            "none",
            "--python-version",
            &self.python_version,
        ]));
        args.push("-d".into());
        args.push(dest.clone().into());
        args.push("--find-links".into());
        args.push(stubs.into());
        args.push("--constraint".into());
        args.push(constraints.into());
        args.extend(self.source_args()?);
        // One argv entry; `parse_requirement` guarantees it starts with a letter or digit, so
        // pip cannot read it as an option.
        args.push(req.pip_arg().into());

        let watched = [work.path().to_path_buf(), dest.clone()];
        let out = self.run_pip_within(args, &work, deadline, &watched)?;
        log_output(&req.pip_arg(), "download", &out);
        if out.timed_out {
            return Err(self.timeout_error());
        }
        if out.too_large {
            return Err(PackageError::TooLarge(format!(
                "the download passed {} MiB",
                self.max_download_bytes >> 20
            )));
        }
        if out.success() {
            // A download that finished between two polls is measured here.
            if process::tree_bytes(std::slice::from_ref(&dest)) > self.max_download_bytes {
                return Err(PackageError::TooLarge(format!(
                    "the download passed {} MiB",
                    self.max_download_bytes >> 20
                )));
            }
            return collect_wheels(&dest);
        }
        let failure = classify(&out.combined());
        tracing::info!(requirement = %req.pip_arg(), ?failure, "pip download failed");
        match failure {
            PipFailure::NoNetwork => Err(PackageError::NoNetwork),
            PipFailure::UnsupportedPython { name } => Err(PackageError::UnsupportedPython {
                name,
                python_version: self.python_version.clone(),
            }),
            PipFailure::Conflict { causes } => Err(PackageError::DependencyConflict {
                reason: if causes.is_empty() {
                    "pip found no combination of versions that works".into()
                } else {
                    causes.join("; ")
                },
            }),
            PipFailure::Other { reason } => Err(PackageError::Pip(reason)),
            PipFailure::NoMatch(m) => self.explain_no_match(m, &work, deadline),
        }
    }

    /// Turns "no matching distribution" into something a client can act on.
    fn explain_no_match(
        &self,
        m: NoMatch,
        work: &WorkDir,
        deadline: Instant,
    ) -> Result<Vec<PathBuf>, PackageError> {
        let NoMatch {
            name,
            specifier,
            mut versions,
            python_mismatch,
        } = m;
        if !versions.is_empty() {
            // Pure wheels exist (pip lists only versions usable for our target), just none
            // that matches.
            let keep_from = versions.len().saturating_sub(MAX_AVAILABLE);
            let available = versions.split_off(keep_from);
            return Err(PackageError::NoSuchVersion {
                name,
                specifier: specifier.unwrap_or_else(|| "any final release".into()),
                available,
            });
        }
        if python_mismatch {
            return Err(PackageError::UnsupportedPython {
                name,
                python_version: self.python_version.clone(),
            });
        }
        // Nothing usable for the sandbox. Is there a wheel for the host instead? That only
        // downloads a file (never an sdist, never built or run) into the temporary directory.
        if self.probe_host(&name, work, deadline)? {
            return Err(PackageError::NativeOnly { name });
        }
        // No wheel at all: only source archives, or nothing by that name.
        if self.listed_on_index(&name, work, deadline)? {
            Err(PackageError::SourceOnly { name })
        } else {
            Err(PackageError::NotFound { name })
        }
    }

    /// Whether the index lists any release of `name`, sdists included, using `pip index
    /// versions` (reads the project's index page only; downloads nothing). pip calls that
    /// command experimental; if it fails for any reason the answer is "no", which only makes
    /// the error say "not found" instead of "source only".
    fn listed_on_index(
        &self,
        name: &str,
        work: &WorkDir,
        deadline: Instant,
    ) -> Result<bool, PackageError> {
        let mut args = os_args(&[
            "-I",
            "-m",
            "pip",
            "index",
            "versions",
            "--isolated",
            "--no-input",
            "--disable-pip-version-check",
            "--retries",
            "2",
        ]);
        args.extend(self.source_args()?);
        args.push(name.into());
        let out = self.run_pip(args, work, deadline)?;
        log_output(name, "index versions", &out);
        if out.timed_out {
            return Err(self.timeout_error());
        }
        Ok(out.success())
    }

    /// Whether any wheel of `name` exists for the host's own platform.
    fn probe_host(
        &self,
        name: &str,
        work: &WorkDir,
        deadline: Instant,
    ) -> Result<bool, PackageError> {
        let probe_dir = work.path().join("probe");
        fs::create_dir(&probe_dir).map_err(PackageError::io("preparing pip"))?;
        let mut args = self.common_args();
        args.push("--no-deps".into());
        args.push("-d".into());
        args.push(probe_dir.into());
        args.extend(self.source_args()?);
        args.push(name.into());
        let watched = [work.path().to_path_buf()];
        let out = self.run_pip_within(args, work, deadline, &watched)?;
        log_output(name, "host probe", &out);
        if out.timed_out {
            return Err(self.timeout_error());
        }
        if out.too_large {
            // A large host-only wheel was being fetched: it exists, and it is compiled.
            return Ok(true);
        }
        if !out.success() && classify(&out.combined()) == PipFailure::NoNetwork {
            return Err(PackageError::NoNetwork);
        }
        Ok(out.success())
    }

    /// Options shared by the download and the probe.
    fn common_args(&self) -> Vec<OsString> {
        os_args(&[
            "-I",
            "-m",
            "pip",
            "download",
            "--only-binary=:all:",
            "--isolated",
            "--no-input",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--no-cache-dir",
            // pip's default of 5 retries with back-off outlasts a reasonable timeout when the
            // network is down; 2 still rides out a hiccup.
            "--retries",
            "2",
        ])
    }

    fn source_args(&self) -> Result<Vec<OsString>, PackageError> {
        Ok(match &self.source {
            Source::Index => Vec::new(),
            Source::Local(dir) => {
                let dir = std::path::absolute(dir).map_err(PackageError::io("preparing pip"))?;
                vec!["--no-index".into(), "--find-links".into(), dir.into()]
            }
        })
    }

    fn check_pip(&self, work: &WorkDir, deadline: Instant) -> Result<String, PackageError> {
        let deadline = deadline.min(Instant::now() + VERSION_CHECK_TIMEOUT);
        let out = self.run_pip(os_args(&["-I", "-m", "pip", "--version"]), work, deadline)?;
        if out.timed_out {
            return Err(PackageError::PipUnavailable(
                "pip did not answer in time".into(),
            ));
        }
        if !out.success() {
            tracing::warn!(
                python = %self.python.display(),
                stderr = %out.stderr,
                "`python -m pip --version` failed"
            );
            return Err(PackageError::PipUnavailable(
                "pip is not installed for the configured Python interpreter".into(),
            ));
        }
        // "pip 23.2.1 from /usr/lib/... (python 3.11)": keep the part without host paths.
        let line = out.stdout.lines().next().unwrap_or("").trim();
        Ok(line.split(" from ").next().unwrap_or(line).to_string())
    }

    /// As [`Fetcher::run_pip`], killing pip once `watched` holds more than
    /// `max_download_bytes`.
    fn run_pip_within(
        &self,
        args: Vec<OsString>,
        work: &WorkDir,
        deadline: Instant,
        watched: &[PathBuf],
    ) -> Result<RunOutput, PackageError> {
        self.spawn_pip(
            args,
            work,
            deadline,
            Some(process::Budget {
                dirs: watched,
                bytes: self.max_download_bytes,
            }),
        )
    }

    /// Runs the host Python with `args` in a scrubbed environment.
    fn run_pip(
        &self,
        args: Vec<OsString>,
        work: &WorkDir,
        deadline: Instant,
    ) -> Result<RunOutput, PackageError> {
        self.spawn_pip(args, work, deadline, None)
    }

    fn spawn_pip(
        &self,
        args: Vec<OsString>,
        work: &WorkDir,
        deadline: Instant,
        budget: Option<process::Budget<'_>>,
    ) -> Result<RunOutput, PackageError> {
        let mut cmd = Command::new(&self.python);
        cmd.args(&args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .env("HOME", work.home())
            // pip's own temporary downloads land in the work folder, inside the budget.
            .env("TMPDIR", work.path())
            .env("LANG", "C.UTF-8")
            .env("PIP_NO_INPUT", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .current_dir(work.path());
        tracing::debug!(python = %self.python.display(), ?args, "running pip");
        run(cmd, deadline, budget).map_err(|e| {
            tracing::warn!(python = %self.python.display(), error = %e, "cannot start pip");
            match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    PackageError::PipUnavailable(
                        "the Python interpreter that runs pip could not be started".into(),
                    )
                }
                _ => PackageError::Io {
                    what: "running pip",
                    source: e,
                },
            }
        })
    }

    fn timeout_error(&self) -> PackageError {
        PackageError::Timeout {
            seconds: self.timeout.as_secs(),
        }
    }
}

/// A private temporary directory per call: pip's `HOME` and working directory, the built-in
/// stand-ins and the host probe's download. Removed on drop.
struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    fn new() -> Result<Self, PackageError> {
        let dir = tempfile::Builder::new()
            .prefix("scriptbox-pip-")
            .tempdir()
            .map_err(PackageError::io("preparing pip"))?;
        fs::create_dir(dir.path().join("home")).map_err(PackageError::io("preparing pip"))?;
        Ok(WorkDir { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
}

/// The wheels pip saved, minus the built-in distributions (our stand-ins), which are deleted.
fn collect_wheels(dest: &Path) -> Result<Vec<PathBuf>, PackageError> {
    let mut wheels = Vec::new();
    let entries = fs::read_dir(dest).map_err(PackageError::io("listing downloaded wheels"))?;
    for entry in entries {
        let entry = entry.map_err(PackageError::io("listing downloaded wheels"))?;
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if !is_file || !file_name.ends_with(".whl") {
            continue;
        }
        let distribution = file_name.split('-').next().unwrap_or("");
        if normalize_name(distribution).is_ok_and(|n| built_in(&n)) {
            fs::remove_file(&path).map_err(PackageError::io("listing downloaded wheels"))?;
            continue;
        }
        wheels.push(path);
    }
    wheels.sort();
    Ok(wheels)
}

fn log_output(what: &str, step: &str, out: &RunOutput) {
    tracing::debug!(
        requirement = %what,
        step,
        status = ?out.status,
        timed_out = out.timed_out,
        stdout = %out.stdout,
        stderr = %out.stderr,
        "pip finished"
    );
}

fn os_args(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

fn is_major_minor(v: &str) -> bool {
    v.split_once('.').is_some_and(|(major, minor)| {
        [major, minor]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_versions() {
        assert!(is_major_minor("3.15"));
        assert!(!is_major_minor("3"));
        assert!(!is_major_minor("3.15.0"));
        assert!(!is_major_minor("3.x"));
        assert!(!is_major_minor("--3.1"));
    }
}
