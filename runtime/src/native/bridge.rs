//! The host table a module gets at init ([`HostApi`]): the one way a module reaches another,
//! and only the modules its manifest depends on. A call from a module runs the dependency on
//! the caller's own thread (without taking another call slot), and never takes the loader's
//! admin lock, so a module's init may call its dependencies while the loader is loading it.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Weak;

use scriptbox_module::{ABI_VERSION, HostApi, STATUS_ERROR, STATUS_OK};

use super::abi::{self, Answer};
use super::manifest::Manifest;

/// What a bridge asks of the loader: a call of a loaded module's function (the loader
/// implements it, so this file needs nothing of the loader's).
pub(super) trait Dependencies: Send + Sync {
    /// `module.function(args)`, or why it cannot run.
    fn call(&self, module: &str, function: &str, args: &str) -> Answer;
}

/// One module's host table and what it may reach. Boxed, so the table's `ctx` (a pointer to
/// this value) stays valid while the module is loaded.
pub(super) struct Bridge {
    api: HostApi,
    module: String,
    dependencies: Vec<String>,
    loader: Weak<dyn Dependencies>,
}

// SAFETY: the raw pointer in `api.ctx` points at this same boxed value, which is never
// mutated after `new`; everything else is `Send + Sync` on its own.
unsafe impl Send for Bridge {}
// SAFETY: as above; `host_call` only reads the bridge.
unsafe impl Sync for Bridge {}

impl Bridge {
    pub(super) fn new(
        module: &str,
        manifest: &Manifest,
        loader: Weak<dyn Dependencies>,
    ) -> Box<Self> {
        let mut bridge = Box::new(Self {
            api: HostApi {
                abi_version: ABI_VERSION,
                ctx: std::ptr::null(),
                call: host_call,
                free: abi::host_free,
            },
            module: module.to_owned(),
            dependencies: manifest
                .dependencies
                .iter()
                .map(|d| d.name.clone())
                .collect(),
            loader,
        });
        bridge.api.ctx = abi::context(&*bridge);
        bridge
    }

    /// The table handed to the module's init.
    pub(super) fn api(&self) -> *const HostApi {
        &self.api
    }

    fn call(&self, module: &str, function: &str, args: &str) -> Answer {
        if !self.dependencies.iter().any(|d| d == module) {
            return Answer::Err(format!(
                "module {:?} may only call the modules its module.json depends on, not {module:?}",
                self.module
            ));
        }
        let Some(loader) = self.loader.upgrade() else {
            return Answer::Err("the server is shutting down".to_owned());
        };
        loader.call(module, function, args)
    }
}

/// `HostApi::call`.
///
/// # Safety
/// Called by a module with the `ctx` of its own table and valid buffers (ABI contract).
#[allow(clippy::too_many_arguments, reason = "the C ABI's signature")]
unsafe extern "C" fn host_call(
    ctx: *const c_void,
    module: *const u8,
    module_len: usize,
    function: *const u8,
    function_len: usize,
    args: *const u8,
    args_len: usize,
    out: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    // A panic must never unwind into the module's frames.
    let answer = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the pointer `Bridge::new` stored, and the bridge outlives the
        // library (it is dropped after it, see `Loaded`).
        let bridge: &Bridge = unsafe { abi::from_context(ctx) };
        // SAFETY: the module passes live buffers for the duration of the call.
        let parts = unsafe {
            (
                abi::borrowed(module, module_len),
                abi::borrowed(function, function_len),
                abi::borrowed(args, args_len),
            )
        };
        match parts {
            (Some(module), Some(function), Some(args)) => bridge.call(module, function, args),
            _ => Answer::Err("module, function and args must be UTF-8".to_owned()),
        }
    }))
    .unwrap_or_else(|_| Answer::Err("the host failed while answering".to_owned()));
    let (status, bytes) = match answer {
        Answer::Ok(text) => (STATUS_OK, text.into_bytes()),
        Answer::Err(text) => (STATUS_ERROR, text.into_bytes()),
    };
    abi::host_give(bytes, out, out_len);
    status
}
