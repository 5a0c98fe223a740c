//! scriptbox: a REST server that runs untrusted Python tools in CPython compiled to WASI,
//! inside wasmtime, each call bounded by fuel, a deadline, a memory cap and an output cap.
//!
//! # Layout
//!
//! Layering, top to bottom (a module imports only from below it):
//!
//! * [`http`] — axum router, handlers, the one `ApiError`, the response envelope. The only
//!   module that imports axum.
//! * [`server`] — assembles the parts and serves a listener until shutdown.
//! * [`tenants`] — API keys (SHA-256 digests) -> tenant; each tenant owns a registry, a rate
//!   limiter and a body limit. Failed key checks are counted per client address.
//! * [`jobs`] — `callAsync` jobs: a bounded, expiring table per tenant.
//! * [`native`] — trusted native modules: manifests and load order (the loader is to come).
//! * [`tasks`] — workflows of steps with timeouts, retries and a durable SQLite history.
//! * [`registry`] — one owner's loaded tools: alias -> actor with a bounded queue and one
//!   instance; tool and call quotas; scratch folders.
//! * [`sandbox`] — one guest instance: WASI context (deny by default), mounts, the
//!   file-system guard (scratch quotas, descriptors, no links), limits, the door, typed
//!   outcomes. Knows limits and mounts, never tenants.
//! * [`engine`] — the wasmtime policy (fuel, epochs, stacks, features), the epoch ticker and
//!   the compiled-module cache (the only `unsafe` besides the future native loader).
//! * [`protocol`] — host <-> guest driver frames.
//! * [`config`] — the validated server configuration.
//! * [`artifacts`], [`guest`] — the fetched interpreter and the embedded guest driver.
//! * [`bench`] — the `scriptbox bench` subcommand.

pub mod artifacts;
pub mod bench;
pub mod config;
pub mod engine;
pub mod guest;
pub mod http;
pub mod jobs;
pub mod native;
pub mod packages;
pub mod protocol;
pub mod registry;
pub mod sandbox;
pub mod server;
pub mod tasks;
pub mod tenants;
