//! The host's side of the native-module C ABI (version 1, `modules/README.md`): opening a
//! library, checking it against its manifest, and calling into it. This file, `bridge.rs`
//! and the module cache are the only places with `unsafe`; each block says why it is sound.
//!
//! A [`Library`] owns the `libloading` handle and the raw function pointers taken from it, so
//! the pointers cannot outlive the code they point into. Its `Drop` runs the module's
//! `scriptbox_shutdown` before the library is closed.

use std::ffi::c_void;
use std::path::Path;

use scriptbox_module::{ABI_VERSION, HostApi, STATUS_OK};

type AbiVersionFn = unsafe extern "C" fn() -> u32;
type InitFn = unsafe extern "C" fn(
    host: *const HostApi,
    config: *const u8,
    config_len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32;
type CallFn = unsafe extern "C" fn(
    args: *const u8,
    args_len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32;
type FreeFn = unsafe extern "C" fn(ptr: *mut u8, len: usize);
type ShutdownFn = unsafe extern "C" fn();

/// The largest answer taken from a module; a longer one is refused (and still freed).
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// An open, checked library. Not yet initialised: see [`Library::init`].
pub struct Library {
    init: InitFn,
    free: FreeFn,
    shutdown: ShutdownFn,
    /// `(name, pointer)` for each declared function, in the manifest's order.
    functions: Vec<(String, CallFn)>,
    initialised: bool,
    /// Last field: dropped (closed) after everything above.
    _handle: libloading::Library,
}

/// A call's outcome as the module reported it.
#[derive(Debug)]
pub enum Answer {
    /// JSON text.
    Ok(String),
    /// The module's error message (a caught panic included).
    Err(String),
}

fn symbol<T: Copy>(handle: &libloading::Library, name: &str) -> Result<T, String> {
    // SAFETY: every `T` used with this function is the exact `extern "C"` signature the ABI
    // (version 1) gives the symbol; the version was checked before any other symbol is taken
    // (see `open`). The copied pointer is stored next to `handle` in `Library` and never
    // outlives it.
    unsafe {
        handle
            .get::<T>(name.as_bytes())
            .map(|symbol| *symbol)
            .map_err(|_| format!("the library does not export `{name}`"))
    }
}

impl Library {
    /// Opens the library at `path` and checks its ABI version and that it exports every
    /// function in `functions`.
    pub fn open(path: &Path, functions: &[String]) -> Result<Self, String> {
        // SAFETY: opening a library runs its initialisers; native modules are trusted code,
        // installed by an administrator (the trust boundary in docs/native-modules.md), and this is the
        // one place they are opened.
        let handle = unsafe { libloading::Library::new(path) }
            .map_err(|err| format!("cannot open the library: {err}"))?;
        let version: AbiVersionFn = symbol(&handle, "scriptbox_abi_version")?;
        // SAFETY: `scriptbox_abi_version` takes nothing and returns a u32 in every ABI version.
        let found = unsafe { version() };
        if found != ABI_VERSION {
            return Err(format!(
                "the library speaks ABI version {found}; this server speaks {ABI_VERSION}"
            ));
        }
        let mut declared = Vec::with_capacity(functions.len());
        for name in functions {
            declared.push((
                name.clone(),
                symbol(&handle, &format!("scriptbox_fn_{name}"))?,
            ));
        }
        Ok(Self {
            init: symbol(&handle, "scriptbox_init")?,
            free: symbol(&handle, "scriptbox_free")?,
            shutdown: symbol(&handle, "scriptbox_shutdown")?,
            functions: declared,
            initialised: false,
            _handle: handle,
        })
    }

    /// Runs the module's init with its config (JSON text) and the host's table, which must
    /// stay valid until this library is dropped.
    pub fn init(&mut self, host: *const HostApi, config: &str) -> Result<(), String> {
        let init = self.init;
        let answer = self.answer(|out, out_len| {
            // SAFETY: `init` has the ABI's signature (checked version); `config` is a live
            // buffer for the call; `host` is kept alive by the caller until after shutdown.
            unsafe { init(host, config.as_ptr(), config.len(), out, out_len) }
        });
        match answer {
            Answer::Ok(_) => {
                self.initialised = true;
                Ok(())
            }
            Answer::Err(message) => Err(message),
        }
    }

    /// Whether the library exports `function` (as declared in its manifest).
    pub fn has(&self, function: &str) -> bool {
        self.functions.iter().any(|(name, _)| name == function)
    }

    /// Calls `function` with `args` (JSON text). `None`: no such declared function.
    pub fn call(&self, function: &str, args: &str) -> Option<Answer> {
        let (_, call) = self.functions.iter().find(|(name, _)| name == function)?;
        let call = *call;
        Some(self.answer(|out, out_len| {
            // SAFETY: `call` was resolved as `scriptbox_fn_<function>` with the ABI's
            // signature and the library is still open (`self` owns it); `args` is live for
            // the call.
            unsafe { call(args.as_ptr(), args.len(), out, out_len) }
        }))
    }

    /// Runs `body` (one ABI call that may hand back a buffer), copies the buffer out and
    /// gives it back to the module's `scriptbox_free`.
    fn answer(&self, body: impl FnOnce(*mut *mut u8, *mut usize) -> i32) -> Answer {
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut out_len = 0usize;
        let status = body(&mut out, &mut out_len);
        let text = if out.is_null() {
            String::new()
        } else {
            let text = if out_len > MAX_ANSWER_BYTES {
                None
            } else {
                // SAFETY: the module returned `out`/`out_len` as one buffer it owns until
                // `scriptbox_free`, which comes just below.
                let bytes = unsafe { std::slice::from_raw_parts(out, out_len) };
                Some(String::from_utf8_lossy(bytes).into_owned())
            };
            // SAFETY: the buffer came from this module and is freed exactly once.
            unsafe { (self.free)(out, out_len) };
            match text {
                Some(text) => text,
                None => {
                    return Answer::Err(format!(
                        "the module answered {out_len} bytes; at most {MAX_ANSWER_BYTES} are taken"
                    ));
                }
            }
        };
        if status == STATUS_OK {
            Answer::Ok(text)
        } else {
            Answer::Err(text)
        }
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if self.initialised {
            // SAFETY: `shutdown` has the ABI's signature and the library is still open (the
            // handle is dropped after this body).
            unsafe { (self.shutdown)() };
        }
    }
}

/// Gives `bytes` to a module as a buffer it releases with [`host_free`].
pub fn host_give(bytes: Vec<u8>, out: *mut *mut u8, out_len: *mut usize) {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed).cast::<u8>();
    if out.is_null() || out_len.is_null() {
        // SAFETY: nowhere to hand it: take the box back at once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
        return;
    }
    // SAFETY: the module passed writable `out`/`out_len` (ABI contract), checked non-null.
    unsafe {
        *out = ptr;
        *out_len = len;
    }
}

/// `HostApi::free`: releases a buffer [`host_give`] made.
///
/// # Safety
/// `ptr`/`len` come from `host_give` and are freed once.
pub unsafe extern "C" fn host_free(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: made by `host_give` from a `Box<[u8]>` of exactly `len` bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
    }
}

/// Reads a `(ptr, len)` string a module passed in.
///
/// # Safety
/// `ptr`/`len` describe a readable buffer for the duration of the borrow (or `ptr` is null).
pub unsafe fn borrowed<'a>(ptr: *const u8, len: usize) -> Option<&'a str> {
    if ptr.is_null() {
        return (len == 0).then_some("");
    }
    // SAFETY: guaranteed by the caller.
    std::str::from_utf8(unsafe { std::slice::from_raw_parts(ptr, len) }).ok()
}

/// A context pointer for [`HostApi::ctx`].
pub fn context<T>(value: &T) -> *const c_void {
    std::ptr::from_ref(value).cast()
}

/// Turns [`HostApi::ctx`] back into the host's value.
///
/// # Safety
/// `ctx` came from [`context`] on a `T` that is still alive.
pub unsafe fn from_context<'a, T>(ctx: *const c_void) -> &'a T {
    // SAFETY: guaranteed by the caller.
    unsafe { &*ctx.cast::<T>() }
}
