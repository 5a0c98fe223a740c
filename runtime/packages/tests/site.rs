//! Installing into a site folder: atomicity, replacement, quota, recovery.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{WheelBuilder, list, lying_wheel, snapshot};
use scriptbox_packages::site::RECORD_FILE;
use scriptbox_packages::{Limits, Site};

const QUOTA: u64 = 10 * 1024 * 1024;

struct Fixture {
    _tmp: tempfile::TempDir,
    wheels: PathBuf,
    site_dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let wheels = tmp.path().join("wheels");
    std::fs::create_dir(&wheels).unwrap();
    let site_dir = tmp.path().join("site");
    Fixture {
        wheels,
        site_dir,
        _tmp: tmp,
    }
}

impl Fixture {
    fn wheel(&self, builder: WheelBuilder) -> PathBuf {
        builder.write(&self.wheels)
    }
}

fn record_json(site: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(site.join(RECORD_FILE)).unwrap()).unwrap()
}

#[test]
fn installs_files_and_writes_the_record() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    assert!(site.installed().unwrap().is_empty());
    let alpha = f.wheel(WheelBuilder::pure("alpha", "1.0"));
    let beta = f.wheel(WheelBuilder::pure("Beta.Pkg", "2.0").file("beta_mod.py", b"B = 1\n"));
    let installed = site
        .install(&[alpha.clone(), beta], &Limits::default(), QUOTA)
        .unwrap();
    assert_eq!(installed.len(), 2);
    assert_eq!(installed[0].name, "alpha");
    assert_eq!(installed[1].name, "beta-pkg");
    assert_eq!(
        installed[1].top_level,
        ["Beta.Pkg", "Beta.Pkg-2.0.dist-info", "beta_mod.py"]
    );

    assert_eq!(
        std::fs::read_to_string(f.site_dir.join("alpha/__init__.py")).unwrap(),
        "__version__ = '1.0'\n"
    );
    assert!(f.site_dir.join("beta_mod.py").is_file());
    assert_eq!(
        list(&f.site_dir),
        [
            ".scriptbox-installed.json",
            ".scriptbox-lock",
            "Beta.Pkg",
            "Beta.Pkg-2.0.dist-info",
            "alpha",
            "alpha-1.0.dist-info",
            "beta_mod.py"
        ]
    );

    let record = record_json(&f.site_dir);
    assert_eq!(record["format"], 1);
    let alpha_record = &record["packages"][0];
    assert_eq!(alpha_record["name"], "alpha");
    assert_eq!(alpha_record["version"], "1.0");
    assert_eq!(
        alpha_record["top_level"],
        serde_json::json!(["alpha", "alpha-1.0.dist-info"])
    );
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&alpha).unwrap()))
    };
    assert_eq!(alpha_record["sha256"], sha);
    assert!(alpha_record["bytes"].as_u64().unwrap() > 0);
    assert!(alpha_record["installed_at_unix"].as_u64().unwrap() > 1_600_000_000);

    assert_eq!(site.installed().unwrap(), installed);
    assert_eq!(
        site.total_bytes().unwrap(),
        installed.iter().map(|p| p.bytes).sum::<u64>()
    );
    assert_eq!(site.get("BETA_pkg").unwrap().unwrap().version, "2.0");
    // A fresh handle sees the same thing.
    assert_eq!(
        Site::open(&f.site_dir).unwrap().installed().unwrap(),
        installed
    );
}

#[test]
fn a_bad_wheel_leaves_the_site_unchanged() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let first = f.wheel(WheelBuilder::pure("first", "1.0"));
    site.install(&[first], &Limits::default(), QUOTA).unwrap();
    let before = snapshot(&f.site_dir);

    let good = f.wheel(WheelBuilder::pure("good", "1.0"));
    let bad_builders = [
        WheelBuilder::pure("bad", "1.0").file("../evil.py", b"x"),
        WheelBuilder::pure("bad", "1.0").file("/abs.py", b"x"),
        WheelBuilder::pure("bad", "1.0").symlink("bad/link", "/etc/passwd"),
        WheelBuilder::pure("bad", "1.0").file("bad/_c.so", b"x"),
        WheelBuilder::pure("bad", "1.0").purelib(false),
        WheelBuilder::pure("bad", "1.0").file("bad/huge.bin", &vec![0u8; 300_000]),
    ];
    let limits = Limits {
        max_unpacked_bytes: 200_000,
        ..Limits::default()
    };
    for builder in bad_builders {
        let bad_dir = tempfile::tempdir().unwrap();
        let bad = builder.write(bad_dir.path());
        let err = site
            .install(&[good.clone(), bad], &limits, QUOTA)
            .unwrap_err();
        assert!(
            matches!(err.code(), "unsafe_wheel" | "native_only" | "too_large"),
            "{err}"
        );
        assert_eq!(snapshot(&f.site_dir), before, "after {err}");
    }
    // A wheel that only fails while being unpacked, after another one was unpacked.
    let bad_dir = tempfile::tempdir().unwrap();
    let lying = bad_dir.path().join("demo-1.0-py3-none-any.whl");
    lying_wheel(&lying);
    let err = site
        .install(&[good.clone(), lying], &limits, QUOTA)
        .unwrap_err();
    assert_eq!(err.code(), "invalid_wheel");
    assert_eq!(snapshot(&f.site_dir), before);
    assert!(!f.site_dir.parent().unwrap().join("evil.py").exists());
    assert_eq!(site.installed().unwrap().len(), 1);
}

#[test]
fn uninstalls() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let a = f.wheel(WheelBuilder::pure("alpha", "1.0"));
    let b = f.wheel(WheelBuilder::pure("beta", "1.0"));
    site.install(&[a, b], &Limits::default(), QUOTA).unwrap();
    let removed = site.uninstall("Alpha").unwrap();
    assert_eq!(
        (removed.name.as_str(), removed.version.as_str()),
        ("alpha", "1.0")
    );
    assert!(!f.site_dir.join("alpha").exists());
    assert!(!f.site_dir.join("alpha-1.0.dist-info").exists());
    assert!(f.site_dir.join("beta/__init__.py").exists());
    let names: Vec<String> = site
        .installed()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["beta"]);
    assert_eq!(site.uninstall("alpha").unwrap_err().code(), "not_installed");
    assert_eq!(
        site.uninstall("../etc").unwrap_err().code(),
        "invalid_package_name"
    );
    assert_eq!(
        list(&f.site_dir),
        [
            ".scriptbox-installed.json",
            ".scriptbox-lock",
            "beta",
            "beta-1.0.dist-info"
        ]
    );
}

#[test]
fn replaces_another_version() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let v1 = f.wheel(WheelBuilder::pure("alpha", "1.0").file("alpha_legacy.py", b"OLD = 1\n"));
    site.install(std::slice::from_ref(&v1), &Limits::default(), QUOTA)
        .unwrap();
    let first = site.get("alpha").unwrap().unwrap();

    // Same version again: nothing changes.
    let again = site.install(&[v1], &Limits::default(), QUOTA).unwrap();
    assert_eq!(again, vec![first.clone()]);

    let v2 = f.wheel(WheelBuilder::pure("alpha", "2.0").file("alpha/new.py", &[b'n'; 5000]));
    let installed = site.install(&[v2], &Limits::default(), QUOTA).unwrap();
    assert_eq!(installed[0].version, "2.0");
    assert_eq!(site.installed().unwrap(), installed);
    assert_eq!(
        std::fs::read_to_string(f.site_dir.join("alpha/__init__.py")).unwrap(),
        "__version__ = '2.0'\n"
    );
    assert!(f.site_dir.join("alpha/new.py").exists());
    assert!(!f.site_dir.join("alpha_legacy.py").exists());
    assert!(!f.site_dir.join("alpha-1.0.dist-info").exists());
    assert!(installed[0].bytes > first.bytes);
    assert_eq!(site.total_bytes().unwrap(), installed[0].bytes);
    assert_eq!(
        list(&f.site_dir),
        [
            ".scriptbox-installed.json",
            ".scriptbox-lock",
            "alpha",
            "alpha-2.0.dist-info"
        ]
    );
}

#[test]
fn enforces_the_quota() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let small = f.wheel(WheelBuilder::pure("small", "1.0"));
    site.install(&[small], &Limits::default(), 50_000).unwrap();
    let used = site.total_bytes().unwrap();
    let before = snapshot(&f.site_dir);

    let big = f.wheel(WheelBuilder::pure("big", "1.0").file("big/data.bin", &vec![7u8; 40_000]));
    let err = site
        .install(std::slice::from_ref(&big), &Limits::default(), 30_000)
        .unwrap_err();
    assert_eq!(err.code(), "quota_exceeded");
    let err = site
        .install(std::slice::from_ref(&big), &Limits::default(), 40_000)
        .unwrap_err();
    match err {
        scriptbox_packages::PackageError::QuotaExceeded { needed, available } => {
            assert!(needed > 40_000, "{needed}");
            assert_eq!(available, 40_000 - used);
        }
        other => panic!("{other}"),
    }
    assert_eq!(snapshot(&f.site_dir), before);
    site.install(&[big], &Limits::default(), 100_000).unwrap();
}

#[test]
fn refuses_entries_owned_by_another_package() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let a = f.wheel(WheelBuilder::pure("alpha", "1.0"));
    site.install(&[a], &Limits::default(), QUOTA).unwrap();
    let before = snapshot(&f.site_dir);
    // `impostor` ships a top-level `alpha/` package too.
    let impostor = f.wheel(WheelBuilder::pure("impostor", "1.0").file("alpha/evil.py", b"x\n"));
    let err = site
        .install(&[impostor], &Limits::default(), QUOTA)
        .unwrap_err();
    assert_eq!(err.code(), "file_conflict");
    assert_eq!(
        err.to_string(),
        "Entry 'alpha' of package 'impostor' would overwrite one that belongs to package 'alpha'."
    );
    assert_eq!(snapshot(&f.site_dir), before);

    // Two wheels of one install colliding with each other.
    let x = f.wheel(WheelBuilder::pure("xx", "1.0").file("shared.py", b"1\n"));
    let y = f.wheel(WheelBuilder::pure("yy", "1.0").file("shared.py", b"2\n"));
    assert_eq!(
        site.install(&[x, y], &Limits::default(), QUOTA)
            .unwrap_err()
            .code(),
        "file_conflict"
    );
    assert_eq!(snapshot(&f.site_dir), before);
}

#[test]
fn limits_the_number_of_wheels() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let wheels: Vec<PathBuf> = (0..3)
        .map(|i| f.wheel(WheelBuilder::pure(&format!("p{i}"), "1.0")))
        .collect();
    let limits = Limits {
        max_wheels: 2,
        ..Limits::default()
    };
    assert_eq!(
        site.install(&wheels, &limits, QUOTA).unwrap_err().code(),
        "too_large"
    );
    assert!(site.installed().unwrap().is_empty());
    assert!(site.install(&[], &limits, QUOTA).unwrap().is_empty());
}

#[test]
fn open_cleans_up_after_a_crash() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let a = f.wheel(WheelBuilder::pure("alpha", "1.0"));
    site.install(&[a], &Limits::default(), QUOTA).unwrap();
    let good = snapshot(&f.site_dir);
    drop(site);

    // A crash during unpacking leaves a staging folder; one after moving entries in but
    // before the commit leaves entries no record owns.
    let staging = f.site_dir.join(".scriptbox-staging-123-456-0");
    std::fs::create_dir_all(staging.join("w0/half")).unwrap();
    std::fs::write(staging.join("w0/half/x.py"), b"partial").unwrap();
    std::fs::create_dir(f.site_dir.join("untracked_pkg")).unwrap();
    std::fs::write(f.site_dir.join("untracked_pkg/__init__.py"), b"").unwrap();
    std::fs::write(f.site_dir.join("untracked.py"), b"").unwrap();
    std::fs::create_dir(f.site_dir.join("beta-1.0.dist-info")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("/etc", f.site_dir.join("sneaky_link")).unwrap();

    let site = Site::open(&f.site_dir).unwrap();
    assert_eq!(snapshot(&f.site_dir), good);
    assert_eq!(site.installed().unwrap().len(), 1);
    assert!(Path::new("/etc/passwd").exists() || cfg!(not(unix)));
}

/// Simulates a crash in the middle of replacing alpha 1.0 by 2.0: the pending record exists,
/// alpha 1.0's package was moved to `old/` and 2.0's was already moved in.
#[test]
fn open_rolls_back_an_uncommitted_replacement() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let v1 = f.wheel(WheelBuilder::pure("alpha", "1.0"));
    site.install(&[v1], &Limits::default(), QUOTA).unwrap();
    let good = snapshot(&f.site_dir);
    drop(site);

    let staging = f.site_dir.join(".scriptbox-staging-1-2-3");
    std::fs::create_dir_all(staging.join("old")).unwrap();
    std::fs::write(staging.join("record.json"), b"{\"half\": ").unwrap();
    std::fs::rename(f.site_dir.join("alpha"), staging.join("old/alpha")).unwrap();
    std::fs::rename(
        f.site_dir.join("alpha-1.0.dist-info"),
        staging.join("old/alpha-1.0.dist-info"),
    )
    .unwrap();
    std::fs::create_dir(f.site_dir.join("alpha")).unwrap();
    std::fs::write(
        f.site_dir.join("alpha/__init__.py"),
        b"__version__ = '2.0'\n",
    )
    .unwrap();
    std::fs::create_dir(f.site_dir.join("alpha-2.0.dist-info")).unwrap();

    let site = Site::open(&f.site_dir).unwrap();
    assert_eq!(snapshot(&f.site_dir), good);
    assert_eq!(site.get("alpha").unwrap().unwrap().version, "1.0");
}

/// A crash after the commit but before the clean-up: the new state stays.
#[test]
fn open_keeps_a_committed_transaction() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let v2 = f.wheel(WheelBuilder::pure("alpha", "2.0"));
    site.install(&[v2], &Limits::default(), QUOTA).unwrap();
    let good = snapshot(&f.site_dir);
    drop(site);

    let staging = f.site_dir.join(".scriptbox-staging-1-2-4");
    std::fs::create_dir_all(staging.join("old/alpha")).unwrap();
    std::fs::write(
        staging.join("old/alpha/__init__.py"),
        b"__version__ = '1.0'\n",
    )
    .unwrap();

    let site = Site::open(&f.site_dir).unwrap();
    assert_eq!(snapshot(&f.site_dir), good);
    assert_eq!(site.get("alpha").unwrap().unwrap().version, "2.0");
}

#[test]
fn a_corrupt_record_deletes_nothing() {
    let f = fixture();
    let site = Site::open(&f.site_dir).unwrap();
    let a = f.wheel(WheelBuilder::pure("alpha", "1.0"));
    site.install(&[a], &Limits::default(), QUOTA).unwrap();
    drop(site);
    std::fs::write(f.site_dir.join(RECORD_FILE), b"{ not json").unwrap();
    let before = snapshot(&f.site_dir);
    assert_eq!(Site::open(&f.site_dir).unwrap_err().code(), "io_error");
    assert_eq!(snapshot(&f.site_dir), before);

    // A record naming a path outside the folder is refused rather than acted on.
    std::fs::write(
        f.site_dir.join(RECORD_FILE),
        br#"{"format":1,"packages":[{"name":"x","version":"1","sha256":"","bytes":0,"top_level":["../../victim"],"installed_at_unix":0}]}"#,
    )
    .unwrap();
    assert_eq!(Site::open(&f.site_dir).unwrap_err().code(), "io_error");
}

#[test]
fn concurrent_installs_are_serialized() {
    let f = fixture();
    let site = Arc::new(Site::open(&f.site_dir).unwrap());
    let wheels: Vec<PathBuf> = (0..6)
        .map(|i| f.wheel(WheelBuilder::pure(&format!("pkg{i}"), "1.0")))
        .collect();
    let handles: Vec<_> = wheels
        .into_iter()
        .map(|wheel| {
            let site = Arc::clone(&site);
            std::thread::spawn(move || site.install(&[wheel], &Limits::default(), QUOTA).unwrap())
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // A second handle on the same folder (as another process would have) sees them all.
    let other = Site::open(&f.site_dir).unwrap();
    let names: Vec<String> = other
        .installed()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["pkg0", "pkg1", "pkg2", "pkg3", "pkg4", "pkg5"]);
    assert_eq!(list(&f.site_dir).len(), 2 + 6 * 2);
}
