//! Native calls: a server-wide slot, then the module, then the library on a blocking
//! thread that keeps its slot until the library returns.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::abi::Answer;
use super::error::NativeError;
use super::loader::NativeModules;

impl NativeModules {
    /// Calls `module.function` with `args` (JSON text) on a blocking thread, waiting at most
    /// `within` (or the configured call timeout, whichever is shorter). The answer is JSON.
    ///
    /// `share`: a slot of the caller's own share of native calls (a tenant's), held like the
    /// server-wide one until the library returns, so a tenant whose guests give up on slow
    /// calls cannot take every slot.
    pub async fn call(
        &self,
        module: &str,
        function: &str,
        args: &str,
        within: Option<Duration>,
        share: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Box<RawValue>, NativeError> {
        let limit = within.map_or(self.shared.settings.call_timeout, |w| {
            w.min(self.shared.settings.call_timeout)
        });
        let started = tokio::time::Instant::now();
        let timeout = || NativeError::Timeout {
            module: module.to_owned(),
            function: function.to_owned(),
            ms: limit.as_millis(),
        };
        // The slot first, then the module: a call waiting for a slot must not keep an
        // unloaded module's library alive.
        let permit = tokio::time::timeout(limit, Arc::clone(&self.shared.permits).acquire_owned())
            .await
            .map_err(|_| NativeError::Busy)?
            .map_err(|_| NativeError::Busy)?;
        let loaded = self.shared.loaded(module)?;
        if !loaded.library.has(function) {
            // Dropped off the async threads, in case it is the last hold on an unloaded
            // module (whose shutdown is module code).
            tokio::task::spawn_blocking(move || drop((loaded, permit, share)));
            return Err(NativeError::UnknownFunction {
                module: module.to_owned(),
                function: function.to_owned(),
            });
        }
        let (name, args) = (function.to_owned(), args.to_owned());
        // The thread holds its permit until the library returns, even after the caller gave
        // up: a module that hangs keeps using its slot, so hung calls cannot pile up threads.
        let task = tokio::task::spawn_blocking(move || {
            let _permit = (permit, share);
            loaded.library.call(&name, &args)
        });
        let answer = tokio::time::timeout(limit.saturating_sub(started.elapsed()), task).await;
        let answer = match answer {
            Err(_) => {
                self.shared.count(module, true);
                return Err(timeout());
            }
            Ok(Err(join)) => Err(NativeError::Host(format!(
                "native call thread failed: {join}"
            ))),
            Ok(Ok(None)) => Err(NativeError::UnknownFunction {
                module: module.to_owned(),
                function: function.to_owned(),
            }),
            Ok(Ok(Some(Answer::Ok(text)))) => {
                RawValue::from_string(text).map_err(|_| NativeError::Failed {
                    module: module.to_owned(),
                    function: function.to_owned(),
                    message: "the module answered text that is not JSON".to_owned(),
                })
            }
            Ok(Ok(Some(Answer::Err(message)))) => Err(NativeError::Failed {
                module: module.to_owned(),
                function: function.to_owned(),
                message,
            }),
        };
        self.shared.count(module, answer.is_err());
        answer
    }
}
