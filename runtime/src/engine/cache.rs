//! The compiled-module cache: the interpreter compiled once per machine, loaded in
//! milliseconds afterwards.
//!
//! Key: SHA-256 over the wasm's own SHA-256, the wasmtime version, our engine settings
//! ([`super::Engine::settings_fingerprint`]) and wasmtime's own compatibility hash. The
//! compiled artifact `python-<key>.cwasm` is stored beside `python-<key>.blake3`, the BLAKE3
//! hash of the artifact as written (BLAKE3 rather than SHA-256 because it checks the ~350 MB
//! artifact in about a tenth of the time, on both cores, so a warm start stays fast). Deserialising native code is `unsafe` (wasmtime runs it as it
//! finds it), so an artifact whose bytes do not match its stored hash — truncated, corrupted,
//! or half-written — is deleted and rebuilt, never loaded. The cache folder is created 0700,
//! and both files are written to a temporary name and renamed, so a crash mid-write leaves no
//! file under the final name.
//!
//! This module and `native` are the only places with `unsafe`.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

/// The wasmtime version the cache key names (the crate is pinned to it in Cargo.toml).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The largest interpreter module we accept (the pinned one is ~105 MB).
const MAX_WASM_BYTES: u64 = 512 << 20;

/// Paths of one cache entry.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub artifact: PathBuf,
    pub digest: PathBuf,
}

/// The cache entry for `wasm_bytes` under `engine` in `cache_dir`.
pub fn entry_for(engine: &wasmtime::Engine, wasm_bytes: &[u8], cache_dir: &Path) -> CacheEntry {
    named_entry(
        cache_dir,
        "python",
        &key(engine, &[Sha256::digest(wasm_bytes).as_slice()]),
    )
}

/// The cache entry `<stem>-<key>` in `cache_dir`.
pub fn named_entry(cache_dir: &Path, stem: &str, key: &str) -> CacheEntry {
    CacheEntry {
        artifact: cache_dir.join(format!("{stem}-{key}.cwasm")),
        digest: cache_dir.join(format!("{stem}-{key}.blake3")),
    }
}

/// A cache key: SHA-256 over `digests` (the SHA-256 of each thing the compiled module is made
/// from), the wasmtime version, our engine settings and wasmtime's compatibility hash.
pub fn key(engine: &wasmtime::Engine, digests: &[&[u8]]) -> String {
    // wasmtime's compatibility hash is `impl Hash`; SipHash with std's fixed keys makes it a
    // stable number for one build of scriptbox, which is all the key needs.
    let mut compat = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let mut key = Sha256::new();
    for digest in digests {
        key.update(digest);
    }
    key.update(WASMTIME_VERSION.as_bytes());
    key.update(super::Engine::settings_fingerprint().as_bytes());
    key.update(compat.finish().to_le_bytes());
    hex::encode(&key.finalize()[..16])
}

/// Loads the interpreter from the cache, or compiles and caches it.
pub fn load_or_compile(
    engine: &wasmtime::Engine,
    wasm: &Path,
    cache_dir: &Path,
) -> anyhow::Result<wasmtime::Module> {
    let wasm_bytes = read_wasm(wasm)?;
    create_private_dir(cache_dir)?;
    let entry = entry_for(engine, &wasm_bytes, cache_dir);
    // Checked and filled under the lock: a reader never sees another process's half-written
    // entry (and deletes it as corrupt), and servers started together compile once.
    let stem = entry
        .artifact
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy();
    let _lock = BuildLock::acquire(cache_dir, &stem)?;
    if let Some(module) = load_verified(engine, &entry)? {
        return Ok(module);
    }
    compile_and_store(engine, &wasm_bytes, &entry, "the Python interpreter")
}

/// Held while one process builds a cache entry, so that servers (and test processes) started
/// together on a fresh machine build it once: the others wait, then find it in the cache.
pub struct BuildLock {
    _file: fs::File,
}

impl BuildLock {
    /// Waits for the lock named `name` in `cache_dir` (created private if missing).
    pub fn acquire(cache_dir: &Path, name: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        // The folder is private to this user (checked here), so the name cannot be a planted link.
        create_private_dir(cache_dir)?;
        let path = cache_dir.join(format!("{name}.lock"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

pub fn read_wasm(wasm: &Path) -> anyhow::Result<Vec<u8>> {
    let file = fs::File::open(wasm)
        .with_context(|| format!("opening the interpreter {}", wasm.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_WASM_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", wasm.display()))?;
    if bytes.len() as u64 > MAX_WASM_BYTES {
        bail!("{} is larger than {MAX_WASM_BYTES} bytes", wasm.display());
    }
    Ok(bytes)
}

/// Creates the cache folder 0700, or checks that an existing one is ours and closed to
/// others: whoever can write there could plant native code that we would run.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the module cache {}", dir.display()))?;
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("checking the module cache {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        bail!(
            "the module cache {} is not a folder owned by this user; refusing to load native code from it",
            dir.display()
        );
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
            format!("closing the module cache {} to other users", dir.display())
        })?;
    }
    Ok(())
}

/// Whether a cache file is a regular file owned by this user (not a link, not planted).
fn owned_regular_file(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_file() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
    })
}

fn blake3_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// The cached module if its artifact matches its stored hash; `None` (after removing the
/// entry) if it is missing, truncated or corrupt.
pub fn load_verified(
    engine: &wasmtime::Engine,
    entry: &CacheEntry,
) -> anyhow::Result<Option<wasmtime::Module>> {
    if !owned_regular_file(&entry.artifact) || !owned_regular_file(&entry.digest) {
        if entry.artifact.exists() || entry.digest.exists() {
            tracing::warn!("compiled-module cache entry is not a private file of ours; rebuilding");
            remove_entry(entry);
        }
        return Ok(None);
    }
    let Ok(stored) = fs::read_to_string(&entry.digest) else {
        return Ok(None);
    };
    let started = Instant::now();
    let actual = match blake3_file(&entry.artifact) {
        Ok(actual) => actual,
        Err(err) => {
            tracing::warn!(cause = %err, "compiled-module cache entry unreadable; rebuilding");
            remove_entry(entry);
            return Ok(None);
        }
    };
    if actual != stored.trim() {
        tracing::warn!(
            artifact = %entry.artifact.display(),
            "compiled-module cache entry does not match its stored hash (truncated or corrupt); rebuilding"
        );
        remove_entry(entry);
        return Ok(None);
    }
    // SAFETY: the artifact was written by `compile_and_store` in a folder only this user can
    // write (checked 0700 and ours), is a regular file owned by this user, sits under a key
    // that includes the wasmtime version and engine settings, and its bytes were just checked
    // against the BLAKE3 hash recorded when it was written. wasmtime also
    // checks the artifact's header against this engine's configuration. The window between the
    // check and the mapping only matters to someone who can already write our private cache.
    #[expect(unsafe_code, reason = "deserialising a verified compiled module")]
    let loaded = unsafe { wasmtime::Module::deserialize_file(engine, &entry.artifact) };
    match loaded {
        Ok(module) => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "loaded the compiled interpreter from the cache"
            );
            Ok(Some(module))
        }
        Err(err) => {
            tracing::warn!(cause = %err, "compiled-module cache entry rejected by wasmtime; rebuilding");
            remove_entry(entry);
            Ok(None)
        }
    }
}

fn remove_entry(entry: &CacheEntry) {
    let _ = fs::remove_file(&entry.digest);
    let _ = fs::remove_file(&entry.artifact);
}

/// Compiles `wasm_bytes` (`what` names it in the log), stores the result under `entry` and
/// returns it loaded.
pub fn compile_and_store(
    engine: &wasmtime::Engine,
    wasm_bytes: &[u8],
    entry: &CacheEntry,
    what: &str,
) -> anyhow::Result<wasmtime::Module> {
    tracing::info!(
        cache = %entry.artifact.display(),
        "compiling {what} (about a minute, once per machine)"
    );
    let started = Instant::now();
    let progress = Progress::start(started, what);
    let compiled = engine
        .precompile_module(wasm_bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {what}"))?;
    drop(progress);
    tracing::info!(
        elapsed_s = started.elapsed().as_secs(),
        bytes = compiled.len(),
        "compiled {what}"
    );
    if let Err(err) = store(entry, &compiled) {
        tracing::warn!(cause = %err, "could not write the compiled-module cache; continuing without it");
    }
    // SAFETY: `compiled` was produced a moment ago by `precompile_module` on this same engine,
    // in this process; it never left memory we own.
    #[expect(
        unsafe_code,
        reason = "deserialising the module this process just compiled"
    )]
    let module = unsafe { wasmtime::Module::deserialize(engine, &compiled) }
        .map_err(anyhow::Error::from)
        .with_context(|| format!("loading the freshly compiled {what}"))?;
    Ok(module)
}

fn store(entry: &CacheEntry, compiled: &[u8]) -> std::io::Result<()> {
    let digest = blake3::hash(compiled).to_hex().to_string();
    write_atomic(&entry.artifact, compiled)?;
    write_atomic(&entry.digest, digest.as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // a leftover of a crashed run with our pid
    // create_new: O_EXCL, so a planted file or link at the temporary name is never followed.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// Logs "still compiling" every ten seconds while the first compile runs.
struct Progress {
    done: Arc<AtomicBool>,
}

impl Progress {
    fn start(started: Instant, what: &str) -> Self {
        let what = what.to_owned();
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let spawned = std::thread::Builder::new()
            .name("scriptbox-compile-progress".into())
            .spawn(move || {
                let mut next = Duration::from_secs(10);
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if started.elapsed() >= next {
                        tracing::info!(elapsed_s = next.as_secs(), "still compiling {what} ...");
                        next += Duration::from_secs(10);
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::debug!(cause = %err, "no progress thread; compiling silently");
        }
        Self { done }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
