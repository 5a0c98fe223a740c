//! The durable store: the only module that holds SQL. Callers get plain Rust types and one
//! error type; the database behind them is this module's business.
//!
//! * [`tasks`] — tasks, their steps and every state change (`<data_dir>/tasks.db`, SQLite
//!   in WAL mode).

pub mod tasks;

/// Why a store operation failed (the detail is for the log, never for a client).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
}

/// A store operation's result.
pub type Result<T> = std::result::Result<T, StoreError>;
