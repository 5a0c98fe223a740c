//! The guest driver's source, embedded in the binary and written to the data folder at start,
//! so the file the sandbox mounts is always the one this build was tested with.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sandbox::mounts::DRIVER_FILE;

/// The driver, one Python module written in parts by concern (`python-wasm/guest/driver/`),
/// joined here in order. One file keeps one compiled `.pyc`, one hash for the caches and one
/// module for the images to import; the parts keep each concern in a file of its own.
pub const DRIVER_SOURCE: &str = concat!(
    include_str!("../../python-wasm/guest/driver/convert.py"),
    "\n",
    include_str!("../../python-wasm/guest/driver/driver.py"),
    "\n",
    include_str!("../../python-wasm/guest/driver/introspect.py"),
    "\n",
    include_str!("../../python-wasm/guest/driver/frames.py"),
    "\n",
    include_str!("../../python-wasm/guest/driver/egress.py"),
    "\n",
    include_str!("../../python-wasm/guest/driver/host.py"),
);

/// Writes the driver into `<data_dir>/guest/` (read-only) and returns that folder.
pub fn install_driver(data_dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("guest");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(DRIVER_FILE);
    let current = std::fs::read_to_string(&path).ok();
    if current.as_deref() != Some(DRIVER_SOURCE) {
        let tmp = dir.join(format!(".{DRIVER_FILE}.{}", std::process::id()));
        std::fs::write(&tmp, DRIVER_SOURCE)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("installing {}", path.display()))?;
    }
    dir.canonicalize().context("the guest folder")
}

/// Guest code that compiles the driver and returns its `.pyc` (hex): the interpreter's magic
/// number, flags, 8 bytes the direct run skips, then the marshalled code object. The code's
/// file name stays the source's, so tracebacks name it. Constant text; nothing from a client.
const COMPILE_DRIVER: &str = "\
import importlib.util as _u, marshal as _m
_path = '/scriptbox/_scriptbox_driver.py'
with open(_path, 'rb') as _f:
    _src = _f.read()
_pyc = (_u.MAGIC_NUMBER + (0).to_bytes(4, 'little') + bytes(8)
        + _m.dumps(compile(_src, _path, 'exec', dont_inherit=True))).hex()
";

/// The compiled driver's file name: tied to this build's driver source.
fn compiled_name() -> String {
    let hash = blake3::hash(DRIVER_SOURCE.as_bytes()).to_hex();
    format!("_scriptbox_driver.{}.pyc", &hash[..16])
}

/// Makes instances start from the driver's bytecode rather than its source (compiling the
/// driver's 1,100 lines took about 55 ms of each start inside wasm). The bytecode must come
/// from the guest's own interpreter (the host's Python is another version), so one scratch
/// instance compiles it once; it is kept in `cache_dir` for later servers, keyed by the
/// driver's hash. Failing is not fatal: instances then run the source, as before.
pub async fn precompile_driver(sandbox: &crate::sandbox::Sandbox, cache_dir: &Path) {
    if let Err(err) = try_precompile(sandbox, cache_dir).await {
        tracing::warn!(cause = %err, "the driver runs from source (precompiling it failed)");
    }
}

async fn try_precompile(sandbox: &crate::sandbox::Sandbox, cache_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = compiled_name();
    let target = sandbox.driver_dir().join(&name);
    let cached = cache_dir.join(&name);
    if !target.exists() {
        let bytes = match std::fs::read(&cached) {
            Ok(bytes) => bytes,
            Err(_) => {
                let bytes = compile_in_guest(sandbox).await?;
                if std::fs::create_dir_all(cache_dir).is_ok() {
                    // Unique: several servers in one process may compile at once.
                    let tmp = cache_dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
                    if std::fs::write(&tmp, &bytes).is_ok() {
                        let _ = std::fs::rename(&tmp, &cached);
                    }
                }
                bytes
            }
        };
        let tmp = sandbox
            .driver_dir()
            .join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("installing {}", target.display()))?;
    }
    sandbox.use_compiled_driver(&name);
    // A cached file from another interpreter build (another bytecode format) would stop every
    // start: prove it with one instance, else go back to the source and forget the file.
    if let Err(err) = start_one(sandbox).await {
        sandbox.use_compiled_driver(DRIVER_FILE);
        let _ = std::fs::remove_file(&cached);
        let _ = std::fs::remove_file(&target);
        anyhow::bail!("the compiled driver does not start: {err}");
    }
    Ok(())
}

async fn start_one(sandbox: &crate::sandbox::Sandbox) -> anyhow::Result<()> {
    sandbox
        .spawn(
            crate::protocol::SCRATCH_MODULE,
            &crate::sandbox::Limits::default(),
            &scratch_mounts(sandbox),
        )
        .await
        .map(drop)
        .map_err(|err| anyhow::anyhow!("{err}"))
}

fn scratch_mounts(sandbox: &crate::sandbox::Sandbox) -> crate::sandbox::ToolMounts {
    crate::sandbox::ToolMounts {
        scripts: sandbox.driver_dir().to_path_buf(),
        scratch: None,
        max_open_files: 16,
        sys_paths: Vec::new(),
        site_packages: None,
        preload: Default::default(),
    }
}

async fn compile_in_guest(sandbox: &crate::sandbox::Sandbox) -> anyhow::Result<Vec<u8>> {
    use crate::protocol::Op;
    use crate::sandbox::{Limits, Outcome};
    let mounts = scratch_mounts(sandbox);
    let mut instance = sandbox
        .spawn(crate::protocol::SCRATCH_MODULE, &Limits::default(), &mounts)
        .await
        .map_err(|err| anyhow::anyhow!("starting the compiler instance: {err}"))?;
    let compiled = instance
        .run(&Op::Exec {
            code: COMPILE_DRIVER.to_owned(),
        })
        .await;
    if !matches!(compiled, Outcome::Answered { error: None, .. }) {
        anyhow::bail!("compiling the driver failed: {compiled:?}");
    }
    let answer = instance
        .run(&Op::Eval {
            expression: "_pyc".to_owned(),
        })
        .await;
    let Outcome::Answered {
        result: Some(hex_text),
        error: None,
        ..
    } = answer
    else {
        anyhow::bail!("no bytecode came back: {answer:?}");
    };
    let hex_text: String = serde_json::from_str(hex_text.get())?;
    Ok(hex::decode(hex_text)?)
}
