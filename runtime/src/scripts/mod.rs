//! Scripts: the tenants' own, uploaded through the API and kept in the store as immutable
//! versions named by the SHA-256 of their content, and the operator's shared scripts folder.
//!
//! An upload is checked before anything is kept: the name, the encoding, a package's zip
//! entry by entry ([`package`]), then every `.py` compiled in a sandbox ([`check`]). A
//! version a tool runs is written out once as files, under
//! `<data_dir>/scripts/<owner>/<name>/<version>/`, and that folder is what the tool's
//! instances mount at `/scripts` ([`Scripts::resolve`]); the store keeps the content, so the
//! folder can always be written again (after a restart, or on another node).
//!
//! A name may exist both as the owner's and as a shared script: the owner's wins. No owner
//! sees another's scripts. The module knows owners by id, not tenants.

pub mod check;
pub mod package;

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::names::check_script;
use crate::sandbox::{Sandbox, ToolMounts};
use crate::store::scripts::{NewVersion, Put, ScriptQuota, ScriptQuotas, VersionMeta};
use crate::store::{Store, StoreError};
pub use check::SyntaxProblem;
pub use package::Files;

/// The largest shared script file read for its hash.
const MAX_SHARED_BYTES: u64 = 16 << 20;
/// Most entries of the shared scripts folder looked at when listing it.
const MAX_SHARED_ENTRIES: usize = 1000;

/// Why a script request failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{0}")]
    BadName(String),
    #[error("the source is not UTF-8")]
    NotUtf8,
    #[error("the package is refused: {0}")]
    Package(String),
    #[error("the script is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("the script has a syntax error")]
    Syntax(SyntaxProblem),
    #[error("compiling the script passed the check's limits ({0})")]
    CheckLimit(String),
    #[error("the upload would pass the owner's {0:?} quota")]
    Quota(ScriptQuota),
    #[error("no script of that name")]
    NotFound,
    #[error("the script has no such version")]
    UnknownVersion,
    #[error("shared scripts belong to the operator")]
    Shared,
    #[error("the syntax check failed: {0}")]
    Check(String),
    #[error("writing the script's files failed: {0}")]
    Files(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the script is made: one module, or a package (a zip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Module,
    Package,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Module => "module",
            Self::Package => "package",
        }
    }
}

/// Where a script comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The owner's own, uploaded through the API.
    Tenant,
    /// The operator's scripts folder.
    Shared,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Shared => "shared",
        }
    }
}

/// A script found for a load: the folder to mount at `/scripts` and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRef {
    pub name: String,
    pub source: Source,
    pub version: String,
    pub dir: PathBuf,
}

/// One version as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    pub version: String,
    pub kind: &'static str,
    pub size: u64,
    /// Seconds since the epoch (absent for a shared script).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<f64>,
}

/// One script in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptInfo {
    pub name: String,
    pub source: Source,
    pub latest_version: String,
    /// The latest version's size in bytes.
    pub size: u64,
    pub versions: u64,
}

/// A script with its versions, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptDetail {
    pub name: String,
    pub source: Source,
    pub latest_version: String,
    pub versions: Vec<VersionInfo>,
}

/// What an upload answers.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    pub name: String,
    pub version: String,
    pub size: u64,
    pub created_at: f64,
    /// Whether a new version was stored (false: that content was stored already, and is
    /// the latest version now).
    #[serde(skip)]
    pub created: bool,
}

/// An owner's script quotas (per script, in all, counts).
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub max_script_bytes: u64,
    pub max_total_bytes: u64,
    pub max_scripts: u64,
    pub max_versions: u64,
}

/// The scripts service: the store, a sandbox for the syntax check, and the folder the
/// versions in use are written to.
#[derive(Clone)]
pub struct Scripts {
    store: Store,
    sandbox: Sandbox,
    root: PathBuf,
    /// An empty folder: what the syntax check's instance sees at `/scripts`.
    empty: PathBuf,
}

fn version_info(meta: &VersionMeta) -> VersionInfo {
    VersionInfo {
        version: meta.version.clone(),
        kind: if meta.kind == "package" {
            "package"
        } else {
            "module"
        },
        size: meta.size,
        created_at: Some(meta.created_at),
    }
}

impl Scripts {
    /// The service over `store`, writing versions under `<data_dir>/scripts`.
    pub fn new(store: Store, sandbox: Sandbox, data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("scripts");
        let empty = root.join(".empty");
        std::fs::create_dir_all(&empty)?;
        Ok(Self {
            store,
            sandbox,
            root,
            empty,
        })
    }

    /// Checks and stores a new version of the owner's script `name`.
    pub async fn put(
        &self,
        owner: &str,
        name: &str,
        kind: Kind,
        body: &[u8],
        quotas: Quotas,
    ) -> Result<Uploaded, ScriptError> {
        check_script(name).map_err(|err| ScriptError::BadName(err.to_string()))?;
        if body.len() as u64 > quotas.max_script_bytes {
            return Err(ScriptError::TooLarge {
                max: quotas.max_script_bytes,
            });
        }
        let files = match kind {
            Kind::Module => package::module(name, body)?,
            Kind::Package => package::package(name, body, quotas.max_script_bytes)?,
        };
        if let Some(problem) =
            check::compile_all(&self.sandbox, &self.check_mounts(), &files).await?
        {
            return Err(ScriptError::Syntax(problem));
        }
        let version = version_of(body);
        let put = self
            .store
            .put_script(
                owner,
                &NewVersion {
                    name,
                    version: &version,
                    kind: kind.as_str(),
                    content: body,
                },
                ScriptQuotas {
                    max_scripts: quotas.max_scripts,
                    max_total_bytes: quotas.max_total_bytes,
                    max_versions: quotas.max_versions,
                },
            )
            .await?;
        let (meta, created) = match put {
            Put::Created(meta) => (meta, true),
            Put::Unchanged(meta) | Put::Restored(meta) => (meta, false),
            Put::Refused(quota) => return Err(ScriptError::Quota(quota)),
        };
        Ok(Uploaded {
            name: name.to_owned(),
            version: meta.version,
            size: meta.size,
            created_at: meta.created_at,
            created,
        })
    }

    fn check_mounts(&self) -> ToolMounts {
        ToolMounts {
            scripts: self.empty.clone(),
            scratch: None,
            max_open_files: 16,
            sys_paths: Vec::new(),
            site_packages: None,
            preload: Default::default(),
        }
    }

    /// The owner's scripts and the shared ones it does not shadow, by name.
    pub async fn list(&self, owner: &str, shared: &Path) -> Result<Vec<ScriptInfo>, ScriptError> {
        let mut all: Vec<ScriptInfo> = self
            .store
            .scripts(owner)
            .await?
            .into_iter()
            .map(|script| ScriptInfo {
                name: script.name,
                source: Source::Tenant,
                latest_version: script.latest.version,
                size: script.latest.size,
                versions: script.versions,
            })
            .collect();
        for name in shared_names(shared) {
            if all.iter().any(|s| s.name == name) {
                continue;
            }
            if let Some((version, size)) = shared_version(shared, &name) {
                all.push(ScriptInfo {
                    name,
                    source: Source::Shared,
                    latest_version: version,
                    size,
                    versions: 1,
                });
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// One script (the owner's, else a shared one) with its versions.
    pub async fn detail(
        &self,
        owner: &str,
        shared: &Path,
        name: &str,
    ) -> Result<ScriptDetail, ScriptError> {
        check_script(name).map_err(|_| ScriptError::NotFound)?;
        let versions = self.store.script_versions(owner, name).await?;
        if let Some(latest) = versions.first() {
            return Ok(ScriptDetail {
                name: name.to_owned(),
                source: Source::Tenant,
                latest_version: latest.version.clone(),
                versions: versions.iter().map(version_info).collect(),
            });
        }
        let (version, size) = shared_version(shared, name).ok_or(ScriptError::NotFound)?;
        Ok(ScriptDetail {
            name: name.to_owned(),
            source: Source::Shared,
            latest_version: version.clone(),
            versions: vec![VersionInfo {
                version,
                kind: if shared.join(name).is_dir() {
                    "package"
                } else {
                    "module"
                },
                size,
                created_at: None,
            }],
        })
    }

    /// A version's content (the latest without `version`) and its kind: the owner's
    /// script's, or a shared single-file module's source.
    pub async fn source(
        &self,
        owner: &str,
        shared: &Path,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Kind, Vec<u8>), ScriptError> {
        check_script(name).map_err(|_| ScriptError::NotFound)?;
        if let Some(meta) = self.store.script_version(owner, name, version).await? {
            let content = self
                .store
                .script_content(owner, name, &meta.version)
                .await?
                .ok_or(ScriptError::UnknownVersion)?;
            let kind = if meta.kind == "package" {
                Kind::Package
            } else {
                Kind::Module
            };
            return Ok((kind, content));
        }
        if !self.store.script_versions(owner, name).await?.is_empty() {
            return Err(ScriptError::UnknownVersion);
        }
        let (current, _) = shared_version(shared, name).ok_or(ScriptError::NotFound)?;
        if version.is_some_and(|v| v != current) {
            return Err(ScriptError::UnknownVersion);
        }
        let file = shared.join(format!("{name}.py"));
        let bytes = read_bounded(&file).ok_or(ScriptError::NotFound)?;
        Ok((Kind::Module, bytes))
    }

    /// Deletes every version of the owner's script, and the files written for it.
    pub async fn delete(&self, owner: &str, shared: &Path, name: &str) -> Result<(), ScriptError> {
        check_script(name).map_err(|_| ScriptError::NotFound)?;
        if !self.store.delete_script(owner, name).await? {
            return Err(if shared_version(shared, name).is_some() {
                ScriptError::Shared
            } else {
                ScriptError::NotFound
            });
        }
        let dir = self.root.join(owner).join(name);
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(cause = %err, "could not remove a deleted script's files");
        }
        Ok(())
    }

    /// Removes the files written for every script of the owner (its records are the
    /// store's to remove).
    pub fn forget_owner(&self, owner: &str) {
        let dir = self.root.join(owner);
        if let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(cause = %err, "could not remove an owner's script files");
        }
    }

    /// The script a load of `name` (at `version`, else the latest) gets: the owner's own if
    /// it has one of that name, else the shared one. The owner's version is written out as
    /// files first if it is not already.
    pub async fn resolve(
        &self,
        owner: &str,
        shared: &Path,
        name: &str,
        version: Option<&str>,
    ) -> Result<ScriptRef, ScriptError> {
        check_script(name).map_err(|err| ScriptError::BadName(err.to_string()))?;
        if let Some(meta) = self.store.script_version(owner, name, version).await? {
            let dir = self.materialize(owner, name, &meta).await?;
            return Ok(ScriptRef {
                name: name.to_owned(),
                source: Source::Tenant,
                version: meta.version,
                dir,
            });
        }
        if !self.store.script_versions(owner, name).await?.is_empty() {
            return Err(ScriptError::UnknownVersion);
        }
        self.resolve_shared(shared, name, version)
    }

    /// A shared script, at its current content (`version`, if given, must be it).
    pub fn resolve_shared(
        &self,
        shared: &Path,
        name: &str,
        version: Option<&str>,
    ) -> Result<ScriptRef, ScriptError> {
        let (current, _) = shared_version(shared, name).ok_or(ScriptError::NotFound)?;
        if version.is_some_and(|v| v != current) {
            return Err(ScriptError::UnknownVersion);
        }
        Ok(ScriptRef {
            name: name.to_owned(),
            source: Source::Shared,
            version: current,
            dir: shared.to_path_buf(),
        })
    }

    /// The folder holding the owner's version as files, written from the store when it is
    /// missing.
    async fn materialize(
        &self,
        owner: &str,
        name: &str,
        meta: &VersionMeta,
    ) -> Result<PathBuf, ScriptError> {
        let dir = self.root.join(owner).join(name).join(&meta.version);
        if dir.is_dir() {
            return Ok(dir);
        }
        let content = self
            .store
            .script_content(owner, name, &meta.version)
            .await?
            .ok_or(ScriptError::UnknownVersion)?;
        if version_of(&content) != meta.version {
            return Err(ScriptError::Store(StoreError::Damaged(format!(
                "script {name} version {} does not match its content",
                meta.version
            ))));
        }
        let files = if meta.kind == "package" {
            package::package(name, &content, u64::MAX)?
        } else {
            package::module(name, &content)?
        };
        let target = dir.clone();
        tokio::task::spawn_blocking(move || package::write(&files, &target))
            .await
            .map_err(|err| ScriptError::Files(std::io::Error::other(err.to_string())))??;
        Ok(dir)
    }
}

/// A version's name: the SHA-256 (hex) of its content.
pub fn version_of(content: &[u8]) -> String {
    hex::encode(Sha256::digest(content))
}

/// Whether `<dir>/<name>.py` or `<dir>/<name>/__init__.py` is a regular file (a symlink
/// counts only if it resolves inside `dir`, which the guest's read-only mount enforces too).
pub fn script_exists(dir: &Path, name: &str) -> bool {
    main_file(dir, name).is_some()
}

/// The file a shared script starts from, if it is one.
fn main_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let root = dir.canonicalize().ok()?;
    [
        dir.join(format!("{name}.py")),
        dir.join(name).join("__init__.py"),
    ]
    .into_iter()
    .find(|candidate| {
        candidate
            .canonicalize()
            .is_ok_and(|real| real.starts_with(&root) && real.is_file())
    })
}

/// A shared script's version (the SHA-256 of its main file) and size.
fn shared_version(dir: &Path, name: &str) -> Option<(String, u64)> {
    if check_script(name).is_err() {
        return None;
    }
    let bytes = read_bounded(&main_file(dir, name)?)?;
    Some((version_of(&bytes), bytes.len() as u64))
}

fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_SHARED_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

/// The script names in the shared folder (modules and packages), at most
/// [`MAX_SHARED_ENTRIES`] entries looked at.
fn shared_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .take(MAX_SHARED_ENTRIES)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".py").unwrap_or(&name).to_owned();
            (check_script(&stem).is_ok() && script_exists(dir, &stem)).then_some(stem)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
