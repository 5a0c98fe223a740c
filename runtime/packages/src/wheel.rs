//! Inspecting and unpacking one wheel without trusting it.
//!
//! A wheel is a zip file that pip downloaded from the internet, so every name, mode and size in
//! it is attacker-controlled. Before anything is written we check every entry name (no absolute
//! paths, `..`, backslashes, drive letters, NUL or control characters), refuse symlinks and
//! other special files, duplicates (also ones differing only in case, which would collide on a
//! case-insensitive file system), and anything that is not pure Python. While copying we count
//! the bytes actually produced by the decompressor against the limits instead of believing the
//! headers. Files are created with `create_new` (so an existing path, symlink or not, is never
//! followed or overwritten) with mode 0o644, directories with 0o755, and nothing is executed.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use crate::requirement::is_valid_name;
use crate::{Limits, PackageError, normalize_name};

/// Prefix of the names this crate keeps in a site folder (record, lock, staging); a wheel may
/// not ship a top-level entry starting with it.
pub(crate) const RESERVED_PREFIX: &str = ".scriptbox";

/// Extensions of compiled extension modules and shared libraries.
const NATIVE_EXTENSIONS: [&str; 4] = [".so", ".pyd", ".dylib", ".dll"];
/// Content of the PEP 376 `INSTALLER` file we add to the `.dist-info` directory.
const INSTALLER: &[u8] = b"scriptbox\n";
/// Longest entry name we accept, in bytes.
const MAX_NAME_LEN: usize = 1024;
/// Cap on the header part of `WHEEL` and `METADATA` (the description after it is not read).
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// What a wheel is, from its metadata, before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelInfo {
    /// PEP 503-normalized distribution name from `METADATA`.
    pub name: String,
    /// `Version` from `METADATA`.
    pub version: String,
    /// Hex SHA-256 of the wheel file.
    pub sha256: String,
    /// Size of the wheel file.
    pub wheel_bytes: u64,
    /// Bytes unpacking it will write, by its headers (unpacking refuses to write more).
    pub unpacked_bytes: u64,
    /// The entries it creates at the top of site-packages (packages, modules, its
    /// `.dist-info`), sorted.
    pub top_level: Vec<String>,
}

/// A wheel unpacked into a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub info: WheelInfo,
    /// Bytes written (file contents, counted while copying).
    pub bytes: u64,
    /// Files written.
    pub files: usize,
}

/// One entry of the archive that will be written, at `target` (a relative `/`-separated path).
struct PlannedEntry {
    index: usize,
    target: String,
    is_dir: bool,
    declared_size: u64,
}

struct Plan {
    info: WheelInfo,
    dist_info: String,
    entries: Vec<PlannedEntry>,
}

/// Checks a wheel (size, entry names, metadata, purity) without writing anything.
pub fn inspect_wheel(path: &Path, limits: &Limits) -> Result<WheelInfo, PackageError> {
    let (_, plan) = open_and_plan(path, limits)?;
    Ok(plan.info)
}

/// Checks a wheel and unpacks it into `dest`, which must not exist yet (it is created).
///
/// At most `budget` bytes (and never more than `limits.max_unpacked_bytes`) are written; the
/// caller passes what is left of the install's allowance. On error, `dest` may hold a partial
/// tree: the caller unpacks into a staging directory and removes it.
pub fn unpack_wheel(
    path: &Path,
    dest: &Path,
    limits: &Limits,
    budget: u64,
) -> Result<Unpacked, PackageError> {
    let (mut archive, plan) = open_and_plan(path, limits)?;
    let mut remaining = budget.min(limits.max_unpacked_bytes);
    let mut dirs = DirMaker::new(dest)?;
    let mut files = 0usize;
    let mut written = 0u64;
    for entry in &plan.entries {
        let components: Vec<&str> = entry.target.split('/').collect();
        if entry.is_dir {
            dirs.ensure(&components)?;
            continue;
        }
        let (file_name, parents) = components
            .split_last()
            .ok_or_else(|| PackageError::UnsafeWheel("an entry has an empty name".into()))?;
        let parent = dirs.ensure(parents)?;
        let mut source = archive
            .by_index(entry.index)
            .map_err(|e| corrupt(&format!("entry {} cannot be read", shown(&entry.target)), e))?;
        let mut out = create_file(&parent.join(file_name))?;
        // Copy at most one byte more than allowed, so "too big" is detected without writing
        // more than that, whatever the headers claim.
        let allowed = entry.declared_size.min(remaining);
        let copied = std::io::copy(&mut (&mut source).take(allowed.saturating_add(1)), &mut out)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                    PackageError::InvalidWheel(format!("entry {} is corrupt", shown(&entry.target)))
                }
                _ => PackageError::Io {
                    what: "unpacking a wheel",
                    source: e,
                },
            })?;
        if copied > entry.declared_size {
            return Err(PackageError::UnsafeWheel(format!(
                "entry {} is larger than its header declares",
                shown(&entry.target)
            )));
        }
        if copied > remaining {
            return Err(too_large_unpacked(limits, budget));
        }
        remaining -= copied;
        written += copied;
        files += 1;
        // Durable before the install is committed by renaming the record.
        out.sync_all()
            .map_err(PackageError::io("unpacking a wheel"))?;
    }
    // Mark the distribution as installed by us (PEP 376 INSTALLER); the wheel's own copy, if
    // any, was skipped when planning.
    let installer = INSTALLER;
    let parent = dirs.ensure(&[plan.dist_info.as_str()])?;
    let mut out = create_file(&parent.join("INSTALLER"))?;
    out.write_all(installer)
        .and_then(|()| out.sync_all())
        .map_err(PackageError::io("unpacking a wheel"))?;
    written += installer.len() as u64;
    files += 1;
    Ok(Unpacked {
        info: plan.info,
        bytes: written,
        files,
    })
}

fn too_large_unpacked(limits: &Limits, budget: u64) -> PackageError {
    PackageError::TooLarge(format!(
        "unpacking it would write more than {} bytes",
        budget.min(limits.max_unpacked_bytes)
    ))
}

fn corrupt(what: &str, e: zip::result::ZipError) -> PackageError {
    tracing::debug!(error = %e, "{what}");
    PackageError::InvalidWheel(what.to_string())
}

/// Opens the wheel, hashes it, and decides what will be written where, refusing anything
/// unsafe or impure. Nothing is written.
fn open_and_plan(path: &Path, limits: &Limits) -> Result<(ZipArchive<File>, Plan), PackageError> {
    let meta = fs::symlink_metadata(path).map_err(PackageError::io("opening a wheel"))?;
    if !meta.is_file() {
        return Err(PackageError::InvalidWheel(
            "it is not a regular file".into(),
        ));
    }
    if meta.len() > limits.max_wheel_bytes {
        return Err(PackageError::TooLarge(format!(
            "the wheel file has {} bytes, more than the limit of {} bytes",
            meta.len(),
            limits.max_wheel_bytes
        )));
    }
    let mut file = File::open(path).map_err(PackageError::io("opening a wheel"))?;
    let (sha256, wheel_bytes) = hash_file(&mut file, limits.max_wheel_bytes)?;
    let mut archive =
        ZipArchive::new(file).map_err(|e| corrupt("it is not a readable zip archive", e))?;
    if archive.has_duplicate_names() {
        return Err(PackageError::UnsafeWheel(
            "it contains duplicate entry names".into(),
        ));
    }
    if archive.len() > limits.max_files {
        return Err(PackageError::TooLarge(format!(
            "the wheel has {} entries, more than the limit of {}",
            archive.len(),
            limits.max_files
        )));
    }

    let raw = list_entries(&archive)?;
    let dist_info = find_dist_info(&raw)?;
    let stem = dist_info.trim_end_matches(".dist-info").to_string();
    let data_dir = format!("{stem}.data");

    let wheel_headers = read_headers(&mut archive, &format!("{dist_info}/WHEEL"))?;
    let metadata = read_headers(&mut archive, &format!("{dist_info}/METADATA"))?;
    let (name, version) = name_and_version(&metadata, &stem)?;
    check_purity(&wheel_headers, &name)?;
    if let Some(native) = raw.iter().find(|e| is_native(&e.name)) {
        tracing::info!(package = %name, entry = %shown(&native.name), "wheel contains native code");
        return Err(PackageError::NativeOnly { name });
    }

    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let mut file_targets = HashSet::new();
    let mut dir_targets = HashSet::new();
    let mut top_level = BTreeSet::new();
    let mut declared_total = 0u64;
    for entry in &raw {
        let Some(target) = map_target(&entry.name, &data_dir, &dist_info)? else {
            continue;
        };
        let components: Vec<&str> = target.split('/').collect();
        let top = components[0];
        if top.starts_with(RESERVED_PREFIX) {
            return Err(PackageError::UnsafeWheel(format!(
                "entry {} uses a reserved name",
                shown(&entry.name)
            )));
        }
        if top.ends_with(".dist-info") && top != dist_info {
            return Err(PackageError::InvalidWheel(
                "it contains more than one .dist-info directory".into(),
            ));
        }
        if components.len() == 1 && !entry.is_dir && top.ends_with(".pth") {
            // .pth files run code at interpreter start-up and extend sys.path; a tenant's
            // package does not get to do that.
            tracing::info!(package = %name, entry = %shown(top), "skipping .pth file");
            continue;
        }
        // Case-insensitive, so the result is the same on case-insensitive file systems.
        if !seen.insert(target.to_lowercase()) {
            return Err(PackageError::UnsafeWheel(format!(
                "entry {} occurs more than once",
                shown(&target)
            )));
        }
        for depth in 1..components.len() {
            dir_targets.insert(components[..depth].join("/").to_lowercase());
        }
        if entry.is_dir {
            dir_targets.insert(target.to_lowercase());
        } else {
            file_targets.insert(target.to_lowercase());
            declared_total = declared_total.saturating_add(entry.size);
        }
        top_level.insert(top.to_string());
        entries.push(PlannedEntry {
            index: entry.index,
            target,
            is_dir: entry.is_dir,
            declared_size: entry.size,
        });
    }
    if let Some(both) = file_targets.intersection(&dir_targets).next() {
        return Err(PackageError::UnsafeWheel(format!(
            "{} is both a file and a directory",
            shown(both)
        )));
    }
    if declared_total > limits.max_unpacked_bytes {
        return Err(PackageError::TooLarge(format!(
            "its files declare {declared_total} bytes, more than the limit of {} bytes",
            limits.max_unpacked_bytes
        )));
    }
    top_level.insert(dist_info.clone());
    Ok((
        archive,
        Plan {
            info: WheelInfo {
                name,
                version,
                sha256,
                wheel_bytes,
                unpacked_bytes: declared_total.saturating_add(INSTALLER.len() as u64),
                top_level: top_level.into_iter().collect(),
            },
            dist_info,
            entries,
        },
    ))
}

fn hash_file(file: &mut File, max: u64) -> Result<(String, u64), PackageError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    // Bounded even if the file grows after the size check.
    let mut reader = (&mut *file).take(max.saturating_add(1));
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(PackageError::io("hashing a wheel"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total > max {
        return Err(PackageError::TooLarge(format!(
            "the wheel file is larger than the limit of {max} bytes"
        )));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(PackageError::io("reading a wheel"))?;
    Ok((hex::encode(hasher.finalize()), total))
}

struct RawEntry {
    index: usize,
    name: String,
    is_dir: bool,
    size: u64,
}

/// Reads and checks every entry's name and type from the central directory.
fn list_entries(archive: &ZipArchive<File>) -> Result<Vec<RawEntry>, PackageError> {
    let mut out = Vec::with_capacity(archive.len());
    let mut seen = HashSet::new();
    for index in 0..archive.len() {
        let entry = archive
            .by_index_data(index)
            .map_err(|e| corrupt("its central directory is corrupt", e))?;
        // Wheels use UTF-8 names; decoding the raw bytes ourselves avoids the CP437 fallback
        // giving a different name than the bytes say.
        let name = std::str::from_utf8(entry.name_raw())
            .map_err(|_| PackageError::UnsafeWheel("an entry name is not valid UTF-8".into()))?
            .to_string();
        check_entry_name(&name)?;
        if entry.encrypted() {
            return Err(PackageError::InvalidWheel(format!(
                "entry {} is encrypted",
                shown(&name)
            )));
        }
        let file_type = entry.unix_mode().map_or(0, |mode| mode & S_IFMT);
        match file_type {
            S_IFLNK => {
                return Err(PackageError::UnsafeWheel(format!(
                    "entry {} is a symbolic link",
                    shown(&name)
                )));
            }
            0 | S_IFREG | S_IFDIR => {}
            _ => {
                return Err(PackageError::UnsafeWheel(format!(
                    "entry {} is a special file",
                    shown(&name)
                )));
            }
        }
        let is_dir = name.ends_with('/') || file_type == S_IFDIR;
        let trimmed = name.trim_end_matches('/').to_string();
        if !seen.insert(trimmed.to_lowercase()) {
            return Err(PackageError::UnsafeWheel(format!(
                "entry {} occurs more than once",
                shown(&trimmed)
            )));
        }
        out.push(RawEntry {
            index,
            name: trimmed,
            is_dir,
            size: entry.size(),
        });
    }
    Ok(out)
}

/// Refuses names that could point outside the destination or mean different things on
/// different systems (also used for the zip of a tenant's script package).
pub fn check_entry_name(name: &str) -> Result<(), PackageError> {
    let refuse = |why: &str| {
        Err(PackageError::UnsafeWheel(format!(
            "entry {} {why}",
            shown(name)
        )))
    };
    if name.is_empty() || name == "/" {
        return refuse("has an empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("has a name that is too long");
    }
    if name.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if name.contains('\\') {
        return refuse("contains a backslash");
    }
    if name.starts_with('/') {
        return refuse("is an absolute path");
    }
    if name.contains(':') {
        // Drive letters (`C:foo`) and NTFS streams; never needed in a wheel.
        return refuse("contains a colon");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    for component in name.strip_suffix('/').unwrap_or(name).split('/') {
        match component {
            "" => return refuse("has an empty path component"),
            "." | ".." => return refuse("contains a '.' or '..' path component"),
            _ => {}
        }
    }
    Ok(())
}

fn find_dist_info(raw: &[RawEntry]) -> Result<String, PackageError> {
    let tops: BTreeSet<&str> = raw
        .iter()
        .filter_map(|e| e.name.split('/').next())
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    let mut iter = tops.into_iter();
    match (iter.next(), iter.next()) {
        (Some(one), None) => Ok(one.to_string()),
        (None, _) => Err(PackageError::InvalidWheel(
            "it has no .dist-info directory".into(),
        )),
        (Some(_), Some(_)) => Err(PackageError::InvalidWheel(
            "it contains more than one .dist-info directory".into(),
        )),
    }
}

/// Where an entry goes relative to site-packages, or `None` if it is not installed.
fn map_target(name: &str, data_dir: &str, dist_info: &str) -> Result<Option<String>, PackageError> {
    if name == format!("{dist_info}/INSTALLER") {
        return Ok(None); // replaced by ours
    }
    let Some(rest) = name.strip_prefix(data_dir) else {
        return Ok(Some(name.to_string()));
    };
    let Some(rest) = rest.strip_prefix('/') else {
        // Either the `.data` directory itself or an unrelated name sharing the prefix.
        return Ok(if rest.is_empty() {
            None
        } else {
            Some(name.to_string())
        });
    };
    let (scheme, path) = rest.split_once('/').unwrap_or((rest, ""));
    match scheme {
        // Pure and platform libraries both belong at the root of site-packages.
        "purelib" | "platlib" => Ok((!path.is_empty()).then(|| path.to_string())),
        // Console scripts, C headers and data files have no place in the sandbox.
        "scripts" | "headers" | "data" => Ok(None),
        _ => Err(PackageError::InvalidWheel(format!(
            "entry {} is in an unknown .data category",
            shown(name)
        ))),
    }
}

fn is_native(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let file = lower.rsplit('/').next().unwrap_or(&lower);
    NATIVE_EXTENSIONS.iter().any(|ext| file.ends_with(ext)) || file.contains(".so.")
}

/// Parsed `Key: value` headers (RFC 822 style, as in `WHEEL` and `METADATA`), in order.
type Headers = Vec<(String, String)>;

fn header<'a>(headers: &'a Headers, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Reads the header block of a metadata file (up to the first blank line).
fn read_headers(archive: &mut ZipArchive<File>, name: &str) -> Result<Headers, PackageError> {
    let file_name = name.rsplit('/').next().unwrap_or(name);
    let entry = archive.by_name(name).map_err(|_| {
        PackageError::InvalidWheel(format!("its .dist-info directory has no {file_name} file"))
    })?;
    let mut reader = BufReader::new(entry.take(MAX_HEADER_BYTES));
    let mut headers: Headers = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|_| {
            PackageError::InvalidWheel(format!("its {file_name} file is not readable UTF-8 text"))
        })?;
        let text = line.trim_end_matches(['\r', '\n']);
        if n == 0 || text.is_empty() {
            break;
        }
        if text.starts_with([' ', '\t']) {
            // A continuation line; only descriptions use them and we do not need their text.
            continue;
        }
        if let Some((key, value)) = text.split_once(':') {
            headers.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(headers)
}

fn name_and_version(metadata: &Headers, stem: &str) -> Result<(String, String), PackageError> {
    let raw_name = header(metadata, "Name")
        .filter(|n| is_valid_name(n))
        .ok_or_else(|| PackageError::InvalidWheel("its METADATA has no valid Name".into()))?;
    let name = normalize_name(raw_name)?;
    let version = header(metadata, "Version")
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'!' | b'_' | b'-')
                })
        })
        .ok_or_else(|| PackageError::InvalidWheel("its METADATA has no valid Version".into()))?
        .to_string();
    let stem_name = stem.split_once('-').map_or(stem, |(n, _)| n);
    if normalize_name(stem_name).ok().as_deref() != Some(name.as_str()) {
        return Err(PackageError::InvalidWheel(
            "its .dist-info directory does not match the name in METADATA".into(),
        ));
    }
    Ok((name, version))
}

/// Requires `Root-Is-Purelib: true` and only pure tags (`pyX-none-any`).
fn check_purity(wheel: &Headers, name: &str) -> Result<(), PackageError> {
    let native = || PackageError::NativeOnly {
        name: name.to_string(),
    };
    if !header(wheel, "Root-Is-Purelib").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(native());
    }
    let tags: Vec<&str> = wheel
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Tag"))
        .map(|(_, v)| v.as_str())
        .collect();
    if tags.is_empty() {
        return Err(PackageError::InvalidWheel(
            "its WHEEL file has no Tag".into(),
        ));
    }
    let mut python3 = false;
    for tag in tags {
        let parts: Vec<&str> = tag.split('-').collect();
        let [pythons, abis, platforms] = parts.as_slice() else {
            return Err(PackageError::InvalidWheel(
                "its WHEEL file has a malformed Tag".into(),
            ));
        };
        let pure_python = |p: &str| {
            p.strip_prefix("py")
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        };
        if !pythons.split('.').all(pure_python)
            || !abis.split('.').all(|a| a == "none")
            || !platforms.split('.').all(|p| p == "any")
        {
            return Err(native());
        }
        python3 |= pythons.split('.').any(|p| p.starts_with("py3"));
    }
    if !python3 {
        return Err(PackageError::InvalidWheel(
            "it is not built for Python 3".into(),
        ));
    }
    Ok(())
}

/// An entry name made safe to put in a message or a log line: escaped and shortened.
pub(crate) fn shown(name: &str) -> String {
    let mut escaped: String = name.escape_default().collect();
    if escaped.len() > 80 {
        let mut cut = 77;
        while !escaped.is_char_boundary(cut) {
            cut -= 1;
        }
        escaped.truncate(cut);
        escaped.push_str("...");
    }
    format!("'{escaped}'")
}

fn create_file(path: &Path) -> Result<File, PackageError> {
    let mut options = fs::OpenOptions::new();
    // `create_new` is O_CREAT|O_EXCL: it fails on any existing path, including a symlink,
    // instead of following it.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    let file = options
        .open(path)
        .map_err(PackageError::io("unpacking a wheel"))?;
    // Exactly 0o644 whatever the umask is; fchmod on the open file, never through a path.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(PackageError::io("unpacking a wheel"))?;
    Ok(file)
}

/// Creates directories under a root, one component at a time, with mode 0o755, refusing to
/// pass through anything that is not a real directory.
struct DirMaker<'a> {
    root: &'a Path,
    made: HashSet<String>,
}

impl<'a> DirMaker<'a> {
    fn new(root: &'a Path) -> Result<Self, PackageError> {
        make_dir(root)?;
        Ok(DirMaker {
            root,
            made: HashSet::new(),
        })
    }

    fn ensure(&mut self, components: &[&str]) -> Result<std::path::PathBuf, PackageError> {
        let mut path = self.root.to_path_buf();
        for depth in 0..components.len() {
            path.push(components[depth]);
            let key = components[..=depth].join("/");
            if self.made.contains(&key) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(PackageError::UnsafeWheel(format!(
                        "{} is both a file and a directory",
                        shown(&key)
                    )));
                }
                Err(_) => make_dir(&path)?,
            }
            self.made.insert(key);
        }
        Ok(path)
    }
}

fn make_dir(path: &Path) -> Result<(), PackageError> {
    fs::create_dir(path).map_err(PackageError::io("unpacking a wheel"))?;
    #[cfg(unix)]
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(PackageError::io("unpacking a wheel"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        for good in [
            "pkg/__init__.py",
            "pkg/",
            "a.py",
            "pkg-1.0.dist-info/RECORD",
            "x/y z.txt",
        ] {
            assert!(check_entry_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/",
            "/etc/passwd",
            "../evil.py",
            "pkg/../../evil",
            "pkg/./x",
            "a//b",
            "C:evil",
            "c:/x",
            "a\\b",
            "a\0b",
            "a\nb",
            "pkg/..",
        ] {
            assert_eq!(
                check_entry_name(bad).map_err(|e| e.code()),
                Err("unsafe_wheel"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn native_names() {
        for native in [
            "x/_speedups.cpython-311-x86_64-linux-gnu.so",
            "a.pyd",
            "lib/libfoo.so.1",
            "X.DLL",
            "m.dylib",
        ] {
            assert!(is_native(native), "{native}");
        }
        for pure in ["x/so.py", "sox/a.py", "a.solution", "x.dll.txt"] {
            assert!(!is_native(pure), "{pure}");
        }
    }

    #[test]
    fn data_mapping() {
        let m = |n| {
            map_target(n, "p-1.0.data", "p-1.0.dist-info")
                .ok()
                .flatten()
        };
        assert_eq!(m("p/__init__.py").as_deref(), Some("p/__init__.py"));
        assert_eq!(m("p-1.0.data/purelib/q/x.py").as_deref(), Some("q/x.py"));
        assert_eq!(m("p-1.0.data/platlib/q.py").as_deref(), Some("q.py"));
        assert_eq!(m("p-1.0.data/scripts/tool"), None);
        assert_eq!(m("p-1.0.data/headers/x.h"), None);
        assert_eq!(m("p-1.0.data/data/share/x"), None);
        assert_eq!(m("p-1.0.data"), None);
        assert_eq!(m("p-1.0.data/purelib"), None);
        assert_eq!(m("p-1.0.dist-info/INSTALLER"), None);
        assert!(map_target("p-1.0.data/other/x", "p-1.0.data", "p-1.0.dist-info").is_err());
    }

    #[test]
    fn tags() {
        let wheel = |purelib: &str, tags: &[&str]| -> Headers {
            let mut h = vec![("Root-Is-Purelib".to_string(), purelib.to_string())];
            h.extend(tags.iter().map(|t| ("Tag".to_string(), t.to_string())));
            h
        };
        let code = |h: &Headers| check_purity(h, "p").map_err(|e| e.code());
        assert_eq!(code(&wheel("true", &["py3-none-any"])), Ok(()));
        assert_eq!(
            code(&wheel("true", &["py2-none-any", "py3-none-any"])),
            Ok(())
        );
        assert_eq!(code(&wheel("true", &["py2.py3-none-any"])), Ok(()));
        assert_eq!(code(&wheel("True", &["py312-none-any"])), Ok(()));
        assert_eq!(code(&wheel("false", &["py3-none-any"])), Err("native_only"));
        assert_eq!(
            code(&wheel("true", &["cp311-cp311-manylinux_2_17_x86_64"])),
            Err("native_only")
        );
        assert_eq!(
            code(&wheel("true", &["cp311-none-any"])),
            Err("native_only")
        );
        assert_eq!(code(&wheel("true", &["py3-abi3-any"])), Err("native_only"));
        assert_eq!(
            code(&wheel("true", &["py3-none-linux_x86_64"])),
            Err("native_only")
        );
        assert_eq!(
            code(&wheel("true", &["py3-none-any", "py3-none-win32"])),
            Err("native_only")
        );
        assert_eq!(
            code(&wheel("true", &["py2-none-any"])),
            Err("invalid_wheel")
        );
        assert_eq!(code(&wheel("true", &[])), Err("invalid_wheel"));
        assert_eq!(code(&wheel("true", &["py3-none"])), Err("invalid_wheel"));
    }

    #[test]
    fn shown_is_escaped_and_short() {
        assert_eq!(shown("a\nb"), "'a\\nb'");
        assert!(shown(&"x".repeat(500)).len() < 90);
    }
}
