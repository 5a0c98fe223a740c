//! Pre-warmed instances for isolated tools: each call of a tool loaded with
//! `mode: "isolated"` takes an instance that no earlier call touched (started from the
//! interpreter snapshot with the tool already imported) and drops it afterwards.
//!
//! The pool's first instance imports the tool and leaves a memory snapshot of it; later
//! ones start from that snapshot instead of importing again ([`crate::sandbox::snapshot`]).
//!
//! A background task per tool keeps up to `per_tool` instances ready, started one after
//! another, each holding one permit of the server-wide `total` so all pools together stay
//! bounded. When the pool is empty (a burst, or the server-wide bound is reached) the call
//! starts its own instance: slower, never refused.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::sandbox::{Instance, Limits, Sandbox, SnapshotCell, ToolMounts};

/// How long the refill task waits after a failed start before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// An instance ready for one call, and its share of the server-wide bound.
pub struct Warm {
    pub instance: Instance,
    _permit: OwnedSemaphorePermit,
}

/// One isolated tool's ready instances. Dropping it stops the refill task (and drops what
/// was ready).
pub struct Pool {
    ready: mpsc::Receiver<Warm>,
    refill: tokio::task::JoinHandle<()>,
}

/// What a pool starts its instances from.
pub struct Recipe {
    pub sandbox: Sandbox,
    pub module: String,
    pub limits: Limits,
    pub mounts: ToolMounts,
}

impl Pool {
    /// Starts filling a pool of up to `per_tool` instances (at least 1 is kept in flight:
    /// with `per_tool` 0 no pool is kept and every call starts its own).
    pub fn start(recipe: Recipe, per_tool: usize, total: Arc<Semaphore>) -> Option<Self> {
        if per_tool == 0 {
            return None;
        }
        let (ready_tx, ready) = mpsc::channel(per_tool);
        let refill = tokio::spawn(refill(recipe, ready_tx, total));
        Some(Self { ready, refill })
    }

    /// A ready instance, if one is waiting.
    pub fn take(&mut self) -> Option<Instance> {
        self.ready.try_recv().ok().map(|warm| warm.instance)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.refill.abort();
    }
}

/// Keeps the channel full: each started instance waits in it until a call takes it. `send`
/// waits while the channel is full, so at most `per_tool` wait plus the one being handed over.
async fn refill(recipe: Recipe, ready: mpsc::Sender<Warm>, total: Arc<Semaphore>) {
    let snapshots = Arc::new(SnapshotCell::default());
    loop {
        let Ok(permit) = Arc::clone(&total).acquire_owned().await else {
            return;
        };
        let started = recipe
            .sandbox
            .spawn_isolated(&recipe.module, &recipe.limits, &recipe.mounts, &snapshots)
            .await;
        match started {
            Ok(instance) => {
                let warm = Warm {
                    instance,
                    _permit: permit,
                };
                if ready.send(warm).await.is_err() {
                    return; // the tool is gone
                }
            }
            Err(err) => {
                drop(permit);
                tracing::warn!(module = %recipe.module, cause = %err, "pool instance failed to start");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}
