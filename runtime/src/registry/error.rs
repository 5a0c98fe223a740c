//! Why a registry operation failed.

use crate::names::NameError;
use crate::protocol::GuestError;
use crate::sandbox::{Fault, LimitError, SpawnError};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no tool is loaded under that alias")]
    NotFound,
    #[error("no script of that name")]
    ScriptNotFound,
    #[error("the script has no such version")]
    UnknownVersion,
    #[error("loaded tools run the script")]
    ScriptInUse(Vec<String>),
    #[error("{0}")]
    BadScript(String),
    #[error("a tool is already loaded under that alias")]
    AliasExists,
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("{0}")]
    Limits(#[from] LimitError),
    #[error("the owner already has its maximum of {0} tools loaded")]
    TooManyTools(usize),
    #[error("the owner already has its maximum of {0} calls in flight")]
    TooManyCalls(usize),
    #[error("the server is at capacity")]
    Overloaded,
    #[error("the live object was lost when the tool's instance was replaced")]
    ObjectLost(String),
    #[error("the owner already has its maximum of {0} package environments")]
    TooManyVenvs(usize),
    #[error("no package environment of that name")]
    VenvNotFound,
    #[error("the tool already has its maximum of {0} breakpoints")]
    TooManyBreakpoints(usize),
    #[error("the tool's queue is full")]
    Busy,
    #[error("the tool was unloaded while the call waited")]
    Unloaded,
    #[error("the tool script failed to import")]
    LoadFailed(GuestError),
    #[error("the tool could not start: {0}")]
    StartFaulted(Fault),
    #[error("internal error")]
    Host(#[source] anyhow::Error),
}

impl From<SpawnError> for RegistryError {
    fn from(err: SpawnError) -> Self {
        match err {
            SpawnError::LoadFailed(error) => Self::LoadFailed(error),
            SpawnError::Faulted(fault) => Self::StartFaulted(fault),
            SpawnError::Host(err) => Self::Host(err),
        }
    }
}
