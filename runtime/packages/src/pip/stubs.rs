//! Telling pip about the distributions built into the sandbox's interpreter.
//!
//! pip resolves dependencies for an empty target, so a pure-Python package that needs numpy
//! would fail (numpy has no pure-Python wheel) or, worse, make pip backtrack silently to an
//! ancient release that did not need it. We give pip a `--find-links` directory of tiny
//! stand-in wheels (metadata only, no code) at exactly the built-in versions, plus a
//! constraints file pinning those versions, so pip picks the built-in copy and reports a
//! readable conflict when a package needs a different version. The stand-ins pip "downloads"
//! are dropped from the result; they are never installed.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;

use crate::builtin::BUILT_IN;

/// Writes one stand-in wheel per built-in distribution into `dir`.
pub(crate) fn write_stub_wheels(dir: &Path) -> Result<(), StubError> {
    for (name, version) in BUILT_IN {
        // Wheel file names and .dist-info directories use `_` where the normalized name has `-`.
        let escaped = name.replace('-', "_");
        let dist_info = format!("{escaped}-{version}.dist-info");
        let file = File::create(dir.join(format!("{escaped}-{version}-py3-none-any.whl")))?;
        let mut zip = zip::ZipWriter::new(file);
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o644);
        zip.start_file(format!("{dist_info}/METADATA"), options)?;
        write!(
            zip,
            "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: Built into the scriptbox sandbox.\n"
        )?;
        zip.start_file(format!("{dist_info}/WHEEL"), options)?;
        zip.write_all(
            b"Wheel-Version: 1.0\nGenerator: scriptbox\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )?;
        zip.start_file(format!("{dist_info}/RECORD"), options)?;
        write!(
            zip,
            "{dist_info}/METADATA,,\n{dist_info}/WHEEL,,\n{dist_info}/RECORD,,\n"
        )?;
        zip.finish()?;
    }
    Ok(())
}

/// A pip constraints file pinning every built-in distribution to its built-in version.
pub(crate) fn constraints() -> String {
    BUILT_IN
        .iter()
        .map(|(name, version)| format!("{name}=={version}\n"))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StubError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Zip(#[from] zip::result::ZipError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Limits, inspect_wheel};

    #[test]
    fn stubs_are_valid_pure_wheels() {
        let dir = tempfile::tempdir().unwrap();
        write_stub_wheels(dir.path()).unwrap();
        let mut count = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let info = inspect_wheel(&entry.unwrap().path(), &Limits::default()).unwrap();
            assert_eq!(
                crate::built_in_version(&info.name),
                Some(info.version.as_str())
            );
            count += 1;
        }
        assert_eq!(count, BUILT_IN.len());
        assert!(constraints().contains("numpy==2.5.2\n"));
    }
}
