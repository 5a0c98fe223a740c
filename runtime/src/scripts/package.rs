//! A script's content as files: one module's source, or a package's zip read entry by entry
//! without trusting it (the same name checks as a wheel's: no absolute paths, no `..`, no
//! backslashes or control characters; no links or special files; no duplicates; the bytes
//! the decompressor actually produces counted against the limits, never the headers).
//! Nothing is written until every entry has passed.

use std::io::{Read as _, Write as _};
use std::path::Path;

use super::ScriptError;

/// Most entries in a package's zip (files and folders).
pub const MAX_ENTRIES: usize = 1000;
/// Deepest folder nesting in a package.
pub const MAX_DEPTH: usize = 16;

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// A script's files, relative to its folder in `/scripts`: `name.py` for a module,
/// `name/...` for a package.
pub struct Files(pub Vec<(String, Vec<u8>)>);

/// One module: `source` as `<name>.py` (it must be UTF-8).
pub fn module(name: &str, source: &[u8]) -> Result<Files, ScriptError> {
    std::str::from_utf8(source).map_err(|_| ScriptError::NotUtf8)?;
    Ok(Files(vec![(format!("{name}.py"), source.to_vec())]))
}

/// A package: the zip's files under `<name>/` (a zip whose entries all sit in one `name/`
/// folder is taken as that folder). It must have an `__init__.py`; every `.py` must be
/// UTF-8; at most [`MAX_ENTRIES`] entries and `max_bytes` decompressed.
pub fn package(name: &str, zip: &[u8], max_bytes: u64) -> Result<Files, ScriptError> {
    let bad = |why: String| ScriptError::Package(why);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))
        .map_err(|_| bad("the body is not a zip archive".into()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(bad(format!("the zip has more than {MAX_ENTRIES} entries")));
    }
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut budget = max_bytes;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|_| bad("the zip's central directory is damaged".into()))?;
        let raw = std::str::from_utf8(entry.name_raw())
            .map_err(|_| bad("an entry name is not UTF-8".into()))?
            .to_owned();
        scriptbox_packages::check_entry_name(&raw).map_err(|err| bad(err.to_string()))?;
        if entry.encrypted() {
            return Err(bad(format!("entry {raw:?} is encrypted")));
        }
        let kind = entry.unix_mode().map_or(0, |mode| mode & S_IFMT);
        if !matches!(kind, 0 | S_IFREG | S_IFDIR) {
            return Err(bad(format!("entry {raw:?} is a link or a special file")));
        }
        let path = raw.trim_end_matches('/').to_owned();
        if path.split('/').count() > MAX_DEPTH {
            return Err(bad(format!("entry {raw:?} is nested too deep")));
        }
        if !seen.insert(path.to_lowercase()) {
            return Err(bad(format!("entry {path:?} occurs more than once")));
        }
        if raw.ends_with('/') || kind == S_IFDIR {
            continue;
        }
        let mut bytes = Vec::new();
        let read = (&mut entry)
            .take(budget.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|_| bad(format!("entry {path:?} does not decompress")))?;
        if read as u64 > budget {
            return Err(ScriptError::TooLarge { max: max_bytes });
        }
        budget -= read as u64;
        if path.ends_with(".py") && std::str::from_utf8(&bytes).is_err() {
            return Err(bad(format!("{path} is not UTF-8")));
        }
        entries.push((path, bytes));
    }
    // `name/...` throughout: that folder is the package.
    let prefix = format!("{name}/");
    if !entries.is_empty() && entries.iter().all(|(path, _)| path.starts_with(&prefix)) {
        for (path, _) in &mut entries {
            *path = path[prefix.len()..].to_owned();
        }
    }
    if !entries.iter().any(|(path, _)| path == "__init__.py") {
        return Err(bad(
            "a package needs an __init__.py at the top of the zip (or of its one folder)".into(),
        ));
    }
    Ok(Files(
        entries
            .into_iter()
            .map(|(path, bytes)| (format!("{name}/{path}"), bytes))
            .collect(),
    ))
}

/// Writes `files` into a new folder `target` (which must not exist), through a temporary
/// folder beside it, each file fsynced, then one rename: a crash leaves the folder whole or
/// absent. A folder someone else finished first is kept.
pub fn write(files: &Files, target: &Path) -> std::io::Result<()> {
    let parent = target
        .parent()
        .ok_or_else(|| std::io::Error::other("a script folder has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        for (path, bytes) in &files.0 {
            let file = staging.join(path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)?;
            out.write_all(bytes)?;
            out.sync_all()?;
        }
        std::fs::rename(&staging, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if target.is_dir() {
            return Ok(());
        }
    }
    written?;
    std::fs::File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            out.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("start");
            out.write_all(bytes).expect("write");
        }
        out.finish().expect("finish").into_inner()
    }

    #[test]
    fn packages_are_checked_before_anything_is_kept() {
        let good = zip_of(&[("__init__.py", b"x = 1\n"), ("data/a.json", b"{}")]);
        let files = package("pkg", &good, 1 << 20).expect("good");
        let paths: Vec<&str> = files.0.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["pkg/__init__.py", "pkg/data/a.json"]);
        // One top folder named like the script is that folder.
        let folder = zip_of(&[("pkg/__init__.py", b"")]);
        assert_eq!(
            package("pkg", &folder, 1 << 20).expect("ok").0[0].0,
            "pkg/__init__.py"
        );
        for (zip, what) in [
            (zip_of(&[("../evil.py", b"")]), ".."),
            (zip_of(&[("/etc/x", b"")]), "absolute"),
            (zip_of(&[("helpers.py", b"")]), "no __init__"),
            (zip_of(&[("__init__.py", b"\xff")]), "not UTF-8"),
            (b"not a zip".to_vec(), "not a zip"),
        ] {
            assert!(
                matches!(package("pkg", &zip, 1 << 20), Err(ScriptError::Package(_))),
                "{what}"
            );
        }
        let big = zip_of(&[("__init__.py", &[b'#'; 4096])]);
        assert!(matches!(
            package("pkg", &big, 1000),
            Err(ScriptError::TooLarge { max: 1000 })
        ));
    }
}
