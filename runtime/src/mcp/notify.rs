//! What the MCP endpoint tells a client without being asked: that the tenant's tools changed
//! (`notifications/tools/list_changed`), and a running call's output (`notifications/progress`).
//!
//! * **List changes** reach a client of the session protocol versions on its session's
//!   server-to-client stream (`GET /mcp`), from the `initialized` notification until the
//!   session closes; a client of 2026-07-28 asks with `subscriptions/listen`. Changes that come
//!   close together are sent as one (at most one per [`SETTLE`]).
//! * **Progress**: when a `tools/call` carries a progress token, each piece of output the guest
//!   writes while it runs (16 KiB at most, every 25 ms while output flows) is one progress
//!   notification whose `message` is the text (`stderr` text prefixed `[stderr] `) and whose
//!   `progress` counts the pieces.

use std::future::Future;
use std::time::Duration;

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use tokio::sync::{mpsc, watch};

use crate::sandbox::{Output, OutputSink, Stream};

/// The least time between two list-change notifications of one session.
pub const SETTLE: Duration = Duration::from_millis(100);

/// How often a watcher looks whether its session's transport closed (a backstop: the
/// session's handler stops its watcher when it is dropped).
const CHECK_CLOSED: Duration = Duration::from_secs(10);

/// Calls `send` after each change of `changes` until `send` fails, `changes` closes or
/// `closed()` says the client is gone.
pub async fn list_changes<S, F>(
    mut changes: watch::Receiver<u64>,
    closed: impl Fn() -> bool,
    mut send: S,
) where
    S: FnMut() -> F,
    F: Future<Output = bool>,
{
    changes.mark_unchanged();
    let mut check = tokio::time::interval(CHECK_CLOSED);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(SETTLE).await;
                changes.mark_unchanged();
                if !send().await {
                    return;
                }
            }
            _ = check.tick() => {
                if closed() {
                    return;
                }
            }
        }
    }
}

/// Runs `call` with an output sink when the client asked for progress, sending each piece of
/// output as a progress notification while it runs; `call`'s answer.
pub async fn with_progress<F, Fut, T>(
    peer: &Peer<RoleServer>,
    token: Option<ProgressToken>,
    call: F,
) -> T
where
    F: FnOnce(Option<OutputSink>) -> Fut,
    Fut: Future<Output = T>,
{
    let Some(token) = token else {
        return call(None).await;
    };
    let (sink, mut output) = mpsc::unbounded_channel();
    let call = call(Some(sink));
    tokio::pin!(call);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            biased;
            piece = output.recv() => match piece {
                Some(piece) => progress(peer, &token, &mut sent, piece).await,
                None => return call.await,
            },
            answer = &mut call => {
                // What the guest wrote last, before its answer.
                while let Ok(piece) = output.try_recv() {
                    progress(peer, &token, &mut sent, piece).await;
                }
                return answer;
            }
        }
    }
}

async fn progress(peer: &Peer<RoleServer>, token: &ProgressToken, sent: &mut u64, piece: Output) {
    *sent += 1;
    let message = match piece.stream {
        Stream::Stdout => piece.text,
        Stream::Stderr => format!("[stderr] {}", piece.text),
    };
    let param = ProgressNotificationParam::new(token.clone(), *sent as f64).with_message(message);
    // A client that stopped listening still gets its answer.
    let _ = peer.notify_progress(param).await;
}
