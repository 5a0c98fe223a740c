//! Trusted native modules: shared libraries an administrator drops into `modules/<name>/`
//! with a `module.json`, loaded into the host process (never into a sandbox) and called with
//! JSON over a small C ABI (`modules/README.md`). The manifest ([`manifest`]), the load order
//! ([`order`]), the loader with its lock discipline and lifecycle ([`loader`]), its table of
//! modules and their states (`table`), the files behind a module (`files`: folder, library
//! copy, config), calls (`call`), what survives a restart (`saved`), and the ABI itself
//! (`abi`, `bridge`: the only `unsafe` outside the module cache).

#[allow(
    unsafe_code,
    reason = "the C ABI: opening libraries and calling into them"
)]
mod abi;
#[allow(
    unsafe_code,
    reason = "the host table handed to modules over the C ABI"
)]
mod bridge;
mod call;
mod error;
mod files;
pub mod loader;
pub mod manifest;
pub mod order;
mod saved;
mod table;

pub use error::NativeError;
pub use files::{MAX_CONFIG_BYTES, MAX_LIBRARY_BYTES, MAX_MODULES};
pub use loader::{NativeModules, Settings};
pub use table::{State, Status};

/// A tenant's reach into native modules from guest code: the loader and the tenant's policy.
#[derive(Clone)]
pub struct Access {
    pub modules: NativeModules,
    pub policy: crate::config::Policy,
    /// The tenant's share of the native-call slots (half of them, at least one), so its
    /// guests cannot hold every slot with calls they gave up on.
    pub slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Access {
    /// A slot of the tenant's share, or why not.
    pub fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        std::sync::Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| {
                "this tenant already has its share of native calls running; try again later"
                    .to_owned()
            })
    }

    /// Whether `module.function` is allowed, as a guest-facing refusal.
    pub fn check(&self, module: &str, function: &str, who: &str) -> Result<(), String> {
        if self.policy.allows_native(module, function) {
            Ok(())
        } else {
            Err(format!(
                "native function {module}.{function} is not allowed for this {who} \
                 (policy native_functions)"
            ))
        }
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
