//! What goes into a tool's queue: the jobs its actor takes one at a time, and the guard
//! that cancels work its caller abandoned.

use tokio::sync::oneshot;

use super::quota::CallPermits;
use super::{CallReport, RegistryError};
use crate::protocol::Op;
use crate::scripts::ScriptRef;

pub(super) enum Job {
    Run {
        op: Op,
        reply: oneshot::Sender<Result<CallReport, RegistryError>>,
        permits: CallPermits,
        cancel: Option<oneshot::Receiver<()>>,
        /// The tools waiting on this job through registered-function calls, outermost first.
        chain: Vec<String>,
        /// A lower deadline for this job than the tool's.
        within: Option<std::time::Duration>,
        /// Whether it counts in the tool's `calls` (the server's own checks do not).
        counted: bool,
        /// Where its `print()` output streams, if anywhere.
        stream: Option<crate::sandbox::OutputSink>,
    },
    Reload {
        /// The version to move to.
        script: ScriptRef,
        reply: oneshot::Sender<Result<(), RegistryError>>,
        permits: CallPermits,
    },
    /// The instance's linear memory size, if it has one.
    LinearMemory {
        reply: oneshot::Sender<Option<usize>>,
    },
    /// Drops the instance if it has been idle at least this long; it restarts on the next
    /// call. Answers whether it was dropped.
    Evict {
        idle_for: std::time::Duration,
        reply: oneshot::Sender<bool>,
    },
}

/// How the caller of a run waits for it: a message on `cancel` stops the guest mid-call,
/// and `stream` gets its `print()` output as it is written.
pub(super) struct Watch {
    pub(super) cancel: Option<oneshot::Receiver<()>>,
    pub(super) stream: Option<crate::sandbox::OutputSink>,
}

/// Sends a cancel when dropped before it is disarmed: work abandoned by its caller (a
/// dropped step, a host call past its caller's deadline) stops the guest running it.
pub(super) struct CancelOnDrop(pub(super) Option<oneshot::Sender<()>>);

impl CancelOnDrop {
    /// The work was answered: dropping no longer cancels.
    pub(super) fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}
