//! The Fetcher against the real `python3 -m pip` on this machine: offline with a local wheel
//! directory, and (when reachable) against PyPI.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::WheelBuilder;
use scriptbox_packages::{Fetcher, Limits, PackageError, Site, Source, parse_requirement};

fn pip_available() -> bool {
    let ok = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: `python3 -m pip` is not available on this machine");
    }
    ok
}

/// The host's own platform tag, e.g. `linux_x86_64`, for a wheel pip accepts only for the host.
fn host_platform_tag() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_platform())"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .replace(['-', '.'], "_")
}

/// A local "index" of wheels.
struct LocalIndex {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    scratch: PathBuf,
}

fn local_index() -> LocalIndex {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&scratch).unwrap();
    // demo-pkg needs demo-dep (here) and numpy (built into the sandbox, on no index here).
    WheelBuilder::pure("demo-pkg", "1.0")
        .requires("demo-dep>=1")
        .write(&dir);
    WheelBuilder::pure("demo-pkg", "2.0")
        .requires("demo-dep>=1")
        .requires("numpy>=2")
        .write(&dir);
    WheelBuilder::pure("demo-dep", "1.0").write(&dir);
    // Only a wheel for the host's platform: exists, but not for the sandbox.
    WheelBuilder::pure("native-dep", "1.0")
        .tag(&format!("py3-none-{}", host_platform_tag()))
        .write(&dir);
    WheelBuilder::pure("needs-native", "1.0")
        .requires("native-dep")
        .write(&dir);
    WheelBuilder::pure("old-python", "1.0")
        .metadata_line("Requires-Python: <3.12")
        .write(&dir);
    WheelBuilder::pure("needs-old-numpy", "1.0")
        .requires("numpy<2")
        .write(&dir);
    // Only a source archive (never opened: pip must not build it).
    std::fs::write(dir.join("sdist_only-1.0.tar.gz"), b"not even a tarball").unwrap();
    LocalIndex {
        _tmp: tmp,
        dir,
        scratch,
    }
}

impl LocalIndex {
    fn fetcher(&self) -> Fetcher {
        Fetcher {
            source: Source::Local(self.dir.clone()),
            timeout: Duration::from_secs(120),
            ..Fetcher::default()
        }
    }

    fn download(&self, name: &str, version: Option<&str>) -> Result<Vec<PathBuf>, PackageError> {
        let dest = tempfile::tempdir_in(&self.scratch).unwrap().keep();
        self.fetcher()
            .download(&parse_requirement(name, version).unwrap(), &dest)
    }
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn downloads_and_installs_offline_with_dependencies() {
    if !pip_available() {
        return;
    }
    let index = local_index();
    assert!(index.fetcher().pip_version().unwrap().starts_with("pip "));

    // The newest demo-pkg, its dependency, and no numpy: the built-in copy satisfies it (pip
    // did not have to fall back to 1.0, which does not need numpy).
    let wheels = index.download("Demo_Pkg", None).unwrap();
    assert_eq!(
        file_names(&wheels),
        [
            "demo_dep-1.0-py3-none-any.whl",
            "demo_pkg-2.0-py3-none-any.whl"
        ]
    );
    // The built-in stand-in pip fetched was removed from the download folder.
    assert_eq!(
        std::fs::read_dir(wheels[0].parent().unwrap())
            .unwrap()
            .count(),
        2
    );

    let site_dir = index.scratch.join("site");
    let site = Site::open(&site_dir).unwrap();
    let installed = site.install(&wheels, &Limits::default(), 1 << 20).unwrap();
    let versions: Vec<(String, String)> =
        installed.into_iter().map(|p| (p.name, p.version)).collect();
    assert_eq!(
        versions,
        [
            ("demo-dep".into(), "1.0".into()),
            ("demo-pkg".into(), "2.0".into())
        ]
    );
    assert!(site_dir.join("demo_pkg/__init__.py").is_file());

    let old = index.download("demo-pkg", Some("<2")).unwrap();
    assert_eq!(
        file_names(&old),
        [
            "demo_dep-1.0-py3-none-any.whl",
            "demo_pkg-1.0-py3-none-any.whl"
        ]
    );
}

#[test]
fn explains_failures_offline() {
    if !pip_available() {
        return;
    }
    let index = local_index();
    let mut messages = Vec::new();
    let mut failure = |name: &str, version: Option<&str>| {
        let err = index.download(name, version).unwrap_err();
        messages.push(err.to_string());
        err
    };

    match failure("demo-pkg", Some("==9")) {
        PackageError::NoSuchVersion {
            name,
            specifier,
            available,
        } => {
            assert_eq!((name.as_str(), specifier.as_str()), ("demo-pkg", "==9"));
            assert_eq!(available, ["1.0", "2.0"]);
        }
        other => panic!("{other:?}"),
    }

    let err = failure("nothing-here", None);
    assert!(
        matches!(&err, PackageError::NotFound { name } if name == "nothing-here"),
        "{err:?}"
    );

    let err = failure("native-dep", None);
    assert!(
        matches!(&err, PackageError::NativeOnly { name } if name == "native-dep"),
        "{err:?}"
    );

    let err = failure("sdist-only", None);
    assert!(
        matches!(&err, PackageError::SourceOnly { name } if name == "sdist-only"),
        "{err:?}"
    );

    // A dependency without a pure wheel is named as the culprit.
    let err = failure("needs-native", None);
    assert!(
        matches!(&err, PackageError::NativeOnly { name } if name == "native-dep"),
        "{err:?}"
    );

    let err = failure("old-python", None);
    assert!(
        matches!(&err, PackageError::UnsupportedPython { name, python_version } if name == "old-python" && python_version == "3.15"),
        "{err:?}"
    );

    // Needs an older numpy than the one compiled into the sandbox.
    let err = failure("needs-old-numpy", None);
    assert_eq!(err.code(), "dependency_conflict", "{err:?}");
    assert!(
        err.to_string()
            .contains("numpy==2.5.2 is built into the sandbox"),
        "{err}"
    );

    // Messages carry no host paths.
    assert_eq!(messages.len(), 7);
    for message in &messages {
        assert!(!message.contains('/'), "{message}");
    }
}

#[test]
fn reports_a_missing_pip() {
    let fetcher = Fetcher {
        python: PathBuf::from("/nonexistent/python3"),
        ..Fetcher::default()
    };
    let req = parse_requirement("six", None).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = fetcher.download(&req, dest.path()).unwrap_err();
    assert_eq!(err.code(), "pip_unavailable", "{err}");
    assert!(!err.to_string().contains("/nonexistent"), "{err}");

    // An interpreter that runs but has no pip (`false` ignores its arguments and fails).
    let fetcher = Fetcher {
        python: PathBuf::from("false"),
        ..Fetcher::default()
    };
    let err = fetcher.download(&req, dest.path()).unwrap_err();
    assert_eq!(err.code(), "pip_unavailable", "{err}");
    assert_eq!(
        err.to_string(),
        "Package installation is unavailable on this server: pip is not installed for the configured Python interpreter."
    );

    let fetcher = Fetcher {
        python_version: "3.15 --pre".into(),
        ..Fetcher::default()
    };
    assert_eq!(
        fetcher.download(&req, dest.path()).unwrap_err().code(),
        "pip_unavailable"
    );
}

/// Downloads from PyPI; skipped (with a visible reason) when PyPI cannot be reached.
#[test]
fn pypi_download_and_classification() {
    if !pip_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fetcher = Fetcher {
        timeout: Duration::from_secs(180),
        ..Fetcher::default()
    };
    let download = |name: &str, version: Option<&str>| {
        let dest = tempfile::tempdir_in(tmp.path()).unwrap().keep();
        fetcher.download(&parse_requirement(name, version).unwrap(), &dest)
    };

    let wheels = match download("iniconfig", None) {
        Err(PackageError::NoNetwork) => {
            eprintln!("skipped: PyPI is not reachable from this machine (pip reported no network)");
            return;
        }
        Err(PackageError::Timeout { .. }) => {
            eprintln!("skipped: PyPI did not answer in time");
            return;
        }
        other => other.unwrap(),
    };
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    assert!(file_names(&wheels)[0].starts_with("iniconfig-"));
    let site = Site::open(tmp.path().join("site")).unwrap();
    let installed = site.install(&wheels, &Limits::default(), 10 << 20).unwrap();
    assert_eq!(installed[0].name, "iniconfig");
    assert!(tmp.path().join("site/iniconfig/__init__.py").is_file());

    // Exists on PyPI, only as compiled wheels (and sdists).
    let err = download("ujson", None).unwrap_err();
    assert!(
        matches!(&err, PackageError::NativeOnly { name } if name == "ujson"),
        "{err:?}"
    );

    // Exists on PyPI as an sdist only.
    let err = download("docopt", None).unwrap_err();
    assert_eq!(err.code(), "source_only", "{err:?}");

    let err = download("scriptbox-no-such-package-zzq-12345", None).unwrap_err();
    assert_eq!(err.code(), "package_not_found", "{err:?}");

    match download("iniconfig", Some("==0.0.1")).unwrap_err() {
        PackageError::NoSuchVersion { available, .. } => {
            assert!(
                !available.is_empty() && available.len() <= 20,
                "{available:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}
