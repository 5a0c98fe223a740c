//! The configuration's service sections: connection limits (`[http]`), native modules
//! (`[native]`), package installs (`[packages]`), the store (`[store]`) and the node's place
//! in a cluster (`[cluster]`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SOURCE_ROOT;

/// Connection-level limits: what a client gets before any tenant is known.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// A client must send its whole request head within this time (slow-header defence).
    pub header_read_timeout_ms: u64,
    /// A client must send its whole body within this time.
    pub body_read_timeout_ms: u64,
    /// Largest request head (request line and headers); past it 431.
    pub max_header_bytes: usize,
    /// Most headers in one request; past it 431.
    pub max_headers: usize,
    /// Open connections; past it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64 counts as one); past it new
    /// ones from that address are closed at once.
    pub max_connections_per_ip: usize,
    /// Failed key checks per client address per minute; past it every key it sends is
    /// refused with 429 until the minute is over.
    pub auth_failures_per_minute: u32,
    /// Proxies in front of the server (their exact addresses, at most 64). A request whose
    /// connection comes from one of them is attributed to the last address in its
    /// `X-Forwarded-For` that is not a trusted proxy, for the per-address limits; and the
    /// per-address connection cap does not apply to the proxy itself. Empty (the default):
    /// `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_header_bytes: 16 << 10,
            max_headers: 64,
            max_connections: 1024,
            max_connections_per_ip: 64,
            auth_failures_per_minute: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Trusted native modules: where they are and how calls into them are bounded.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NativeConfig {
    /// The modules folder: `<name>/module.json` plus the library.
    pub modules_dir: PathBuf,
    /// Native calls running at once (each on its own blocking thread).
    pub max_concurrent_calls: usize,
    /// The longest a caller waits for a native call (a guest's call also within its deadline).
    pub call_timeout_ms: u64,
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self {
            modules_dir: Path::new(SOURCE_ROOT).join("modules"),
            max_concurrent_calls: 4,
            call_timeout_ms: 10_000,
        }
    }
}

/// How `installPackage` runs pip (as a subprocess, never through a shell).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PackagesConfig {
    /// The Python that runs `-m pip download` (on the host; only downloads, never installs).
    pub python: PathBuf,
    /// A folder of wheels to install from instead of the package index (offline servers).
    pub find_links: Option<PathBuf>,
    /// The longest one pip run may take.
    pub timeout_s: u64,
    /// pip runs at once, all tenants together; other installs wait.
    pub max_concurrent_installs: usize,
    /// Most bytes one install may download (the package, its dependencies and pip's
    /// temporary files); past it pip is killed and the install refused (`too_large`).
    pub max_download_bytes: u64,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        Self {
            python: PathBuf::from("python3"),
            find_links: None,
            timeout_s: 120,
            max_concurrent_installs: 2,
            max_download_bytes: 256 << 20,
        }
    }
}

/// Where the durable records live.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user@host:port/database`: a PostgreSQL server the nodes of a cluster
    /// share. Absent: SQLite in `<data_dir>/scriptbox.db`.
    pub url: Option<String>,
}

/// This node among others on one store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id (1-64 of `[A-Za-z0-9_.-]`), in `/health`, task histories and the
    /// audit log. Absent: made once and kept in `<data_dir>/node-id`.
    pub node_id: Option<String>,
    /// How long a node's claim on a task lasts without its heartbeat; past it another node
    /// takes the task over.
    pub task_lease_s: u64,
    /// How often a node looks for changes other nodes made (on a PostgreSQL store).
    pub poll_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            task_lease_s: 10,
            poll_ms: 200,
        }
    }
}
