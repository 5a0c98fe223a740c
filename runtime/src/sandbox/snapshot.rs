//! Memory snapshots of an isolated tool: its import done once, copied into later instances.
//!
//! Every instance of an isolated tool used to boot from the image and import the tool
//! itself: a few milliseconds of Python (the boot turn, the `scriptbox` module, the
//! tool's import) per call, most of the CPU an isolated call cost (docs/performance.md).
//! The pool's first instance instead runs the driver's `prepare` (everything `boot` does
//! before the first request) as a turn of its own; when the turn returns, the interpreter
//! is at rest (no wasm frame live, the stack pointer back where it started), so its whole
//! state is its linear memory. The pages that differ from the image are kept here, and
//! each later instance of the pool is the image, those pages written over it, and the
//! driver's `serve` turn: fresh random seeds, then the request loop.
//!
//! Why this is a faithful copy, and still isolated:
//! * The interpreter's only mutable wasm global is `__stack_pointer`, equal between turns;
//!   its tables are never written (no dynamic linking). This is what Wizer relies on too.
//! * The snapshot is taken before any request reached the instance: it holds the tool's
//!   import and nothing of any call. `serve` reseeds `random` (and `numpy.random`) per
//!   instance, as `boot` did. Values the tool computed at import (a module-level
//!   `random.random()`, `time.time()`) are the same in every instance of one load, as
//!   they are in a persistent tool; docs/interpreter.md says so.
//! * `prepare` refuses (and the pool keeps booting each instance) when the import failed
//!   or left a file descriptor open: the host's descriptor table is not in the memory.
//! * The snapshot is for one image, one tool's argv and mounts (one pool), and at most
//!   [`MAX_SNAPSHOT_BYTES`]; the memory cap applies to the copy as to any growth.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{InstancePre, Store};

use super::{GuestState, ImageKind, image};

/// Host page: the unit of the copy.
const PAGE: usize = 4096;

/// Wasm page: the unit of memory growth.
const WASM_PAGE: usize = 65536;

/// The most memory a snapshot keeps (changed pages); a tool whose import changes more
/// boots every instance itself.
const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// The second turn of every instance from a snapshot (constant text).
const SERVE: &[u8] = b"__import__('_scriptbox_driver').serve()";

/// The pages of an imported tool's memory that differ from its image.
pub struct Snapshot {
    kind: ImageKind,
    /// The memory's size when it was taken.
    size: usize,
    /// The changed pages' indices, ascending, and their contents, one page each.
    pages: Vec<u32>,
    data: Vec<u8>,
}

impl Snapshot {
    /// The pages of `now` that differ from `image` (or, past its end, from zero); `None`
    /// when there are more than the bound.
    fn diff(kind: ImageKind, image: &[u8], now: &[u8]) -> Option<Self> {
        const ZERO: [u8; PAGE] = [0; PAGE];
        let mut pages = Vec::new();
        let mut data = Vec::new();
        for (index, page) in now.chunks_exact(PAGE).enumerate() {
            let start = index * PAGE;
            let before = image.get(start..start + PAGE).unwrap_or(&ZERO);
            if page != before {
                if data.len() + PAGE > MAX_SNAPSHOT_BYTES {
                    return None;
                }
                pages.push(u32::try_from(index).ok()?);
                data.extend_from_slice(page);
            }
        }
        Some(Self {
            kind,
            size: now.len(),
            pages,
            data,
        })
    }

    /// The memory this snapshot holds.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

/// A pool's snapshot, once its first instance took it. Shared by the pool's refills.
#[derive(Default)]
pub struct SnapshotCell(Mutex<Option<Arc<Snapshot>>>);

impl SnapshotCell {
    /// The snapshot, if one was taken on `kind`.
    pub fn get(&self, kind: ImageKind) -> Option<Arc<Snapshot>> {
        let held = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        held.as_ref().filter(|s| s.kind == kind).cloned()
    }

    fn set(&self, snapshot: Snapshot) {
        *self.0.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(Arc::new(snapshot));
    }
}

/// The first turn of a snapshot's instance: the driver's `prepare`, its arguments as hex
/// of JSON (never as source text), like [`image::boot_source`].
pub fn prepare_source(argv: &[String]) -> Vec<u8> {
    image::driver_call("prepare", argv).into_bytes()
}

/// The guest of a pool's first instance: the image, `prepare` (the tool imported), the
/// snapshot into `cell` if `prepare` allowed it, then `serve`.
pub(super) async fn boot_capturing(
    pre: InstancePre<GuestState>,
    mut store: Store<GuestState>,
    kind: ImageKind,
    prepare: Vec<u8>,
    cell: Arc<SnapshotCell>,
) -> wasmtime::Result<i32> {
    let (instance, memory) = instantiate(&pre, &mut store).await?;
    let pristine = memory.data(&store).to_vec();
    let started = Instant::now();
    if image::run_turn(&mut store, &instance, &prepare).await? == 0 {
        match Snapshot::diff(kind, &pristine, memory.data(&store)) {
            Some(snapshot) => {
                tracing::debug!(
                    kib = snapshot.bytes() >> 10,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "isolated tool snapshot taken"
                );
                cell.set(snapshot);
            }
            None => tracing::debug!("isolated tool snapshot over its bound; not kept"),
        }
    }
    drop(pristine);
    serve(&mut store, &instance).await
}

/// The guest of a later instance: the image, the snapshot's pages, then `serve`.
pub(super) async fn boot_restored(
    pre: InstancePre<GuestState>,
    mut store: Store<GuestState>,
    snapshot: Arc<Snapshot>,
) -> wasmtime::Result<i32> {
    let (instance, memory) = instantiate(&pre, &mut store).await?;
    let have = memory.data_size(&store);
    if snapshot.size > have {
        let grow = u64::try_from((snapshot.size - have) / WASM_PAGE)?;
        memory.grow(&mut store, grow)?;
    }
    let data = memory.data_mut(&mut store);
    for (&index, page) in snapshot.pages.iter().zip(snapshot.data.chunks_exact(PAGE)) {
        let start = index as usize * PAGE;
        data.get_mut(start..start + PAGE)
            .ok_or_else(|| wasmtime::format_err!("a snapshot page is past the memory"))?
            .copy_from_slice(page);
    }
    serve(&mut store, &instance).await
}

/// An instance of the image and its linear memory.
async fn instantiate(
    pre: &InstancePre<GuestState>,
    store: &mut Store<GuestState>,
) -> wasmtime::Result<(wasmtime::Instance, wasmtime::Memory)> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| wasmtime::format_err!("the interpreter exports no memory"))?;
    Ok((instance, memory))
}

async fn serve(
    store: &mut Store<GuestState>,
    instance: &wasmtime::Instance,
) -> wasmtime::Result<i32> {
    let value = image::run_turn(store, instance, SERVE).await?;
    Ok(image::exit_status(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_keeps_changed_and_grown_pages_only() {
        let image = vec![1u8; 4 * PAGE];
        let mut now = image.clone();
        now[PAGE + 7] = 2; // page 1 changed
        now.extend_from_slice(&[0; PAGE]); // page 4: grown, still zero
        now.extend_from_slice(&[3; PAGE]); // page 5: grown and written
        let snapshot = Snapshot::diff(ImageKind::Driver, &image, &now).expect("small");
        assert_eq!(snapshot.pages, vec![1, 5]);
        assert_eq!(snapshot.size, 6 * PAGE);
        assert_eq!(&snapshot.data[..PAGE], &now[PAGE..2 * PAGE]);
        assert_eq!(&snapshot.data[PAGE..], &[3; PAGE][..]);
    }

    #[test]
    fn diff_over_the_bound_is_refused() {
        let image = vec![0u8; MAX_SNAPSHOT_BYTES + PAGE];
        let now = vec![1u8; MAX_SNAPSHOT_BYTES + PAGE];
        assert!(Snapshot::diff(ImageKind::Driver, &image, &now).is_none());
    }

    #[test]
    fn a_snapshot_serves_only_its_image() {
        let cell = SnapshotCell::default();
        cell.set(Snapshot::diff(ImageKind::Driver, &[0; PAGE], &[0; PAGE]).expect("small"));
        assert!(cell.get(ImageKind::Driver).is_some());
        assert!(cell.get(ImageKind::Scientific).is_none());
    }

    #[test]
    fn prepare_carries_argv_as_hex_only() {
        let source =
            String::from_utf8(prepare_source(&["x'); import os; ('".to_owned()])).expect("utf-8");
        assert!(!source.contains("import os"));
        assert!(source.contains(".prepare("));
    }
}
