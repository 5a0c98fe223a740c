//! What the Fetcher hands to its subprocess, observed with a fake `python3` (a shell script
//! that records its argv and environment). One test in its own binary: writing an executable
//! while other test threads fork can make exec fail with ETXTBSY.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use scriptbox_packages::{Fetcher, Source, parse_requirement};

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn argv_environment_and_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    std::fs::create_dir(&log).unwrap();
    // Answers `--version`, records the download call, then "downloads" one wheel.
    let fake = script(
        tmp.path(),
        "fake-python",
        &format!(
            r#"if [ "$4" = "--version" ]; then echo "pip 99.0 from /somewhere (python 3.11)"; exit 0; fi
for a in "$@"; do printf '%s\n' "$a"; done > {log}/argv
env > {log}/env
pwd > {log}/pwd
dest=""; prev=""
for a in "$@"; do if [ "$prev" = "-d" ]; then dest="$a"; fi; prev="$a"; done
: > "$dest/attrs_extra-1.0-py3-none-any.whl"
: > "$dest/numpy-2.5.2-py3-none-any.whl"
exit 0"#,
            log = log.display()
        ),
    );
    let local = tmp.path().join("local wheels; $(id)");
    std::fs::create_dir(&local).unwrap();
    let fetcher = Fetcher {
        python: fake.clone(),
        source: Source::Local(local.clone()),
        ..Fetcher::default()
    };
    let req = parse_requirement("Attrs-Extra", Some(">=22, <24")).unwrap();
    let dest = tmp.path().join("dest");
    let wheels = fetcher.download(&req, &dest).unwrap();
    // The built-in stand-in is dropped and deleted.
    assert_eq!(wheels, [dest.join("attrs_extra-1.0-py3-none-any.whl")]);
    assert!(!dest.join("numpy-2.5.2-py3-none-any.whl").exists());

    let argv: Vec<String> = std::fs::read_to_string(log.join("argv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let find = |flag: &str| argv.iter().position(|a| a == flag).unwrap();
    assert_eq!(&argv[..4], ["-I", "-m", "pip", "download"]);
    for flag in [
        "--only-binary=:all:",
        "--isolated",
        "--no-input",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "--no-index",
    ] {
        assert!(
            argv.iter().any(|a| a == flag),
            "{flag} missing from {argv:?}"
        );
    }
    assert_eq!(argv[find("--platform") + 1], "any");
    assert_eq!(argv[find("--implementation") + 1], "py");
    assert_eq!(argv[find("--abi") + 1], "none");
    assert_eq!(argv[find("--python-version") + 1], "3.15");
    assert_eq!(argv[find("--progress-bar") + 1], "off");
    assert_eq!(argv[find("-d") + 1], dest.to_str().unwrap());
    // The local directory is one argv entry, however odd its name.
    assert!(
        argv.iter().any(|a| a == local.to_str().unwrap()),
        "{argv:?}"
    );
    // The requirement is exactly one argv entry, last, and no --no-deps: pip resolves them.
    assert_eq!(argv.last().unwrap(), "attrs-extra>=22,<24");
    assert!(!argv.iter().any(|a| a == "--no-deps"));

    let env = std::fs::read_to_string(log.join("env")).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "LANG",
                "TMPDIR",
                "PIP_NO_INPUT",
                "PIP_DISABLE_PIP_VERSION_CHECK",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(name),
            "unexpected variable {name} in the pip environment"
        );
    }
    assert!(env.contains("PIP_NO_INPUT=1"));
    assert!(env.contains("LANG=C.UTF-8"));
    let home = env.lines().find_map(|l| l.strip_prefix("HOME=")).unwrap();
    assert!(home.contains("scriptbox-pip-"), "{home}");
    let pwd = std::fs::read_to_string(log.join("pwd")).unwrap();
    assert!(pwd.contains("scriptbox-pip-"), "{pwd}");
    // The private HOME is gone afterwards.
    assert!(!Path::new(home).exists());

    // A pip that hangs is killed at the deadline.
    let hang = script(
        tmp.path(),
        "hanging-python",
        r#"if [ "$4" = "--version" ]; then echo "pip 99.0"; exit 0; fi
exec sleep 60"#,
    );
    let fetcher = Fetcher {
        python: hang,
        timeout: Duration::from_secs(2),
        ..Fetcher::default()
    };
    let started = Instant::now();
    let err = fetcher
        .download(&req, &tmp.path().join("dest2"))
        .unwrap_err();
    assert_eq!(err.code(), "pip_timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        err.to_string(),
        "Downloading the package did not finish within 2 seconds."
    );
}
