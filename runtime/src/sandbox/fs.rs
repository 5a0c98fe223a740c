//! The file-system guard: WASI calls that create files, grow them or hold descriptors are
//! shadowed here so that the writable scratch folder has a byte quota and a file-count quota,
//! open descriptors are bounded, and links cannot be made at all.
//!
//! The guard's functions replace wasmtime-wasi's in the linker and delegate to its preview-1
//! implementation (the `WasiSnapshotPreview1` trait of `WasiP1Ctx`) after their checks,
//! doing the little marshalling wiggle's generated glue would do (a `Func` handle to the
//! original cannot be used: called from the host it has no caller memory to work on).
//!
//! Accounting is conservative and exact where it matters: `bytes`/`files` start from a walk of
//! the folder, every write is charged its length plus two blocks (a write touches at most
//! `ceil(len / 4096) + 1` new blocks), every create one entry. Charges only over-estimate
//! (overwrites, deletions), so when a charge would pass the quota the folder is walked again
//! (at most every 10 ms) and the write is refused only if the real usage leaves no room.
//! Every descriptor is charged, stdio included, since a guest can put a scratch file under
//! a stdio number. The guest sees `ENOSPC` for bytes, `EDQUOT` for files, `EMFILE` for
//! descriptors, `EFBIG` for a file sized past the quota and `EPERM` for links.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::{Caller, Extern, Linker, Memory};
use wasmtime_wasi::p1::types;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1 as _;
use wiggle::{GuestMemory, GuestPtr};

use super::GuestState;

const WASI: &str = "wasi_snapshot_preview1";

/// `path_open`'s parameters as the guest passes them.
type PathOpenArgs = (i32, i32, i32, i32, i32, i64, i64, i32, i32);

/// WASI errno values (witx `errno`).
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_DQUOT: i32 = 19;
const ERRNO_FBIG: i32 = 22;
const ERRNO_INVAL: i32 = 28;
const ERRNO_MFILE: i32 = 33;
const ERRNO_NOSPC: i32 = 51;
const ERRNO_PERM: i32 = 63;

/// `oflags.creat`.
const OFLAGS_CREAT: i32 = 1;
/// A file-system block; the most a write can allocate beyond its length is two of them.
const BLOCK: u64 = 4096;
/// WASI's limit on iovecs per call (as POSIX `IOV_MAX`).
const MAX_IOVS: u32 = 1024;
/// The folder is re-measured at most this often; in between, a charge that does not fit is
/// refused. This bounds the host work a guest can cause by hovering at its quota.
const RECOUNT_INTERVAL: Duration = Duration::from_millis(10);

/// A writable folder and its quotas.
#[derive(Debug, Clone)]
pub struct Scratch {
    /// Host folder, private to the tool (the caller creates and removes it).
    pub dir: PathBuf,
    /// Bytes of disk the folder may use (allocated blocks, as `du` counts them).
    pub max_bytes: u64,
    /// Files and folders it may hold.
    pub max_files: u64,
}

/// What the guard tracks for one instance.
pub struct FsGuard {
    scratch: Option<Usage>,
    /// Descriptors `path_open` handed out and not yet closed (stdio and mounts are not).
    open_files: HashSet<u32>,
    max_open_files: u32,
}

struct Usage {
    dir: PathBuf,
    max_bytes: u64,
    max_files: u64,
    /// Upper bounds of the folder's usage, corrected by [`Usage::recount`].
    bytes: u64,
    files: u64,
    last_recount: Option<Instant>,
}

impl FsGuard {
    pub fn new(scratch: Option<&Scratch>, max_open_files: u32) -> anyhow::Result<Self> {
        let scratch = match scratch {
            Some(s) => {
                let (bytes, files) = measure(&s.dir)
                    .with_context(|| format!("measuring the scratch folder {}", s.dir.display()))?;
                Some(Usage {
                    dir: s.dir.clone(),
                    max_bytes: s.max_bytes,
                    max_files: s.max_files,
                    bytes,
                    files,
                    last_recount: None,
                })
            }
            None => None,
        };
        Ok(Self {
            scratch,
            open_files: HashSet::new(),
            max_open_files,
        })
    }
}

/// Defines the guard's functions over wasmtime-wasi's (call after `add_to_linker_async`).
pub fn shadow(linker: &mut Linker<GuestState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    linker
        .func_wrap_async(WASI, "fd_write", |caller, args| {
            Box::new(fd_write(caller, args))
        })
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap_async(WASI, "fd_pwrite", |caller, args| {
            Box::new(fd_pwrite(caller, args))
        })
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap_async(WASI, "path_open", |caller, args| {
            Box::new(path_open(caller, args))
        })
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap_async(WASI, "path_create_directory", |caller, args| {
            Box::new(path_create_directory(caller, args))
        })
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap_async(WASI, "fd_close", |caller, (fd,): (i32,)| {
            Box::new(fd_close(caller, fd))
        })
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap_async(WASI, "fd_renumber", |caller, args| {
            Box::new(fd_renumber(caller, args))
        })
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap_async(WASI, "fd_filestat_set_size", |caller, args| {
            Box::new(fd_filestat_set_size(caller, args))
        })
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap(
            WASI,
            "path_symlink",
            |_: i32, _: i32, _: i32, _: i32, _: i32| ERRNO_PERM,
        )
        .map_err(anyhow::Error::from)?;
    linker
        .func_wrap(
            WASI,
            "path_link",
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| ERRNO_PERM,
        )
        .map_err(anyhow::Error::from)?;
    linker.allow_shadowing(false);
    Ok(())
}

fn memory(caller: &mut Caller<'_, GuestState>) -> Option<Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

/// The total length of an iovec array in guest memory, or `None` if it is out of bounds.
fn iov_total(caller: &mut Caller<'_, GuestState>, iovs: i32, count: i32) -> Option<u64> {
    let count = u32::try_from(count).ok().filter(|c| *c <= MAX_IOVS)?;
    let memory = memory(caller)?;
    let data = memory.data(&caller);
    let start = usize::try_from(iovs as u32).ok()?;
    let end = start.checked_add(usize::try_from(count).ok()? * 8)?;
    let table = data.get(start..end)?;
    Some(
        table
            .chunks_exact(8)
            .map(|iov| u64::from(u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]])))
            .sum(),
    )
}

/// Charges a write of `len` bytes to the scratch quota; `false` if it does not fit.
fn charge_bytes(guard: &mut FsGuard, len: u64) -> bool {
    let Some(usage) = guard.scratch.as_mut() else {
        return true; // nothing writable to charge: the original refuses read-only files
    };
    let cost = if len == 0 {
        0
    } else {
        len.saturating_add(2 * BLOCK)
    };
    if usage.bytes.saturating_add(cost) > usage.max_bytes {
        usage.recount();
        if usage.bytes.saturating_add(cost) > usage.max_bytes {
            return false;
        }
    }
    usage.bytes = usage.bytes.saturating_add(cost);
    true
}

/// Charges one new entry (file or folder); `false` if the folder is full.
fn charge_entry(guard: &mut FsGuard) -> bool {
    let Some(usage) = guard.scratch.as_mut() else {
        return true;
    };
    if usage.files.saturating_add(1) > usage.max_files
        || usage.bytes.saturating_add(BLOCK) > usage.max_bytes
    {
        usage.recount();
        if usage.files.saturating_add(1) > usage.max_files {
            return false;
        }
    }
    usage.files = usage.files.saturating_add(1);
    usage.bytes = usage.bytes.saturating_add(BLOCK);
    true
}

impl Usage {
    fn recount(&mut self) {
        if self
            .last_recount
            .is_some_and(|at| at.elapsed() < RECOUNT_INTERVAL)
        {
            return;
        }
        self.last_recount = Some(Instant::now());
        match measure(&self.dir) {
            Ok((bytes, files)) => {
                self.bytes = bytes;
                self.files = files;
            }
            Err(err) => {
                // Fail closed: an unmeasurable folder is full.
                tracing::warn!(cause = %err, "could not measure a scratch folder");
                self.bytes = self.max_bytes;
                self.files = self.max_files;
            }
        }
    }
}

/// Disk bytes (allocated blocks) and entries under `dir`, not following links.
fn measure(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            files += 1;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok((bytes, files))
}

/// A preview-1 result as the errno the guest sees; a non-errno error is a trap.
fn errno<T>(result: Result<T, types::Error>) -> wasmtime::Result<(i32, Option<T>)> {
    match result {
        Ok(value) => Ok((ERRNO_SUCCESS, Some(value))),
        Err(err) => Ok((err.downcast()? as i32, None)),
    }
}

/// Writes a u32 result into guest memory.
fn put_u32(caller: &mut Caller<'_, GuestState>, memory: Memory, at: i32, value: u32) -> i32 {
    match memory.write(caller, at as u32 as usize, &value.to_le_bytes()) {
        Ok(()) => ERRNO_SUCCESS,
        Err(_) => ERRNO_INVAL,
    }
}

fn flags<T: TryFrom<i32>>(raw: i32) -> Option<T> {
    T::try_from(raw).ok()
}

fn rights(raw: i64) -> Option<types::Rights> {
    types::Rights::try_from(raw).ok()
}

/// Runs `f` on the WASI context with the guest's memory, as wiggle's glue does: that glue
/// also hands the context the store's host-call copy budget before each call, without
/// which a shadowed call sees whatever the previous glued call left (none, right after an
/// instance boots from an image: the first write failed `ENOMEM`).
macro_rules! with_wasi {
    ($caller:expr, $memory:expr, |$ctx:ident, $mem:ident| $body:expr) => {{
        let fuel = wasmtime::AsContextMut::as_context_mut(&mut $caller).hostcall_fuel();
        let (data, state) = $memory.data_and_store_mut(&mut $caller);
        let mut guest_memory = GuestMemory::Unshared(data);
        let $ctx = &mut state.wasi;
        $ctx.set_hostcall_fuel(fuel);
        let $mem = &mut guest_memory;
        $body.await
    }};
}

async fn fd_write(
    caller: Caller<'_, GuestState>,
    (fd, iovs, count, nwritten): (i32, i32, i32, i32),
) -> wasmtime::Result<i32> {
    charged_write(caller, fd, iovs, count, None, nwritten).await
}

async fn fd_pwrite(
    caller: Caller<'_, GuestState>,
    (fd, iovs, count, offset, nwritten): (i32, i32, i32, i64, i32),
) -> wasmtime::Result<i32> {
    charged_write(caller, fd, iovs, count, Some(offset as u64), nwritten).await
}

/// `fd_write` (no offset) or `fd_pwrite`, after charging the scratch quota.
async fn charged_write(
    mut caller: Caller<'_, GuestState>,
    fd: i32,
    iovs: i32,
    count: i32,
    offset: Option<u64>,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = memory(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    // Every descriptor is charged, stdio included: a guest can close fd 1 and get a scratch
    // file under that number. Writes to the stdio sinks cost nothing real, and the next
    // re-measurement forgives them.
    let Some(len) = iov_total(&mut caller, iovs, count) else {
        return Ok(ERRNO_INVAL);
    };
    if !charge_bytes(&mut caller.data_mut().fs, len) {
        return Ok(ERRNO_NOSPC);
    }
    let ciovs = GuestPtr::new((iovs as u32, count as u32));
    let fd = types::Fd::from(fd);
    let result = match offset {
        None => with_wasi!(caller, memory, |wasi, mem| wasi.fd_write(mem, fd, ciovs)),
        Some(at) => with_wasi!(caller, memory, |wasi, mem| wasi
            .fd_pwrite(mem, fd, ciovs, at)),
    };
    match errno(result)? {
        (ERRNO_SUCCESS, Some(n)) => Ok(put_u32(&mut caller, memory, nwritten, n)),
        (code, _) => Ok(code),
    }
}

async fn path_open(
    mut caller: Caller<'_, GuestState>,
    (dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, fd_out): PathOpenArgs,
) -> wasmtime::Result<i32> {
    let Some(memory) = memory(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let guard = &mut caller.data_mut().fs;
    if guard.open_files.len() >= guard.max_open_files as usize {
        return Ok(ERRNO_MFILE);
    }
    if oflags & OFLAGS_CREAT != 0 && !charge_entry(guard) {
        return Ok(ERRNO_DQUOT);
    }
    let (Some(dirflags), Some(oflags), Some(fdflags), Some(base), Some(inheriting)) = (
        flags::<types::Lookupflags>(dirflags),
        flags::<types::Oflags>(oflags),
        flags::<types::Fdflags>(fdflags),
        rights(base),
        rights(inheriting),
    ) else {
        return Ok(ERRNO_INVAL);
    };
    let path = GuestPtr::new((path as u32, path_len as u32));
    let result = with_wasi!(caller, memory, |wasi, mem| wasi.path_open(
        mem,
        types::Fd::from(dirfd),
        dirflags,
        path,
        oflags,
        base,
        inheriting,
        fdflags
    ));
    match errno(result)? {
        (ERRNO_SUCCESS, Some(fd)) => {
            let fd = u32::from(fd);
            caller.data_mut().fs.open_files.insert(fd);
            Ok(put_u32(&mut caller, memory, fd_out, fd))
        }
        (code, _) => Ok(code),
    }
}

async fn path_create_directory(
    mut caller: Caller<'_, GuestState>,
    (dirfd, path, path_len): (i32, i32, i32),
) -> wasmtime::Result<i32> {
    let Some(memory) = memory(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    if !charge_entry(&mut caller.data_mut().fs) {
        return Ok(ERRNO_DQUOT);
    }
    let path = GuestPtr::new((path as u32, path_len as u32));
    let result = with_wasi!(caller, memory, |wasi, mem| wasi.path_create_directory(
        mem,
        types::Fd::from(dirfd),
        path
    ));
    Ok(errno(result)?.0)
}

async fn fd_close(mut caller: Caller<'_, GuestState>, fd: i32) -> wasmtime::Result<i32> {
    let Some(memory) = memory(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let result = with_wasi!(caller, memory, |wasi, mem| wasi
        .fd_close(mem, types::Fd::from(fd)));
    let code = errno(result)?.0;
    if code == ERRNO_SUCCESS {
        caller.data_mut().fs.open_files.remove(&(fd as u32));
    }
    Ok(code)
}

async fn fd_renumber(
    mut caller: Caller<'_, GuestState>,
    (from, to): (i32, i32),
) -> wasmtime::Result<i32> {
    let Some(memory) = memory(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    let result = with_wasi!(caller, memory, |wasi, mem| wasi.fd_renumber(
        mem,
        types::Fd::from(from),
        types::Fd::from(to)
    ));
    let code = errno(result)?.0;
    if code == ERRNO_SUCCESS && from != to {
        // The target descriptor was closed and the source moved onto it.
        let open = &mut caller.data_mut().fs.open_files;
        open.remove(&(to as u32));
        if open.remove(&(from as u32)) {
            open.insert(to as u32);
        }
    }
    Ok(code)
}

/// Growing a file by size alone allocates no blocks, but a scratch file is still never made
/// larger than the whole quota (`EFBIG`), so apparent sizes stay sane for host tools.
async fn fd_filestat_set_size(
    mut caller: Caller<'_, GuestState>,
    (fd, size): (i32, i64),
) -> wasmtime::Result<i32> {
    let Some(memory) = memory(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    if let Some(usage) = &caller.data().fs.scratch
        && size as u64 > usage.max_bytes
    {
        return Ok(ERRNO_FBIG);
    }
    let result = with_wasi!(caller, memory, |wasi, mem| wasi.fd_filestat_set_size(
        mem,
        types::Fd::from(fd),
        size as u64
    ));
    Ok(errno(result)?.0)
}
