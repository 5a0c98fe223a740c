//! The compiled-module cache never loads an artifact whose bytes do not match the hash stored
//! when it was written: corrupt, truncated or foreign files are removed (and rebuilt by the
//! next start).

use scriptbox::engine::{Engine, cache};

fn engine() -> wasmtime::Engine {
    wasmtime::Engine::new(&Engine::config()).expect("engine")
}

#[test]
fn a_mismatched_hash_is_never_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    let entry = cache::entry_for(&engine, b"some wasm", dir.path());
    std::fs::write(&entry.artifact, b"not what was stored").expect("write");
    std::fs::write(
        &entry.digest,
        blake3::hash(b"something else").to_hex().to_string(),
    )
    .expect("write");
    let loaded = cache::load_verified(&engine, &entry).expect("no hard error");
    assert!(loaded.is_none());
    assert!(
        !entry.artifact.exists() && !entry.digest.exists(),
        "bad entry removed"
    );
}

#[test]
fn a_matching_hash_of_garbage_is_refused_by_wasmtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    let entry = cache::entry_for(&engine, b"some wasm", dir.path());
    let garbage = b"\x7fELF this is not a compiled module".to_vec();
    std::fs::write(&entry.artifact, &garbage).expect("write");
    std::fs::write(&entry.digest, blake3::hash(&garbage).to_hex().to_string()).expect("write");
    assert!(
        cache::load_verified(&engine, &entry)
            .expect("no hard error")
            .is_none()
    );
    assert!(!entry.artifact.exists());
}

#[test]
fn a_truncated_real_artifact_is_detected() {
    let real = scriptbox_tests::engine(); // the cache entry exists now
    let _ = real;
    let config = scriptbox::config::Config::default();
    let wasm = std::fs::read(config.snapshot_wasm()).expect("wasm");
    let engine = engine();
    let entry = cache::entry_for(&engine, &wasm, &config.cache_dir);
    let stored = std::fs::read_to_string(&entry.digest).expect("stored digest");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = cache::CacheEntry {
        artifact: dir.path().join("t.cwasm"),
        digest: dir.path().join("t.blake3"),
    };
    let mut head = vec![0u8; 1 << 20];
    {
        use std::io::Read;
        let mut file = std::fs::File::open(&entry.artifact).expect("artifact");
        file.read_exact(&mut head).expect("read");
    }
    std::fs::write(&copy.artifact, &head).expect("write");
    std::fs::write(&copy.digest, stored).expect("write");
    assert!(
        cache::load_verified(&engine, &copy)
            .expect("no hard error")
            .is_none()
    );
}
