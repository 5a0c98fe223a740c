//! Building test wheels with the zip crate's writer.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

/// A wheel under construction. `METADATA` (unless turned off), `WHEEL` and `RECORD` are added
/// on `write`.
#[derive(Clone)]
pub struct WheelBuilder {
    pub name: String,
    pub version: String,
    pub tag: String,
    pub purelib: bool,
    pub metadata_lines: Vec<String>,
    pub files: Vec<(String, Vec<u8>)>,
    pub symlinks: Vec<(String, String)>,
    pub with_metadata: bool,
    /// Name used for the .dist-info directory, if different from `name`.
    pub dist_info_name: Option<String>,
}

impl WheelBuilder {
    pub fn new(name: &str, version: &str) -> Self {
        WheelBuilder {
            name: name.to_string(),
            version: version.to_string(),
            tag: "py3-none-any".to_string(),
            purelib: true,
            metadata_lines: Vec::new(),
            files: Vec::new(),
            symlinks: Vec::new(),
            with_metadata: true,
            dist_info_name: None,
        }
    }

    /// A typical tiny package: `<module>/__init__.py` with a version string.
    pub fn pure(name: &str, version: &str) -> Self {
        let module = name.replace('-', "_");
        Self::new(name, version)
            .file(
                &format!("{module}/__init__.py"),
                format!("__version__ = '{version}'\n").as_bytes(),
            )
            .file(
                &format!("{module}/util.py"),
                b"def answer():\n    return 42\n",
            )
    }

    pub fn file(mut self, path: &str, content: &[u8]) -> Self {
        self.files.push((path.to_string(), content.to_vec()));
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.symlinks.push((path.to_string(), target.to_string()));
        self
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_string();
        self
    }

    pub fn purelib(mut self, purelib: bool) -> Self {
        self.purelib = purelib;
        self
    }

    pub fn requires(mut self, requirement: &str) -> Self {
        self.metadata_lines
            .push(format!("Requires-Dist: {requirement}"));
        self
    }

    pub fn metadata_line(mut self, line: &str) -> Self {
        self.metadata_lines.push(line.to_string());
        self
    }

    pub fn without_metadata(mut self) -> Self {
        self.with_metadata = false;
        self
    }

    pub fn escaped(&self) -> String {
        self.dist_info_name
            .clone()
            .unwrap_or_else(|| self.name.replace('-', "_"))
    }

    pub fn dist_info(&self) -> String {
        format!("{}-{}.dist-info", self.escaped(), self.version)
    }

    pub fn file_name(&self) -> String {
        format!(
            "{}-{}-{}.whl",
            self.name.replace('-', "_"),
            self.version,
            self.tag
        )
    }

    /// Writes the wheel into `dir` under its standard file name.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join(self.file_name());
        self.write_to(&path);
        path
    }

    pub fn write_to(&self, path: &Path) {
        let file = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644);
        for (name, content) in &self.files {
            zip.start_file(name.as_str(), options).unwrap();
            zip.write_all(content).unwrap();
        }
        for (name, target) in &self.symlinks {
            zip.add_symlink(name.as_str(), target.as_str(), options)
                .unwrap();
        }
        let dist_info = self.dist_info();
        let mut record = String::new();
        if self.with_metadata {
            let mut metadata = format!(
                "Metadata-Version: 2.1\nName: {}\nVersion: {}\nSummary: test package\n",
                self.name, self.version
            );
            for line in &self.metadata_lines {
                metadata.push_str(line);
                metadata.push('\n');
            }
            metadata.push_str("\nA long description that is not read.\n");
            zip.start_file(format!("{dist_info}/METADATA"), options)
                .unwrap();
            zip.write_all(metadata.as_bytes()).unwrap();
            record.push_str(&format!("{dist_info}/METADATA,,\n"));
        }
        {
            zip.start_file(format!("{dist_info}/WHEEL"), options)
                .unwrap();
            write!(
                zip,
                "Wheel-Version: 1.0\nGenerator: scriptbox-tests\nRoot-Is-Purelib: {}\nTag: {}\n",
                self.purelib, self.tag
            )
            .unwrap();
            record.push_str(&format!("{dist_info}/WHEEL,,\n"));
        }
        for (name, _) in &self.files {
            record.push_str(&format!("{name},,\n"));
        }
        record.push_str(&format!("{dist_info}/RECORD,,\n"));
        zip.start_file(format!("{dist_info}/RECORD"), options)
            .unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap();
    }
}

/// Replaces every occurrence of `from` by `to` (same length) in a file: used to give two
/// entries the same name, which the zip writer refuses to do.
pub fn patch_bytes(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let mut i = 0;
    let mut hits = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            hits += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "nothing patched");
    std::fs::write(path, bytes).unwrap();
}

/// Sorted names of a directory's entries.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every path under `dir` with its content (files) or `None` (directories), sorted: a
/// snapshot to compare before/after.
pub fn snapshot(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.push((rel, None));
                walk(root, &path, out);
            } else {
                out.push((rel, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A wheel for `demo 1.0` whose `demo/__init__.py` really holds 5000 bytes but whose headers
/// claim 16: it passes inspection and fails while unpacking.
pub fn lying_wheel(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("demo/__init__.py", options).unwrap();
    zip.write_all(&[b'#'; 5000]).unwrap();
    zip.start_file("demo-1.0.dist-info/METADATA", options)
        .unwrap();
    zip.write_all(b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        .unwrap();
    zip.start_file("demo-1.0.dist-info/WHEEL", options).unwrap();
    zip.write_all(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        .unwrap();
    zip.finish().unwrap();
    // 5000 = 0x1388 little-endian; claim 16 instead, in both headers.
    patch_bytes(path, &[0x88, 0x13, 0x00, 0x00], &[0x10, 0x00, 0x00, 0x00]);
}
