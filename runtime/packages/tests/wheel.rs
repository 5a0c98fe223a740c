//! Inspecting and unpacking hostile and ordinary wheels.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{WheelBuilder, list, lying_wheel, patch_bytes};
use scriptbox_packages::{Limits, PackageError, inspect_wheel, unpack_wheel};
use sha2::{Digest, Sha256};

fn code(result: Result<impl std::fmt::Debug, PackageError>) -> &'static str {
    result.unwrap_err().code()
}

/// Unpacks into `<tmp>/out` and returns the error code, checking nothing escaped `<tmp>/out`.
fn unpack_code(wheel: &WheelBuilder, limits: &Limits) -> &'static str {
    let tmp = tempfile::tempdir().unwrap();
    let wheels = tmp.path().join("wheels");
    std::fs::create_dir(&wheels).unwrap();
    let path = wheel.write(&wheels);
    let out = tmp.path().join("out");
    let err = unpack_wheel(&path, &out, limits, u64::MAX).unwrap_err();
    // Nothing may appear next to `out`, whatever the wheel tried.
    assert!(list(tmp.path()).iter().all(|n| n == "wheels" || n == "out"));
    assert_eq!(list(&wheels).len(), 1);
    err.code()
}

#[test]
fn inspects_a_pure_wheel() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = WheelBuilder::pure("Demo_Pkg", "1.0.post1").write(tmp.path());
    let info = inspect_wheel(&wheel, &Limits::default()).unwrap();
    assert_eq!(info.name, "demo-pkg");
    assert_eq!(info.version, "1.0.post1");
    assert_eq!(info.top_level, ["Demo_Pkg", "Demo_Pkg-1.0.post1.dist-info"]);
    let bytes = std::fs::read(&wheel).unwrap();
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(info.wheel_bytes, bytes.len() as u64);
}

#[test]
fn unpacks_with_data_mapping_and_safe_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = WheelBuilder::pure("demo", "1.0")
        .file("demo-1.0.data/purelib/demo_extra/__init__.py", b"X = 1\n")
        .file("demo-1.0.data/platlib/demo_plat.py", b"Y = 2\n")
        .file("demo-1.0.data/scripts/demo-cli", b"#!/bin/sh\necho hi\n")
        .file("demo-1.0.data/headers/demo.h", b"int x;\n")
        .file("demo-1.0.data/data/share/demo.txt", b"data\n")
        .file("demo-nspkg.pth", b"import os; os.system('id')\n")
        .file("demo/data/blob.bin", &[0u8; 1000])
        .write(tmp.path());
    let out = tmp.path().join("out");
    let unpacked = unpack_wheel(&wheel, &out, &Limits::default(), u64::MAX).unwrap();
    assert_eq!(
        unpacked.info.top_level,
        ["demo", "demo-1.0.dist-info", "demo_extra", "demo_plat.py"]
    );
    assert_eq!(
        list(&out),
        ["demo", "demo-1.0.dist-info", "demo_extra", "demo_plat.py"]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("demo/util.py")).unwrap(),
        "def answer():\n    return 42\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("demo_extra/__init__.py")).unwrap(),
        "X = 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("demo-1.0.dist-info/INSTALLER")).unwrap(),
        "scriptbox\n"
    );
    assert_eq!(
        std::fs::metadata(out.join("demo/data/blob.bin"))
            .unwrap()
            .len(),
        1000
    );
    // Bytes are counted from what was written.
    let written: u64 = walk_files(&out)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(unpacked.bytes, written);
    assert_eq!(unpacked.files, walk_files(&out).len());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in walk_files(&out) {
            assert_eq!(
                std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o644,
                "{file:?}"
            );
        }
        for dir in ["demo", "demo/data", "demo-1.0.dist-info", "demo_extra"] {
            assert_eq!(
                std::fs::metadata(out.join(dir))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o755
            );
        }
    }
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn refuses_path_tricks() {
    let limits = Limits::default();
    for evil in [
        "../evil.py",
        "demo/../../evil.py",
        "/tmp/abs_evil.py",
        "demo\\..\\evil.py",
        "C:/evil.py",
        "c:evil.py",
        "demo/./x.py",
        "demo//x.py",
        "demo/x\u{1}.py",
    ] {
        let wheel = WheelBuilder::pure("demo", "1.0").file(evil, b"print('pwned')\n");
        assert_eq!(unpack_code(&wheel, &limits), "unsafe_wheel", "{evil:?}");
    }
    assert!(!Path::new("/tmp/abs_evil.py").exists());
}

#[test]
fn refuses_symlinks() {
    let wheel = WheelBuilder::pure("demo", "1.0").symlink("demo/passwd", "/etc/passwd");
    assert_eq!(unpack_code(&wheel, &Limits::default()), "unsafe_wheel");
    let wheel = WheelBuilder::pure("demo", "1.0").symlink("demo/up", "..");
    assert_eq!(unpack_code(&wheel, &Limits::default()), "unsafe_wheel");
}

#[test]
fn refuses_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    // Two entries with the same name: written as different names, then patched.
    let path = WheelBuilder::pure("demo", "1.0")
        .file("demo/aa.py", b"A = 1\n")
        .file("demo/bb.py", b"B = 2\n")
        .write(tmp.path());
    patch_bytes(&path, b"demo/bb.py", b"demo/aa.py");
    assert_eq!(
        code(inspect_wheel(&path, &Limits::default())),
        "unsafe_wheel"
    );

    // Names that collide on a case-insensitive file system.
    let wheel = WheelBuilder::pure("demo", "1.0").file("demo/Util.py", b"x = 1\n");
    assert_eq!(unpack_code(&wheel, &Limits::default()), "unsafe_wheel");

    // The same target reached twice through the .data mapping.
    let wheel =
        WheelBuilder::pure("demo", "1.0").file("demo-1.0.data/purelib/demo/util.py", b"x\n");
    assert_eq!(unpack_code(&wheel, &Limits::default()), "unsafe_wheel");

    // A file and a directory of the same name.
    let wheel = WheelBuilder::pure("demo", "1.0").file("demo/util.py/inner.py", b"x\n");
    assert_eq!(unpack_code(&wheel, &Limits::default()), "unsafe_wheel");
}

#[test]
fn refuses_native_code() {
    let limits = Limits::default();
    let so = WheelBuilder::pure("demo", "1.0")
        .file("demo/_speedups.cpython-315-wasm32-wasi.so", b"\x7fELF");
    assert_eq!(unpack_code(&so, &limits), "native_only");
    let pyd = WheelBuilder::pure("demo", "1.0").file("demo/_x.pyd", b"MZ");
    assert_eq!(unpack_code(&pyd, &limits), "native_only");
    let not_purelib = WheelBuilder::pure("demo", "1.0").purelib(false);
    assert_eq!(unpack_code(&not_purelib, &limits), "native_only");
    let platform = WheelBuilder::pure("demo", "1.0").tag("cp311-cp311-manylinux_2_17_x86_64");
    assert_eq!(unpack_code(&platform, &limits), "native_only");
    let tmp = tempfile::tempdir().unwrap();
    let msg = inspect_wheel(&so.write(tmp.path()), &limits)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "Package 'demo' ships only compiled extensions; it cannot run in the sandbox."
    );
}

#[test]
fn refuses_over_limits() {
    let big = WheelBuilder::pure("demo", "1.0").file("demo/big.txt", &vec![b'x'; 100_000]);
    let limits = Limits {
        max_unpacked_bytes: 50_000,
        ..Limits::default()
    };
    assert_eq!(unpack_code(&big, &limits), "too_large");
    let limits = Limits {
        max_wheel_bytes: 200,
        ..Limits::default()
    };
    assert_eq!(unpack_code(&big, &limits), "too_large");
    let mut many = WheelBuilder::pure("demo", "1.0");
    for i in 0..30 {
        many = many.file(&format!("demo/m{i}.py"), b"");
    }
    let limits = Limits {
        max_files: 20,
        ..Limits::default()
    };
    assert_eq!(unpack_code(&many, &limits), "too_large");

    // The caller's budget (what is left of the quota) is enforced while copying.
    let tmp = tempfile::tempdir().unwrap();
    let path = big.write(tmp.path());
    let err = unpack_wheel(&path, &tmp.path().join("out"), &Limits::default(), 10_000).unwrap_err();
    assert_eq!(err.code(), "too_large");
    let written: u64 = walk_files(&tmp.path().join("out"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(written <= 10_001, "{written}");
}

#[test]
fn refuses_a_file_lying_about_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("demo-1.0-py3-none-any.whl");
    lying_wheel(&path);
    // The headers look fine...
    assert_eq!(
        inspect_wheel(&path, &Limits::default()).unwrap().name,
        "demo"
    );
    let out = tmp.path().join("out");
    let err = unpack_wheel(&path, &out, &Limits::default(), u64::MAX).unwrap_err();
    assert!(
        matches!(err.code(), "unsafe_wheel" | "invalid_wheel"),
        "{err}"
    );
    if let Ok(meta) = std::fs::metadata(out.join("demo/__init__.py")) {
        assert!(meta.len() <= 17, "{}", meta.len());
    }
}

#[test]
fn refuses_malformed_metadata() {
    let limits = Limits::default();
    let no_metadata = WheelBuilder::pure("demo", "1.0").without_metadata();
    assert_eq!(unpack_code(&no_metadata, &limits), "invalid_wheel");
    let mut wrong_dir = WheelBuilder::pure("demo", "1.0");
    wrong_dir.dist_info_name = Some("other".into());
    assert_eq!(unpack_code(&wrong_dir, &limits), "invalid_wheel");
    let second_dist_info =
        WheelBuilder::pure("demo", "1.0").file("numpy-2.5.2.dist-info/METADATA", b"Name: numpy\n");
    assert_eq!(unpack_code(&second_dist_info, &limits), "invalid_wheel");
    let hidden_dist_info = WheelBuilder::pure("demo", "1.0").file(
        "demo-1.0.data/purelib/numpy-2.5.2.dist-info/METADATA",
        b"Name: numpy\n",
    );
    assert_eq!(unpack_code(&hidden_dist_info, &limits), "invalid_wheel");
    let reserved = WheelBuilder::pure("demo", "1.0").file(".scriptbox-installed.json", b"{}");
    assert_eq!(unpack_code(&reserved, &limits), "unsafe_wheel");
    let tmp = tempfile::tempdir().unwrap();
    let not_zip = tmp.path().join("x-1.0-py3-none-any.whl");
    std::fs::write(&not_zip, b"this is not a zip file").unwrap();
    assert_eq!(code(inspect_wheel(&not_zip, &limits)), "invalid_wheel");
}

#[test]
fn never_writes_into_an_existing_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = WheelBuilder::pure("demo", "1.0").write(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    assert_eq!(
        code(unpack_wheel(&wheel, &out, &Limits::default(), u64::MAX)),
        "io_error"
    );
}
