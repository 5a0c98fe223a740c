//! Call quotas: every accepted call holds a permit of its owner's concurrency quota and one
//! of the server's until it is answered; past either it is refused at once.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::{Registry, RegistryError};

impl Registry {
    /// Takes a permit of this owner's call quota and one of the server's.
    pub(super) fn admit_call(&self) -> Result<CallPermits, RegistryError> {
        let own = Arc::clone(&self.calls)
            .try_acquire_owned()
            .map_err(|_| RegistryError::TooManyCalls(self.settings.max_concurrent_calls))?;
        let server = Arc::clone(&self.shared.calls)
            .try_acquire_owned()
            .map_err(|_| RegistryError::Overloaded)?;
        Ok(CallPermits {
            _own: own,
            _server: server,
        })
    }
}

/// The permits a call holds until it is answered.
pub(super) struct CallPermits {
    pub(super) _own: OwnedSemaphorePermit,
    pub(super) _server: OwnedSemaphorePermit,
}
