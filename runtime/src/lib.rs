//! scriptbox: a REST server that runs untrusted Python tools in CPython compiled to WASI,
//! inside wasmtime, each call bounded by fuel, a deadline, a memory cap and an output cap.
//!
//! # Layout
//!
//! Layering, top to bottom (a module imports only from below it; docs/architecture.md has
//! the picture):
//!
//! * [`client`] — the `scriptbox` command's client verbs (`scripts push`, `load`, `call`,
//!   `exec`, `tasks ...`): HTTP to a running server; on top, as it uses only the names.
//! * [`server`] — assembles the parts and serves a listener until shutdown (the accept loop).
//! * [`cluster`] — this node among others on one store: its id, heartbeat, the changes of
//!   other nodes applied to its tenants, its task leases.
//! * [`http`] — the edge: axum router, handlers by route family, the one `ApiError`
//!   (`answer` maps call outcomes and registry refusals to it), the response envelope, auth,
//!   the OpenAPI document. Nothing below it imports axum but the MCP edge.
//! * [`mcp`] — the MCP edge (`/mcp`, streamable HTTP through `rmcp`): the tenant's loaded
//!   tools as MCP tools with schemas from their signatures, and `run_python`.
//! * [`tenants`] — API keys (SHA-256 digests) -> tenant; each tenant owns a registry, a rate
//!   limiter and a body limit. Failed key checks are counted per client address.
//! * [`jobs`] — `callAsync` jobs: a bounded, expiring table per tenant.
//! * [`tasks`] — workflows of steps with timeouts, retries and a durable history.
//! * [`packages`] — pure-Python packages for a tenant's sandboxes, and a tool's declared
//!   requirements checked at load.
//! * [`registry`] — one owner's loaded tools: alias -> actor with a bounded queue and one
//!   instance (or an isolated pool); tool and call quotas; scratch folders; the result cache.
//! * [`egress`] — outbound HTTP for tools (`scriptbox.http`): per-tenant rules, the address
//!   check, credentials added by the host, limits, the audit of each request.
//! * [`native`] — trusted native modules: manifests, load order, the loader and its table,
//!   the C ABI (with the module cache, the only `unsafe`).
//! * [`scripts`] — tenants' scripts (immutable versions in the store, checked by compiling
//!   them in a sandbox, written out as files for the tools that run them) and the shared
//!   scripts folder.
//! * [`store`] — the durable records (SQLite or PostgreSQL); the only module that holds SQL.
//! * [`guest`] — the embedded guest driver, installed for the sandbox and precompiled in it.
//! * [`sandbox`] — one guest instance: WASI context (deny by default), mounts, the
//!   file-system guard (scratch quotas, descriptors, no links), the door, typed outcomes,
//!   pre-initialised images. Knows limits and mounts, never tenants.
//! * [`engine`] — the wasmtime policy (fuel, epochs, stacks, features), the epoch ticker and
//!   the compiled-module cache.
//! * [`protocol`] — host <-> guest driver frames.
//! * [`artifacts`] — the fetched interpreter (fetched when missing).
//! * [`config`] — the validated server configuration.
//! * [`metrics`] — the server's counters (`/metrics`, `/usage`): every layer records into
//!   them; plain data, it imports nothing of the crate.
//! * [`limits`], [`names`] — plain data every layer shares: the limits a call runs under,
//!   and the grammars of the names clients and operators write.
//! * [`bench`] — the `scriptbox bench` subcommand (beside the layers: it drives the server
//!   and the sandbox from outside).

pub mod artifacts;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod engine;
pub mod guest;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod names;
pub mod native;
pub mod packages;
pub mod protocol;
pub mod registry;
pub mod sandbox;
pub mod scripts;
pub mod server;
pub mod store;
pub mod tasks;
pub mod tenants;
