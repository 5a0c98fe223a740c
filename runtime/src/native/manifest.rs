//! `modules/<name>/module.json`: what a trusted native module is and promises. Parsed
//! strictly: unknown fields are refused, and every value is checked, with messages that name
//! the module and the field.
//!
//! ```json
//! {"name": "astro_report", "version": "0.1.0",
//!  "library": {"linux": "libastro_report.so", "macos": "libastro_report.dylib"},
//!  "dependencies": ["astro_native@^0.1"],
//!  "configFile": "config.json",
//!  "functions": ["report"],
//!  "sha256": "…64 hex digits…"}
//! ```
//!
//! `library` is a path relative to the module's folder, or one per platform (`linux`,
//! `macos`, `windows`). A dependency is `"name"` (any version), `"name@<range>"` or
//! `{"name", "version"}`, the range in Cargo's syntax (`^0.1`, `>=1.2, <2`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use semver::{Version, VersionReq};
use serde::Deserialize;

/// Most functions one module may declare.
pub const MAX_FUNCTIONS: usize = 256;
/// Most dependencies one module may declare.
pub const MAX_DEPENDENCIES: usize = 64;
/// The largest manifest file read.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;

/// Why a manifest was refused; the message names the module (or file) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn bad(message: impl Into<String>) -> ManifestError {
    ManifestError(message.into())
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    /// The library for this platform, relative to the module's folder.
    pub library: PathBuf,
    pub dependencies: Vec<Dependency>,
    pub config_file: Option<PathBuf>,
    pub functions: Vec<String>,
    /// Lower-case hex.
    pub sha256: Option<String>,
}

/// A module this one needs, and which versions of it will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub version: VersionReq,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    name: String,
    version: String,
    library: RawLibrary,
    #[serde(default)]
    dependencies: Vec<RawDependency>,
    #[serde(default)]
    config_file: Option<String>,
    functions: Vec<String>,
    #[serde(default)]
    sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawLibrary {
    One(String),
    PerPlatform(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDependency {
    Text(String),
    Full {
        name: String,
        #[serde(default)]
        version: Option<String>,
    },
}

/// The platform key of `library` maps for this build.
pub const PLATFORM: &str = if cfg!(target_os = "macos") {
    "macos"
} else if cfg!(target_os = "windows") {
    "windows"
} else {
    "linux"
};

const PLATFORMS: [&str; 3] = ["linux", "macos", "windows"];

/// A function name: an identifier of 1-64 ASCII characters.
pub fn check_function(function: &str) -> bool {
    crate::names::is_native_function(function)
}

/// A module name: 1-64 of `[a-z0-9_]`, starting with a letter.
pub fn check_name(name: &str) -> Result<(), ManifestError> {
    if crate::names::is_native_module(name) {
        Ok(())
    } else {
        Err(bad(format!(
            "module name {:?} must be 1-64 of a-z, 0-9 and '_', starting with a letter",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// A path inside the module's folder: relative, no `..`, no root.
fn relative(module: &str, field: &str, text: &str) -> Result<PathBuf, ManifestError> {
    let path = Path::new(text);
    let inside = !text.is_empty()
        && text.len() <= 256
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(path.to_path_buf())
    } else {
        Err(bad(format!(
            "module {module:?}: {field} {text:?} must be a relative path inside the module's folder"
        )))
    }
}

fn dependency(module: &str, raw: RawDependency) -> Result<Dependency, ManifestError> {
    let (name, range) = match raw {
        RawDependency::Text(text) => match text.split_once('@') {
            Some((name, range)) => (name.to_owned(), Some(range.to_owned())),
            None => (text, None),
        },
        RawDependency::Full { name, version } => (name, version),
    };
    check_name(&name).map_err(|e| bad(format!("module {module:?}: dependency: {}", e.0)))?;
    let version = match range {
        None => VersionReq::STAR,
        Some(range) => VersionReq::parse(&range).map_err(|err| {
            bad(format!(
                "module {module:?}: dependency {name:?}: version range {range:?} is not valid ({err})"
            ))
        })?,
    };
    Ok(Dependency { name, version })
}

impl Manifest {
    /// Parses and checks a manifest's JSON text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let raw: Raw = serde_json::from_str(text)
            .map_err(|err| bad(format!("module.json is not a valid manifest: {err}")))?;
        check_name(&raw.name)?;
        let module = raw.name.as_str();
        let version = Version::parse(&raw.version).map_err(|err| {
            bad(format!(
                "module {module:?}: version {:?} is not a semantic version ({err})",
                raw.version
            ))
        })?;
        let library = match raw.library {
            RawLibrary::One(path) => relative(module, "library", &path)?,
            RawLibrary::PerPlatform(map) => {
                if let Some(unknown) = map.keys().find(|k| !PLATFORMS.contains(&k.as_str())) {
                    return Err(bad(format!(
                        "module {module:?}: library platform {unknown:?} is not one of linux, macos, windows"
                    )));
                }
                let path = map.get(PLATFORM).ok_or_else(|| {
                    bad(format!(
                        "module {module:?}: library names no file for this platform ({PLATFORM})"
                    ))
                })?;
                relative(module, "library", path)?
            }
        };
        if raw.dependencies.len() > MAX_DEPENDENCIES {
            return Err(bad(format!(
                "module {module:?}: at most {MAX_DEPENDENCIES} dependencies"
            )));
        }
        let dependencies = raw
            .dependencies
            .into_iter()
            .map(|d| dependency(module, d))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(own) = dependencies.iter().find(|d| d.name == module) {
            return Err(bad(format!(
                "module {module:?} depends on itself ({:?})",
                own.name
            )));
        }
        if raw.functions.is_empty() || raw.functions.len() > MAX_FUNCTIONS {
            return Err(bad(format!(
                "module {module:?}: functions must list 1 to {MAX_FUNCTIONS} names"
            )));
        }
        for function in &raw.functions {
            if !check_function(function) {
                return Err(bad(format!(
                    "module {module:?}: function name {:?} must be an identifier of at most 64 characters",
                    function.chars().take(64).collect::<String>()
                )));
            }
        }
        let config_file = raw
            .config_file
            .map(|path| relative(module, "configFile", &path))
            .transpose()?;
        let sha256 = match raw.sha256 {
            None => None,
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(hex.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(bad(format!(
                    "module {module:?}: sha256 must be 64 hexadecimal digits"
                )));
            }
        };
        Ok(Self {
            name: raw.name,
            version,
            library,
            dependencies,
            config_file,
            functions: raw.functions,
            sha256,
        })
    }

    /// Reads and checks `dir/module.json`; the folder's name must be the module's.
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        use std::io::Read as _;
        let path = dir.join("module.json");
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|file| file.take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text))
            .map_err(|err| bad(format!("{}: cannot be read ({err})", path.display())))?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "{}: larger than {MAX_MANIFEST_BYTES} bytes",
                path.display()
            )));
        }
        let manifest = Self::parse(&text)?;
        let folder = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if folder != manifest.name {
            return Err(bad(format!(
                "module {:?} lives in folder {folder:?}; the folder must have the module's name",
                manifest.name
            )));
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Manifest::parse(text).expect_err(text).0
    }

    #[test]
    fn a_full_manifest_parses() {
        let m = Manifest::parse(
            r#"{"name": "astro_report", "version": "0.1.0",
                "library": {"linux": "libastro_report.so", "macos": "libastro_report.dylib"},
                "dependencies": ["astro_native@^0.1", {"name": "base"}],
                "configFile": "config.json", "functions": ["report"],
                "sha256": "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789"}"#,
        )
        .expect("valid");
        assert_eq!(m.dependencies[0].name, "astro_native");
        assert!(m.dependencies[0].version.matches(&Version::new(0, 1, 5)));
        assert!(!m.dependencies[0].version.matches(&Version::new(0, 2, 0)));
        assert_eq!(m.dependencies[1].version, VersionReq::STAR);
        assert_eq!(m.config_file, Some(PathBuf::from("config.json")));
        assert!(m.sha256.is_some_and(|h| h.starts_with("abcdef")));
    }

    #[test]
    fn invalid_manifests_get_exact_messages() {
        let base = r#""version": "0.1.0", "library": "lib.so", "functions": ["f"]"#;
        assert!(
            err(&format!(r#"{{"name": "m", {base}, "extra": 1}}"#))
                .contains("unknown field `extra`")
        );
        assert_eq!(
            err(&format!(r#"{{"name": "M-1", {base}}}"#)),
            r#"module name "M-1" must be 1-64 of a-z, 0-9 and '_', starting with a letter"#
        );
        assert!(
            err(r#"{"name": "m", "version": "one", "library": "l.so", "functions": ["f"]}"#)
                .starts_with(r#"module "m": version "one" is not a semantic version"#)
        );
        assert_eq!(
            err(
                r#"{"name": "m", "version": "1.0.0", "library": "../evil.so", "functions": ["f"]}"#
            ),
            r#"module "m": library "../evil.so" must be a relative path inside the module's folder"#
        );
        assert_eq!(
            err(r#"{"name": "m", "version": "1.0.0", "library": "/lib/x.so", "functions": ["f"]}"#),
            r#"module "m": library "/lib/x.so" must be a relative path inside the module's folder"#
        );
        assert_eq!(
            err(
                r#"{"name": "m", "version": "1.0.0", "library": {"amiga": "x"}, "functions": ["f"]}"#
            ),
            r#"module "m": library platform "amiga" is not one of linux, macos, windows"#
        );
        assert_eq!(
            err(&format!(
                r#"{{"name": "m", {base}, "dependencies": ["m"]}}"#
            )),
            r#"module "m" depends on itself ("m")"#
        );
        assert!(
            err(&format!(
                r#"{{"name": "m", {base}, "dependencies": ["n@not a range"]}}"#
            ))
            .starts_with(r#"module "m": dependency "n": version range "not a range" is not valid"#)
        );
        assert_eq!(
            err(r#"{"name": "m", "version": "1.0.0", "library": "l.so", "functions": []}"#),
            r#"module "m": functions must list 1 to 256 names"#
        );
        assert_eq!(
            err(r#"{"name": "m", "version": "1.0.0", "library": "l.so", "functions": ["a b"]}"#),
            r#"module "m": function name "a b" must be an identifier of at most 64 characters"#
        );
        assert_eq!(
            err(&format!(r#"{{"name": "m", {base}, "sha256": "xyz"}}"#)),
            r#"module "m": sha256 must be 64 hexadecimal digits"#
        );
        assert!(
            err(r#"{"name": "m"}"#)
                .starts_with("module.json is not a valid manifest: missing field")
        );
    }
}
