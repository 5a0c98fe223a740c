//! The durable store: the only module that holds SQL. Callers get plain Rust types and one
//! error type; the database behind them is this module's business.
//!
//! One API over two backends: SQLite in the data dir (the embedded default) and PostgreSQL
//! (`[store] url`), through sqlx's driver-generic `Any` connections, so each query is written
//! once. Queries use only SQL both accept (`$1` parameters, `ON CONFLICT`, `RETURNING`, casts
//! of aggregates to `BIGINT`); the schema's types differ, so each migration has a version per
//! backend ([`migrations`]). Every write is one transaction, committed durably before the call
//! returns (SQLite: WAL with `synchronous = FULL`, so each commit is fsynced).
//!
//! * [`tasks`] — tasks, their steps and every state change.
//! * [`scripts`] — tenants' scripts: immutable versions named by their SHA-256.
//! * [`tools`] — each owner's desired registry state: loaded tools and owner settings.
//! * [`jobs`] — `callAsync` jobs.
//! * [`tenants`] — tenants created through the API, and their keys' digests.
//! * [`packages`] — tenants' installed packages and the wheels they came from.
//! * [`cluster`] — the nodes' heartbeats and the log of changes they follow.
//! * [`audit`] — the audit log, written in batches by each node.

pub mod audit;
pub mod cluster;
pub mod jobs;
mod migrations;
mod open;
pub mod packages;
pub mod scripts;
pub mod tasks;
pub mod tenants;
pub mod tools;

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::AnyPool;

/// Why a store operation failed (the detail is for the log, never for a client).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("a stored record is damaged: {0}")]
    Damaged(String),
}

impl From<sqlx::Error> for StoreError {
    /// Every database failure passes here: it is counted (`scriptbox_store_errors_total`).
    fn from(err: sqlx::Error) -> Self {
        crate::metrics::store_failed();
        Self::Database(err)
    }
}

/// A store operation's result.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Which database holds the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file (created when missing).
    Sqlite(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

/// The store. Cheap to clone: every clone shares the connection pools.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// The node this process is, written into task histories, leases and jobs.
    node: Arc<str>,
}

struct Inner {
    backend: Backend,
    /// Writes. For SQLite a single connection (one writer at a time, so transactions never
    /// wait on each other's locks); for PostgreSQL the same pool as `read`.
    write: AnyPool,
    /// Reads, which in WAL mode never wait for a writer.
    read: AnyPool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The same store, writing as node `node`.
    pub fn for_node(&self, node: &str) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            node: node.into(),
        }
    }

    /// The node this store handle writes as.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn write(&self) -> &AnyPool {
        &self.inner.write
    }

    fn read(&self) -> &AnyPool {
        &self.inner.read
    }

    /// Whether the database answers.
    pub async fn reachable(&self) -> bool {
        sqlx::query("SELECT 1").execute(self.read()).await.is_ok()
    }

    /// Closes the pools (at shutdown), waiting for queries in flight.
    pub async fn close(&self) {
        self.inner.write.close().await;
        self.inner.read.close().await;
    }
}

/// The current time in seconds since the epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A non-negative count or size read from a `BIGINT`.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A count or size to store in a `BIGINT`.
fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
