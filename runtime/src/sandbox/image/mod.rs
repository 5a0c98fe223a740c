//! Pre-initialised interpreter images: instances that start with the driver, or the driver
//! plus numpy and pandas, already imported.
//!
//! The pinned `python-snapshot.wasm` has only CPython's bootstrap done, so every instance
//! used to load the driver (and a numpy tool numpy and pandas, about 1.9 s) itself. At setup
//! the server builds two images from `python.wasm` with Wizer ([`build`]): **driver** (the
//! driver imported) and **scientific** (the driver, numpy and pandas imported). Their
//! compiled code is cached like the interpreter's, under a key naming everything they are
//! made from; building takes a few minutes once per machine, loading a cached one about a
//! second. Until they are ready, and when one does not fit a tool's memory cap or failed to
//! build, instances start from the base snapshot as before: images make starts faster, never
//! different.
//!
//! Which image a tool gets: [`Preload::for_script`] reads its source at load; a tool that
//! imports numpy or pandas gets the scientific image, any other the driver image.

mod build;
mod wasm;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::{Instance, InstancePre, Store};

use crate::engine::cache;

/// What a tool imports that an image can have ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Preload {
    /// Only the driver.
    #[default]
    Plain,
    /// The driver, numpy and pandas.
    Scientific,
}

/// The largest script read to choose an image (a longer one gets the plain image).
const MAX_SCAN_BYTES: u64 = 4 << 20;

/// Top-level modules the scientific image has imported.
const SCIENTIFIC_MODULES: [&str; 2] = ["numpy", "pandas"];

impl Preload {
    /// What the script `<scripts>/<module>.py` (or the package `<module>/__init__.py`)
    /// imports; plain if neither can be read.
    pub fn for_script(scripts: &Path, module: &str) -> Self {
        use std::io::Read as _;
        for file in [format!("{module}.py"), format!("{module}/__init__.py")] {
            let mut source = String::new();
            let read = std::fs::File::open(scripts.join(file))
                .and_then(|file| file.take(MAX_SCAN_BYTES).read_to_string(&mut source));
            if read.is_ok() {
                return Self::for_source(&source);
            }
        }
        Self::Plain
    }

    /// Whether an `import` or `from` line of `source` names numpy or pandas. A miss only
    /// costs speed: the tool imports them itself.
    pub fn for_source(source: &str) -> Self {
        let names_scientific = |line: &str| {
            let mut words = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|word| !word.is_empty());
            if !matches!(words.next(), Some("import" | "from")) {
                return false;
            }
            words
                .filter_map(|word| word.split('.').next())
                .any(|top| SCIENTIFIC_MODULES.contains(&top))
        };
        if source.lines().any(names_scientific) {
            Self::Scientific
        } else {
            Self::Plain
        }
    }
}

/// Which interpreter image an instance started from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// The pinned snapshot; the instance imported the driver (and its tool's imports) itself.
    #[default]
    Base,
    /// The driver was imported in the image.
    Driver,
    /// The driver, numpy and pandas were imported in the image.
    Scientific,
}

/// Where the images are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImagesState {
    /// Not asked for (this server never prepares them).
    Off,
    /// Being loaded from the cache or built; instances start from the base snapshot meanwhile.
    Preparing,
    /// In use.
    Ready,
    /// Building failed (the log says why); instances start from the base snapshot.
    Failed,
}

/// One image, linked and ready to instantiate.
pub struct Ready<T: 'static> {
    pub kind: ImageKind,
    pub pre: InstancePre<T>,
    /// The linear memory an instance starts with.
    pub memory_bytes: u64,
}

/// The images a sandbox can start instances from, shared by its clones.
pub struct Images<T: 'static> {
    inner: Mutex<Slots<T>>,
}

struct Slots<T: 'static> {
    state: ImagesState,
    driver: Option<Arc<Ready<T>>>,
    scientific: Option<Arc<Ready<T>>>,
}

impl<T> Default for Images<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Slots {
                state: ImagesState::Off,
                driver: None,
                scientific: None,
            }),
        }
    }
}

impl<T> Images<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<T>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn state(&self) -> ImagesState {
        self.lock().state
    }

    pub fn set_state(&self, state: ImagesState) {
        self.lock().state = state;
    }

    /// Makes both images available.
    pub fn install(&self, driver: Ready<T>, scientific: Ready<T>) {
        let mut slots = self.lock();
        slots.driver = Some(Arc::new(driver));
        slots.scientific = Some(Arc::new(scientific));
        slots.state = ImagesState::Ready;
    }

    /// The best ready image for `preload` whose starting memory fits under `memory_cap`.
    pub fn pick(&self, preload: Preload, memory_cap: u64) -> Option<Arc<Ready<T>>> {
        let slots = self.lock();
        let memory = |slot: &Option<Arc<Ready<T>>>| slot.as_ref().map(|ready| ready.memory_bytes);
        match choose(
            preload,
            memory_cap,
            memory(&slots.driver),
            memory(&slots.scientific),
        )? {
            ImageKind::Scientific => slots.scientific.clone(),
            _ => slots.driver.clone(),
        }
    }
}

/// Which image suits `preload` under `memory_cap`, given the starting memory of each ready
/// image: the scientific one for a tool that imports numpy or pandas, else the driver one;
/// an image that would start at or above the cap is passed over. `None`: the base snapshot.
fn choose(
    preload: Preload,
    memory_cap: u64,
    driver: Option<u64>,
    scientific: Option<u64>,
) -> Option<ImageKind> {
    let fits = |memory: Option<u64>| memory.is_some_and(|bytes| bytes < memory_cap);
    if preload == Preload::Scientific && fits(scientific) {
        Some(ImageKind::Scientific)
    } else if fits(driver) {
        Some(ImageKind::Driver)
    } else {
        None
    }
}

/// The two images' compiled modules, from the cache or built now. Blocking, and minutes long
/// on a machine that has not built them yet; run it on a thread of its own.
pub fn load_or_build(
    engine: &wasmtime::Engine,
    plain_wasm: &Path,
    stdlib: &Path,
    driver_dir: &Path,
    cache_dir: &Path,
) -> anyhow::Result<(wasmtime::Module, wasmtime::Module)> {
    let plain = cache::read_wasm(plain_wasm)?;
    let driver_source = std::fs::read(driver_dir.join(super::mounts::DRIVER_FILE))
        .context("reading the driver for the images")?;
    // numpy's and pandas' code, and zipimport's index of it, come from the stdlib zip.
    let stdlib_digest = sha256_file(&stdlib.join(STDLIB_ZIP))?;
    let made_of = [
        Sha256::digest(&plain),
        stdlib_digest,
        Sha256::digest(&driver_source),
        Sha256::digest(build::DRIVER_PRELOAD),
        Sha256::digest(IMAGE_FORMAT),
    ];
    let made_of: Vec<&[u8]> = made_of.iter().map(|d| d.as_slice()).collect();
    let scientific_preload = Sha256::digest(build::SCIENTIFIC_PRELOAD);
    let driver_key = cache::key(engine, &made_of);
    let scientific_key = cache::key(engine, &[&made_of[..], &[&scientific_preload[..]]].concat());
    let driver_entry = cache::named_entry(cache_dir, "image-driver", &driver_key);
    let scientific_entry = cache::named_entry(cache_dir, "image-scientific", &scientific_key);
    // One build per machine: servers started together wait here, then load what it stored;
    // and no reader sees (and deletes as corrupt) an entry another process is writing.
    let _lock = cache::BuildLock::acquire(cache_dir, &format!("image-{driver_key}"))?;
    let driver = cache::load_verified(engine, &driver_entry)?;
    let scientific = cache::load_verified(engine, &scientific_entry)?;
    if let (Some(driver), Some(scientific)) = (&driver, &scientific) {
        return Ok((driver.clone(), scientific.clone()));
    }
    // Both images come from one run (seconds); only the missing ones are compiled (minutes).
    tracing::info!("building the interpreter images (a few minutes, once per machine)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("a runtime for the image build")?;
    let built = runtime.block_on(build::build(engine, &plain, stdlib, driver_dir))?;
    drop(plain);
    let driver = match driver {
        Some(module) => module,
        None => cache::compile_and_store(engine, &built.driver, &driver_entry, "the driver image")?,
    };
    let scientific = match scientific {
        Some(module) => module,
        None => cache::compile_and_store(
            engine,
            &built.scientific,
            &scientific_entry,
            "the numpy+pandas image",
        )?,
    };
    Ok((driver, scientific))
}

/// The stdlib zip's name inside the stdlib folder.
const STDLIB_ZIP: &str = "python315.zip";

fn sha256_file(path: &Path) -> anyhow::Result<sha2::digest::Output<Sha256>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize())
}

/// Names the way images are made (the preloads, the boot, the preopen reset); part of the
/// cache key, so a change here never loads an image made the old way.
const IMAGE_FORMAT: &str = "scriptbox-image-1";

/// The linear memory an instance of `module` starts with.
pub fn starting_memory(module: &wasmtime::Module) -> u64 {
    module
        .exports()
        .find_map(|export| export.ty().memory().cloned())
        .map_or(0, |memory| {
            memory.minimum().saturating_mul(memory.page_size())
        })
}

/// The source an image's instance boots with: the driver's `boot` with `argv` (what
/// `sys.argv` is under `run`). `argv` travels as hex digits inside a constant program, so no
/// text from a tool or client is ever read as source.
pub fn boot_source(argv: &[String]) -> Vec<u8> {
    format!("__import__('sys').exit({})", driver_call("boot", argv)).into_bytes()
}

/// The expression calling the driver's `function` (a constant name) with `argv` as hex of
/// JSON, never as source text.
pub fn driver_call(function: &str, argv: &[String]) -> String {
    let json = serde_json::to_vec(argv).unwrap_or_else(|_| b"[]".to_vec());
    format!(
        "__import__('_scriptbox_driver').{function}(\
         __import__('json').loads(bytes.fromhex('{}')))",
        hex::encode(json)
    )
}

/// What a turn's value says about how the program ended: 0 it ended, 1 an exception
/// escaped it, else the status it passed to exit (a turn adds 256 to that).
pub fn exit_status(value: i32) -> i32 {
    if value >= 256 { value - 256 } else { value }
}

/// Runs `source` as one `turn` of the interpreter: the export's value (0 when it ran without
/// an exception; an exit adds 256 to the exit status).
pub async fn run_turn<T: Send>(
    store: &mut Store<T>,
    instance: &Instance,
    source: &[u8],
) -> wasmtime::Result<i32> {
    let len = i32::try_from(source.len())?;
    let alloc = instance.get_typed_func::<i32, i32>(&mut *store, "host_alloc")?;
    let ptr = alloc.call_async(&mut *store, len).await?;
    if ptr == 0 {
        wasmtime::bail!("the interpreter could not allocate the turn's source");
    }
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the interpreter exports no memory"))?;
    memory.write(&mut *store, ptr as u32 as usize, source)?;
    instance
        .get_typed_func::<(i32, i32), i32>(&mut *store, "turn")?
        .call_async(&mut *store, (ptr, len))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_and_pandas_imports_choose_the_scientific_image() {
        for source in [
            "import numpy",
            "import numpy as np",
            "import os, pandas",
            "from pandas import DataFrame",
            "from numpy.linalg import norm",
            "def f():\n    import numpy\n",
            "import\tpandas",
        ] {
            assert_eq!(Preload::for_source(source), Preload::Scientific, "{source}");
        }
        for source in [
            "import json",
            "import numpyish",
            "# import numpy",
            "x = 'numpy'",
            "from scipy import stats",
        ] {
            assert_eq!(Preload::for_source(source), Preload::Plain, "{source}");
        }
    }

    #[test]
    fn the_image_must_be_ready_and_fit_the_memory_cap() {
        use ImageKind::{Driver, Scientific};
        use Preload::Plain;
        let sci = Preload::Scientific;
        let (d, s) = (Some(40 << 20), Some(63 << 20));
        assert_eq!(choose(sci, 512 << 20, d, s), Some(Scientific));
        assert_eq!(choose(Plain, 512 << 20, d, s), Some(Driver));
        // The scientific image does not fit: the driver one, which imports numpy itself.
        assert_eq!(choose(sci, 63 << 20, d, s), Some(Driver));
        assert_eq!(choose(sci, 40 << 20, d, s), None);
        // Not ready (still building, or failed): the base snapshot.
        assert_eq!(choose(sci, 512 << 20, None, None), None);
        assert_eq!(choose(sci, 512 << 20, d, None), Some(Driver));
    }

    #[test]
    fn boot_source_carries_argv_as_hex_only() {
        let argv = [
            "/scriptbox/d.py".to_owned(),
            "x'); import os; ('".to_owned(),
        ];
        let source = String::from_utf8(boot_source(&argv)).expect("ok");
        let hex = source
            .split("fromhex('")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("ok");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
        let decoded: Vec<String> =
            serde_json::from_slice(&hex::decode(hex).expect("ok")).expect("ok");
        assert_eq!(decoded, argv);
        assert!(!source.contains("import os"));
    }
}
