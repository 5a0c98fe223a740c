//! Why a native-module operation or call was refused.

use super::order::OrderError;
use super::table::State;

/// Why a module operation or call was refused.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("no native module is named {0:?}")]
    Unknown(String),
    #[error("module {name:?} has an invalid manifest: {error}")]
    InvalidManifest { name: String, error: String },
    #[error("{0}")]
    Order(#[from] OrderError),
    #[error("module {name:?} is needed by {} (loaded); unload them first", .dependents.join(", "))]
    InUse {
        name: String,
        dependents: Vec<String>,
    },
    #[error("module {name:?} is not loaded (it is {state})")]
    NotLoaded { name: String, state: State },
    #[error("module {name:?} is disabled; enable it first")]
    Disabled { name: String },
    #[error("module {name:?} failed to load: {error}")]
    LoadFailed { name: String, error: String },
    #[error("module {module:?} has no function {function:?}")]
    UnknownFunction { module: String, function: String },
    #[error("{module}.{function} failed: {message}")]
    Failed {
        module: String,
        function: String,
        message: String,
    },
    #[error("{module}.{function} did not answer within {ms} ms")]
    Timeout {
        module: String,
        function: String,
        ms: u128,
    },
    #[error("every native-call thread is busy; try again later")]
    Busy,
    #[error("the path must be a module folder inside the modules folder")]
    ForbiddenPath,
    #[error("{0}")]
    Host(String),
}
