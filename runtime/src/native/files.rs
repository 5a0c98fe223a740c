//! The files behind a module: its folder's manifest, a private copy of its library (hash
//! checked), and its config file, each read with a size bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

use super::abi::Library;
use super::bridge::Bridge;
use super::manifest::{Manifest, ManifestError};
use super::table::Loaded;

/// Most module folders looked at under the modules folder.
pub const MAX_MODULES: usize = 256;
/// The largest library whose hash is checked (and so the largest loaded with a `sha256`).
pub const MAX_LIBRARY_BYTES: u64 = 512 << 20;
/// The largest `configFile` read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Reads every `<dir>/<folder>/module.json` (at most [`MAX_MODULES`] folders).
pub(super) fn discover(dir: &Path) -> BTreeMap<String, Result<Manifest, ManifestError>> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.filter_map(Result::ok).take(MAX_MODULES) {
        let path = entry.path();
        if !path.join("module.json").is_file() {
            continue;
        }
        let Ok(folder) = entry.file_name().into_string() else {
            continue;
        };
        let read = Manifest::read(&path).and_then(|manifest| {
            if manifest.name == folder {
                Ok(manifest)
            } else {
                Err(ManifestError(format!(
                    "{folder}/module.json: name {:?} does not match its folder {folder:?}",
                    manifest.name
                )))
            }
        });
        found.insert(folder, read);
    }
    found
}

/// Opens, checks and initialises one module's library (blocking).
pub(super) fn open(
    manifest: &Manifest,
    folder: &Path,
    copies: &Path,
    bridge: Box<Bridge>,
) -> Result<Loaded, String> {
    let path = folder.join(&manifest.library);
    // Each load opens a private copy of the library. The dynamic loader shares one image per
    // file, so opening the installed file again while an old copy still serves a call (a
    // reload) would hand back the old code and its statics; a copy of its own gives every
    // load its own image. The hash is checked on the copy, the bytes that are opened.
    let copy = private_copy(&path, &manifest.name, copies)?;
    let opened = check_hash(&copy, manifest.sha256.as_deref())
        .and_then(|()| Library::open(&copy, &manifest.functions));
    // Open (or refused): the file itself is not needed any more.
    let _ = std::fs::remove_file(&copy);
    let mut library = opened?;
    let config = match &manifest.config_file {
        None => "null".to_owned(),
        Some(file) => read_config(&folder.join(file))?,
    };
    library.init(bridge.api(), &config)?;
    Ok(Loaded {
        library,
        _bridge: bridge,
    })
}

/// Copies the library (at most [`MAX_LIBRARY_BYTES`]) to a new private file under `copies`.
fn private_copy(path: &Path, name: &str, copies: &Path) -> Result<PathBuf, String> {
    use std::io::Read as _;
    let source = std::fs::File::open(path).map_err(|_| {
        format!(
            "the library {} is missing",
            path.file_name().unwrap_or_default().to_string_lossy()
        )
    })?;
    std::fs::create_dir_all(copies).map_err(|err| format!("cannot prepare the library: {err}"))?;
    let copy = copies.join(format!(
        "{name}-{}{}",
        uuid::Uuid::new_v4().simple(),
        std::env::consts::DLL_SUFFIX
    ));
    let mut target =
        std::fs::File::create(&copy).map_err(|err| format!("cannot prepare the library: {err}"))?;
    let copied = std::io::copy(&mut source.take(MAX_LIBRARY_BYTES + 1), &mut target);
    match copied {
        Ok(bytes) if bytes <= MAX_LIBRARY_BYTES => Ok(copy),
        Ok(_) => {
            let _ = std::fs::remove_file(&copy);
            Err(format!(
                "the library is larger than {MAX_LIBRARY_BYTES} bytes"
            ))
        }
        Err(err) => {
            let _ = std::fs::remove_file(&copy);
            Err(format!("cannot read the library: {err}"))
        }
    }
}

fn check_hash(copy: &Path, expected: Option<&str>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let mut file =
        std::fs::File::open(copy).map_err(|err| format!("cannot read the library: {err}"))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|err| format!("cannot read the library: {err}"))?;
    let found = hex::encode(hasher.finalize());
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "the library's SHA-256 is {found}, but module.json says {expected}"
        ))
    }
}

fn read_config(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path)
        .map_err(|_| format!("the config file {} is missing", path.display()))?;
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "the config file is larger than {MAX_CONFIG_BYTES} bytes"
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the config file: {err}"))?;
    serde_json::from_str::<&RawValue>(&text)
        .map_err(|err| format!("the config file is not JSON: {err}"))?;
    Ok(text)
}
