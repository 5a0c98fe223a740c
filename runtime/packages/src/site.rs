//! One tenant's site-packages folder and the record of what is installed in it.
//!
//! # Layout
//!
//! Everything lives inside the site folder (which the sandbox sees read-only; the record only
//! holds names, versions and hashes, so seeing it is harmless):
//!
//! * `.scriptbox-installed.json` — the record ([`RECORD_FILE`]), the single source of truth:
//!   ```json
//!   {
//!     "format": 1,
//!     "packages": [
//!       {
//!         "name": "iniconfig",
//!         "version": "2.3.1",
//!         "sha256": "<hex sha-256 of the wheel>",
//!         "bytes": 12345,
//!         "top_level": ["iniconfig", "iniconfig-2.3.1.dist-info"],
//!         "installed_at_unix": 1767225600
//!       }
//!     ]
//!   }
//!   ```
//!   Packages are sorted by name; every other top-level entry of the folder is owned by exactly
//!   one package's `top_level`.
//! * `.scriptbox-lock` — an advisory lock file (see *Concurrency*).
//! * `.scriptbox-staging-*` — a transaction in progress (see *Atomicity*).
//!
//! # Atomicity
//!
//! An install or uninstall is one transaction in a fresh staging directory inside the site
//! folder (same file system, so `rename` is atomic):
//!
//! 1. every wheel is unpacked into `staging/w<i>/` (a failure here leaves the site untouched);
//! 2. the new record is written to `staging/record.json` and fsynced — from now on the
//!    transaction is *pending*;
//! 3. the entries of replaced or uninstalled packages are renamed into `staging/old/`;
//! 4. the new entries are renamed into the site folder;
//! 5. **commit:** `staging/record.json` is renamed over the record and the folder is fsynced;
//! 6. the staging directory is deleted.
//!
//! Recovery ([`Site::open`], and after any failure in steps 3–5) looks at each staging
//! directory: if it still holds `record.json` the transaction did not commit, so every entry in
//! `old/` is renamed back (replacing whatever new entry took its name); otherwise it committed
//! (or never got past step 1) and the directory is just deleted. Finally every top-level entry
//! that no package in the record owns is deleted. So after a crash at any point the folder
//! shows exactly the old or exactly the new state.
//!
//! # Concurrency
//!
//! Mutations ([`Site::open`]'s recovery, [`Site::install`], [`Site::uninstall`]) take an
//! exclusive advisory lock (`flock`) on `.scriptbox-lock` for their duration, so they are
//! serialized across threads and processes; a `Site` can be shared between threads. Reads take
//! no lock: the record is only ever replaced by an atomic rename.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::wheel::{RESERVED_PREFIX, WheelInfo, inspect_wheel, unpack_wheel};
use crate::{Limits, PackageError, normalize_name};

/// The record's file name inside the site folder.
pub const RECORD_FILE: &str = ".scriptbox-installed.json";
const LOCK_FILE: &str = ".scriptbox-lock";
const STAGING_PREFIX: &str = ".scriptbox-staging-";
/// Inside a staging directory: the new record while the transaction is pending.
const PENDING_RECORD: &str = "record.json";
/// Inside a staging directory: entries moved out of the site folder.
const OLD_DIR: &str = "old";
const RECORD_FORMAT: u32 = 1;

/// One installed distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// PEP 503-normalized name.
    pub name: String,
    pub version: String,
    /// Hex SHA-256 of the wheel it was installed from.
    pub sha256: String,
    /// Bytes of file content it occupies (what counts against the quota).
    pub bytes: u64,
    /// The top-level entries of the site folder it owns, sorted.
    pub top_level: Vec<String>,
    pub installed_at_unix: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    format: u32,
    packages: Vec<Installed>,
}

/// A tenant's site-packages folder. See the module documentation for the layout, the
/// transaction protocol and the locking.
#[derive(Debug)]
pub struct Site {
    dir: PathBuf,
}

impl Site {
    /// Opens (creating it if missing) a site folder and recovers from any interrupted
    /// transaction, so that it shows exactly what the record says.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Site, PackageError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(PackageError::io("creating the site folder"))?;
        let site = Site { dir };
        let _lock = site.lock()?;
        site.recover()?;
        Ok(site)
    }

    /// The site folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The installed packages, sorted by name.
    pub fn installed(&self) -> Result<Vec<Installed>, PackageError> {
        Ok(self.read_record()?.packages)
    }

    /// One installed package, by name (any spelling; it is normalized).
    pub fn get(&self, name: &str) -> Result<Option<Installed>, PackageError> {
        let name = normalize_name(name)?;
        Ok(self.installed()?.into_iter().find(|p| p.name == name))
    }

    /// Bytes used by all installed packages.
    pub fn total_bytes(&self) -> Result<u64, PackageError> {
        Ok(self.installed()?.iter().map(|p| p.bytes).sum())
    }

    /// Installs `wheels` (a package and its dependencies) as one transaction: either all of
    /// them are installed or the site is left unchanged.
    ///
    /// A package already installed at the same version is left as is; at another version it
    /// is replaced. A wheel whose top-level entries collide with another package's is refused.
    /// Returns the resulting record entry of every wheel's package, in the order given.
    pub fn install(
        &self,
        wheels: &[PathBuf],
        limits: &Limits,
        quota_bytes: u64,
    ) -> Result<Vec<Installed>, PackageError> {
        if wheels.len() > limits.max_wheels {
            return Err(PackageError::TooLarge(format!(
                "it needs {} wheels, more than the limit of {}",
                wheels.len(),
                limits.max_wheels
            )));
        }
        if wheels.is_empty() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let record = self.read_record()?;
        let staging = self.new_staging()?;
        let prepared = match self.prepare(&staging, &record, wheels, limits, quota_bytes) {
            Ok(prepared) => prepared,
            Err(e) => {
                remove_all_logged(&staging);
                return Err(e);
            }
        };
        let Prepared {
            record: new_record,
            moves_out,
            moves_in,
            result,
        } = prepared;
        if moves_out.is_empty() && moves_in.is_empty() {
            // Everything was already installed at these versions.
            remove_all_logged(&staging);
            return Ok(result);
        }
        self.commit(&staging, &new_record, &moves_out, &moves_in)?;
        tracing::info!(
            site = %self.dir.display(),
            packages = ?result.iter().map(|p| format!("{}=={}", p.name, p.version)).collect::<Vec<_>>(),
            "installed"
        );
        Ok(result)
    }

    /// Removes an installed package (any spelling of its name).
    pub fn uninstall(&self, name: &str) -> Result<Installed, PackageError> {
        let name = normalize_name(name)?;
        let _lock = self.lock()?;
        let mut record = self.read_record()?;
        let Some(at) = record.packages.iter().position(|p| p.name == name) else {
            return Err(PackageError::NotInstalled { name });
        };
        let removed = record.packages.remove(at);
        let staging = self.new_staging()?;
        self.commit(&staging, &record, &removed.top_level, &[])?;
        tracing::info!(package = %removed.name, version = %removed.version, "uninstalled");
        Ok(removed)
    }

    /// Step 1 and the checks: inspect every wheel, find replacements and collisions, check the
    /// quota and the size limit by the wheels' headers, then unpack what changes into staging
    /// (where writing more than the headers declared is refused) and build the new record.
    /// The site folder is not touched.
    fn prepare(
        &self,
        staging: &Path,
        record: &Record,
        wheels: &[PathBuf],
        limits: &Limits,
        quota_bytes: u64,
    ) -> Result<Prepared, PackageError> {
        let mut infos: Vec<WheelInfo> = Vec::with_capacity(wheels.len());
        for wheel in wheels {
            let info = inspect_wheel(wheel, limits)?;
            if infos.iter().any(|other| other.name == info.name) {
                return Err(PackageError::InvalidWheel(format!(
                    "two of the wheels are for package '{}'",
                    info.name
                )));
            }
            infos.push(info);
        }

        let current: HashMap<&str, &Installed> = record
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p))
            .collect();
        let mut replaced: Vec<&Installed> = Vec::new();
        // Indexes into `wheels`/`infos` of the packages that change.
        let mut fresh: Vec<usize> = Vec::new();
        for (i, info) in infos.iter().enumerate() {
            match current.get(info.name.as_str()) {
                Some(old) if old.version == info.version => {} // already there
                Some(old) => {
                    replaced.push(old);
                    fresh.push(i);
                }
                None => fresh.push(i),
            }
        }

        // Who owns what once the replaced packages are gone (case-insensitively, so the
        // outcome does not depend on the file system).
        let replaced_names: HashSet<&str> = replaced.iter().map(|p| p.name.as_str()).collect();
        let mut owners: HashMap<String, String> = HashMap::new();
        for p in record
            .packages
            .iter()
            .filter(|p| !replaced_names.contains(p.name.as_str()))
        {
            for entry in &p.top_level {
                owners.insert(entry.to_lowercase(), p.name.clone());
            }
        }
        let moves_out: Vec<String> = replaced.iter().flat_map(|p| p.top_level.clone()).collect();
        let moving_out: HashSet<&str> = moves_out.iter().map(String::as_str).collect();
        for &i in &fresh {
            let info = &infos[i];
            for entry in &info.top_level {
                if let Some(owner) = owners.insert(entry.to_lowercase(), info.name.clone()) {
                    return Err(PackageError::FileConflict {
                        name: info.name.clone(),
                        entry: entry.clone(),
                        owner,
                    });
                }
                // Something the record does not know about (created after `open`).
                if !moving_out.contains(entry.as_str())
                    && self.dir.join(entry).symlink_metadata().is_ok()
                {
                    return Err(PackageError::FileConflict {
                        name: info.name.clone(),
                        entry: entry.clone(),
                        owner: "an unmanaged file".into(),
                    });
                }
            }
        }

        let needed: u64 = fresh.iter().map(|&i| infos[i].unpacked_bytes).sum();
        if needed > limits.max_unpacked_bytes {
            return Err(PackageError::TooLarge(format!(
                "unpacking it would write {needed} bytes, more than the limit of {} bytes",
                limits.max_unpacked_bytes
            )));
        }
        let current_total: u64 = record.packages.iter().map(|p| p.bytes).sum();
        let freed: u64 = replaced.iter().map(|p| p.bytes).sum();
        let kept = current_total.saturating_sub(freed);
        let available = quota_bytes.saturating_sub(kept);
        if needed > available {
            return Err(PackageError::QuotaExceeded { needed, available });
        }

        // The headers passed; now write, never more than they declared.
        let mut budget = needed;
        let mut moves_in: Vec<MoveIn> = Vec::new();
        let mut fresh_installed: Vec<Installed> = Vec::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for &i in &fresh {
            let dest = staging.join(format!("w{i}"));
            let u = unpack_wheel(&wheels[i], &dest, limits, budget)?;
            if u.info.name != infos[i].name
                || u.info.version != infos[i].version
                || u.info.top_level != infos[i].top_level
            {
                return Err(PackageError::InvalidWheel(
                    "the wheel file changed while it was being installed".into(),
                ));
            }
            budget = budget.saturating_sub(u.bytes);
            for entry in &u.info.top_level {
                moves_in.push(MoveIn {
                    from: dest.join(entry),
                    entry: entry.clone(),
                    package: u.info.name.clone(),
                });
            }
            fresh_installed.push(Installed {
                name: u.info.name,
                version: u.info.version,
                sha256: u.info.sha256,
                bytes: u.bytes,
                top_level: u.info.top_level,
                installed_at_unix: now,
            });
        }

        let mut packages: BTreeMap<String, Installed> = record
            .packages
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        for p in fresh_installed {
            packages.insert(p.name.clone(), p);
        }
        let result = infos
            .iter()
            .filter_map(|info| packages.get(&info.name).cloned())
            .collect();
        Ok(Prepared {
            record: Record {
                format: RECORD_FORMAT,
                packages: packages.into_values().collect(),
            },
            moves_out,
            moves_in,
            result,
        })
    }

    /// Steps 2–6. On failure the transaction is rolled back before returning.
    fn commit(
        &self,
        staging: &Path,
        new_record: &Record,
        moves_out: &[String],
        moves_in: &[MoveIn],
    ) -> Result<(), PackageError> {
        let outcome = (|| -> Result<(), PackageError> {
            write_synced(&staging.join(PENDING_RECORD), &record_bytes(new_record)?)?;
            let old = staging.join(OLD_DIR);
            fs::create_dir(&old).map_err(PackageError::io("installing"))?;
            for entry in moves_out {
                let from = self.dir.join(entry);
                if from.symlink_metadata().is_ok() {
                    fs::rename(&from, old.join(entry)).map_err(PackageError::io("installing"))?;
                }
            }
            for m in moves_in {
                let to = self.dir.join(&m.entry);
                // rename() would silently replace a file; nothing may be there.
                if to.symlink_metadata().is_ok() {
                    return Err(PackageError::FileConflict {
                        name: m.package.clone(),
                        entry: m.entry.clone(),
                        owner: "an unmanaged file".into(),
                    });
                }
                fs::rename(&m.from, &to).map_err(PackageError::io("installing"))?;
            }
            fs::rename(staging.join(PENDING_RECORD), self.dir.join(RECORD_FILE))
                .map_err(PackageError::io("writing the package record"))
        })();
        match outcome {
            Ok(()) => {
                // Committed. A failed fsync or clean-up does not undo that; recovery deletes
                // the leftovers next time.
                if let Err(e) = sync_dir(&self.dir) {
                    tracing::warn!(error = %e, "fsync of the site folder failed");
                }
                remove_all_logged(staging);
                Ok(())
            }
            Err(e) => {
                if let Err(undo) = self.recover() {
                    tracing::error!(error = %undo, "rolling back a failed install failed; the next open retries");
                }
                Err(e)
            }
        }
    }

    /// Rolls back or clears every staging directory, then deletes top-level entries that no
    /// package owns. Must run under the lock.
    fn recover(&self) -> Result<(), PackageError> {
        let io = PackageError::io("recovering the site folder");
        for entry in
            fs::read_dir(&self.dir).map_err(PackageError::io("recovering the site folder"))?
        {
            let entry = entry.map_err(PackageError::io("recovering the site folder"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(STAGING_PREFIX) {
                continue;
            }
            let staging = entry.path();
            if staging.join(PENDING_RECORD).symlink_metadata().is_ok() {
                self.roll_back(&staging)?;
            }
            remove_all(&staging).map_err(PackageError::io("recovering the site folder"))?;
        }
        let record = self.read_record()?;
        let owned: HashSet<&str> = record
            .packages
            .iter()
            .flat_map(|p| p.top_level.iter().map(String::as_str))
            .collect();
        for entry in
            fs::read_dir(&self.dir).map_err(PackageError::io("recovering the site folder"))?
        {
            let entry = entry.map_err(PackageError::io("recovering the site folder"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                // Not something we could have written.
                tracing::warn!(entry = ?name, "removing an untracked entry");
                remove_all(&entry.path())
                    .map_err(PackageError::io("recovering the site folder"))?;
                continue;
            };
            if name == RECORD_FILE || name == LOCK_FILE || owned.contains(name) {
                continue;
            }
            tracing::warn!(entry = %name, "removing an entry no installed package owns");
            remove_all(&entry.path()).map_err(PackageError::io("recovering the site folder"))?;
        }
        sync_dir(&self.dir).map_err(io)
    }

    /// Undoes a pending transaction: puts every moved-out entry back, replacing whatever new
    /// entry took its place (anything at that name now must have been moved in after it).
    fn roll_back(&self, staging: &Path) -> Result<(), PackageError> {
        let old = staging.join(OLD_DIR);
        let Ok(entries) = fs::read_dir(&old) else {
            return Ok(()); // nothing was moved out yet
        };
        for entry in entries {
            let entry = entry.map_err(PackageError::io("rolling back an install"))?;
            let name = entry.file_name();
            let target = self.dir.join(&name);
            if target.symlink_metadata().is_ok() {
                remove_all(&target).map_err(PackageError::io("rolling back an install"))?;
            }
            fs::rename(entry.path(), &target)
                .map_err(PackageError::io("rolling back an install"))?;
            tracing::warn!(entry = ?name, "restored after an interrupted install");
        }
        Ok(())
    }

    fn read_record(&self) -> Result<Record, PackageError> {
        let path = self.dir.join(RECORD_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Record {
                    format: RECORD_FORMAT,
                    packages: Vec::new(),
                });
            }
            Err(e) => return Err(PackageError::io("reading the package record")(e)),
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|e| corrupt_record(&e.to_string()))?;
        if record.format != RECORD_FORMAT {
            return Err(corrupt_record("unknown format"));
        }
        // The record drives deletions, so never trust it to name anything outside the folder.
        for p in &record.packages {
            if normalize_name(&p.name).ok().as_deref() != Some(p.name.as_str())
                || p.top_level.iter().any(|e| !is_plain_entry(e))
            {
                return Err(corrupt_record("invalid entry"));
            }
        }
        Ok(record)
    }

    fn lock(&self) -> Result<File, PackageError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))
            .map_err(PackageError::io("locking the site folder"))?;
        file.lock()
            .map_err(PackageError::io("locking the site folder"))?;
        Ok(file) // unlocked when closed
    }

    fn new_staging(&self) -> Result<PathBuf, PackageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = self.dir.join(format!(
            "{STAGING_PREFIX}{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).map_err(PackageError::io("creating a staging folder"))?;
        Ok(path)
    }
}

struct Prepared {
    record: Record,
    /// Entries of replaced packages.
    moves_out: Vec<String>,
    moves_in: Vec<MoveIn>,
    result: Vec<Installed>,
}

/// A new top-level entry waiting in staging.
struct MoveIn {
    from: PathBuf,
    entry: String,
    package: String,
}

/// A single, ordinary, non-reserved path component.
fn is_plain_entry(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with(RESERVED_PREFIX)
}

fn corrupt_record(detail: &str) -> PackageError {
    tracing::error!(detail, "the package record is corrupt");
    PackageError::Io {
        what: "reading the package record",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the record is corrupt"),
    }
}

fn record_bytes(record: &Record) -> Result<Vec<u8>, PackageError> {
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|e| PackageError::Io {
        what: "writing the package record",
        source: e.into(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    let mut file = File::create(path).map_err(PackageError::io("writing the package record"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(PackageError::io("writing the package record"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file or a whole tree without following symlinks.
fn remove_all(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_all_logged(path: &Path) {
    if let Err(e) = remove_all(path) {
        tracing::warn!(error = %e, "removing a staging folder failed; the next open retries");
    }
}
