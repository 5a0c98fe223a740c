//! Write a scriptbox native module in plain Rust.
//!
//! A native module is a shared library that scriptbox loads into its own (trusted) process,
//! never into a sandbox. It speaks a small C ABI, version [`ABI_VERSION`], documented in
//! `modules/README.md`; this crate implements the module's side of it behind one macro, so a
//! module author writes ordinary functions from JSON to JSON:
//!
//! ```ignore
//! use scriptbox_module::{Value, json};
//!
//! fn double(args: Value) -> Result<Value, String> {
//!     let x = args["x"].as_f64().ok_or("x must be a number")?;
//!     Ok(json!(x * 2.0))
//! }
//!
//! scriptbox_module::module! { functions: [double] }
//! ```
//!
//! The macro exports `scriptbox_abi_version`, `scriptbox_init`, `scriptbox_free`,
//! `scriptbox_shutdown` and one `scriptbox_fn_<name>` per function. Arguments that are not
//! JSON, an `Err` and a panic all come back to the host as an error message; a panic never
//! unwinds into the host. A module calls the modules it depends on through [`host`].

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

pub use serde_json::{self, Value, json};

/// The ABI version this crate speaks; the host refuses a library that reports another.
pub const ABI_VERSION: u32 = 1;
/// Status of a call that returned a JSON result.
pub const STATUS_OK: i32 = 0;
/// Status of a call that returned a UTF-8 error message.
pub const STATUS_ERROR: i32 = 1;

/// What the host hands to `scriptbox_init`: a way to call the module's dependencies. It stays
/// valid until `scriptbox_shutdown` returns.
#[repr(C)]
pub struct HostApi {
    pub abi_version: u32,
    pub ctx: *const c_void,
    /// Calls `function` of `module` (one of this module's declared dependencies) with JSON
    /// `args`. Returns [`STATUS_OK`] with a JSON result or [`STATUS_ERROR`] with a message in
    /// `*out`, which the caller releases with `free`.
    pub call: unsafe extern "C" fn(
        ctx: *const c_void,
        module: *const u8,
        module_len: usize,
        function: *const u8,
        function_len: usize,
        args: *const u8,
        args_len: usize,
        out: *mut *mut u8,
        out_len: *mut usize,
    ) -> i32,
    /// Releases a buffer `call` returned.
    pub free: unsafe extern "C" fn(ptr: *mut u8, len: usize),
}

/// The module's handle on the host, for calling its dependencies.
#[derive(Clone, Copy)]
pub struct Host {
    api: *const HostApi,
}

// SAFETY: the host promises (ABI, `modules/README.md`) that the `HostApi` and its `ctx` stay
// valid and may be used from any thread until `scriptbox_shutdown` returns.
unsafe impl Send for Host {}
// SAFETY: as for `Send`; `call` is safe to run concurrently.
unsafe impl Sync for Host {}

static HOST: Mutex<Option<Host>> = Mutex::new(None);

/// The host, between `scriptbox_init` and `scriptbox_shutdown`.
pub fn host() -> Option<Host> {
    *HOST.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Host {
    /// Calls `function` of the dependency `module` with `args`.
    pub fn call(&self, module: &str, function: &str, args: &Value) -> Result<Value, String> {
        let args = args.to_string();
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut out_len = 0usize;
        // SAFETY: `self.api` is the pointer the host passed to `scriptbox_init` and is valid
        // until shutdown (see the `Send` impl); every pointer/length pair describes a live
        // buffer for the duration of the call.
        let (status, bytes) = unsafe {
            let api = &*self.api;
            let status = (api.call)(
                api.ctx,
                module.as_ptr(),
                module.len(),
                function.as_ptr(),
                function.len(),
                args.as_ptr(),
                args.len(),
                &mut out,
                &mut out_len,
            );
            let bytes = if out.is_null() {
                Vec::new()
            } else {
                let copy = std::slice::from_raw_parts(out, out_len).to_vec();
                (api.free)(out, out_len);
                copy
            };
            (status, bytes)
        };
        let text = String::from_utf8_lossy(&bytes);
        if status == STATUS_OK {
            serde_json::from_str(&text).map_err(|err| format!("the host answered bad JSON: {err}"))
        } else {
            Err(text.into_owned())
        }
    }
}

/// Hands `bytes` to the host as an owned buffer it will release with `scriptbox_free`.
fn give(bytes: Vec<u8>, out: *mut *mut u8, out_len: *mut usize) {
    let boxed = bytes.into_boxed_slice();
    let len = boxed.len();
    let ptr = Box::into_raw(boxed).cast::<u8>();
    // SAFETY: the host passes valid, writable `out` and `out_len` (ABI contract).
    unsafe {
        *out = ptr;
        *out_len = len;
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `body` with panics caught, writing its result or error to `out`.
fn answer(
    out: *mut *mut u8,
    out_len: *mut usize,
    body: impl FnOnce() -> Result<Value, String>,
) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => {
            give(value.to_string().into_bytes(), out, out_len);
            STATUS_OK
        }
        Ok(Err(message)) => {
            give(message.into_bytes(), out, out_len);
            STATUS_ERROR
        }
        Err(payload) => {
            give(
                format!("the module panicked: {}", panic_message(&*payload)).into_bytes(),
                out,
                out_len,
            );
            STATUS_ERROR
        }
    }
}

/// # Safety
/// `ptr`/`len` describe a readable buffer (or `ptr` is null and `len` 0).
unsafe fn read_json(ptr: *const u8, len: usize) -> Result<Value, String> {
    if ptr.is_null() || len == 0 {
        return Ok(Value::Null);
    }
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    serde_json::from_slice(bytes).map_err(|err| format!("the arguments are not valid JSON: {err}"))
}

#[doc(hidden)]
/// # Safety
/// Called only by the `scriptbox_init` export with the host's pointers.
pub unsafe fn __init(
    api: *const HostApi,
    config: *const u8,
    config_len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
    init: fn(Value) -> Result<(), String>,
) -> i32 {
    answer(out, out_len, || {
        // SAFETY: the host passes its config buffer (ABI contract).
        let config = unsafe { read_json(config, config_len) }?;
        // The host table is valid only once init succeeded (a failed init gets no shutdown,
        // and its table is freed), so it is published after, and withdrawn on failure.
        let host = (!api.is_null()).then_some(Host { api });
        *HOST.lock().unwrap_or_else(|poison| poison.into_inner()) = host;
        let outcome = init(config);
        if outcome.is_err() {
            *HOST.lock().unwrap_or_else(|poison| poison.into_inner()) = None;
        }
        outcome.map(|()| Value::Null)
    })
}

#[doc(hidden)]
/// # Safety
/// Called only by a `scriptbox_fn_*` export with the host's pointers.
pub unsafe fn __call(
    args: *const u8,
    args_len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
    function: fn(Value) -> Result<Value, String>,
) -> i32 {
    answer(out, out_len, || {
        // SAFETY: the host passes its argument buffer (ABI contract).
        let args = unsafe { read_json(args, args_len) }?;
        function(args)
    })
}

#[doc(hidden)]
/// # Safety
/// `ptr`/`len` were returned by this module (through `give`) and not yet freed.
pub unsafe fn __free(ptr: *mut u8, len: usize) {
    if !ptr.is_null() {
        // SAFETY: `give` made this pointer from a `Box<[u8]>` of exactly `len` bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
    }
}

#[doc(hidden)]
pub fn __shutdown(shutdown: fn()) {
    let _ = catch_unwind(shutdown);
    *HOST.lock().unwrap_or_else(|poison| poison.into_inner()) = None;
}

#[doc(hidden)]
pub fn __no_init(_config: Value) -> Result<(), String> {
    Ok(())
}

#[doc(hidden)]
pub fn __no_shutdown() {}

/// Exports a module's C ABI. `init` (optional) gets the module's config (`configFile`, or
/// `null`); `shutdown` (optional) runs before the library is unloaded; `functions` are the
/// module's `fn(Value) -> Result<Value, String>`, exported under their own names.
#[macro_export]
macro_rules! module {
    (functions: [$($function:ident),* $(,)?] $(,)?) => {
        $crate::module! { init: $crate::__no_init, shutdown: $crate::__no_shutdown, functions: [$($function),*] }
    };
    (init: $init:path, functions: [$($function:ident),* $(,)?] $(,)?) => {
        $crate::module! { init: $init, shutdown: $crate::__no_shutdown, functions: [$($function),*] }
    };
    (init: $init:path, shutdown: $shutdown:path, functions: [$($function:ident),* $(,)?] $(,)?) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn scriptbox_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// # Safety
        /// Called by the scriptbox host with valid pointers (ABI version 1).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn scriptbox_init(
            host: *const $crate::HostApi,
            config: *const u8,
            config_len: usize,
            out: *mut *mut u8,
            out_len: *mut usize,
        ) -> i32 {
            // SAFETY: forwarded from the host under the ABI contract.
            unsafe { $crate::__init(host, config, config_len, out, out_len, $init) }
        }

        /// # Safety
        /// `ptr`/`len` come from this module and are freed once.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn scriptbox_free(ptr: *mut u8, len: usize) {
            // SAFETY: forwarded from the host under the ABI contract.
            unsafe { $crate::__free(ptr, len) }
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn scriptbox_shutdown() {
            $crate::__shutdown($shutdown)
        }

        $(
            const _: () = {
                /// # Safety
                /// Called by the scriptbox host with valid pointers (ABI version 1).
                #[unsafe(export_name = concat!("scriptbox_fn_", stringify!($function)))]
                pub unsafe extern "C" fn export(
                    args: *const u8,
                    args_len: usize,
                    out: *mut *mut u8,
                    out_len: *mut usize,
                ) -> i32 {
                    // SAFETY: forwarded from the host under the ABI contract.
                    unsafe { $crate::__call(args, args_len, out, out_len, $function) }
                }
            };
        )*
    };
}
