//! Typed outcomes: how a call or a start ended ([`Outcome`], [`Fault`], [`SpawnError`]),
//! and the one place wasmtime's traps and exits are turned into them.

use std::time::Duration;

use serde_json::value::RawValue;
use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

use super::door::{Closed, FrameTooLarge};
use crate::protocol::GuestError;

/// The epoch callback saw the call's deadline pass.
#[derive(Debug, thiserror::Error)]
#[error("the call's deadline passed")]
pub(super) struct DeadlineExceeded;

/// Why an instance stopped. After any fault the instance is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("the call ran out of fuel")]
    FuelExhausted,
    #[error("the call passed its deadline")]
    DeadlineExceeded,
    #[error("the call's response passed the output cap")]
    OutputLimit,
    #[error("the guest exited with status {0}")]
    Exited(i32),
    #[error("the guest trapped: {0}")]
    Trapped(String),
    #[error("the guest broke the protocol: {0}")]
    Protocol(String),
    #[error("the call was cancelled")]
    Cancelled,
}

/// What one call produced.
#[derive(Debug)]
pub enum Outcome {
    /// The driver answered; the instance lives on. `error` is set for failures the driver
    /// reports itself (a Python exception, an unserializable result, ...).
    Answered {
        result: Option<Box<RawValue>>,
        error: Option<GuestError>,
        stdout: String,
        stderr: String,
        fuel_used: u64,
        elapsed: Duration,
        /// The call hit the memory cap: the instance lives but should be replaced.
        memory_capped: bool,
        /// What tracing recorded (see [`protocol::Debug`]).
        debug: Option<Box<RawValue>>,
    },
    /// The instance stopped; it must be replaced.
    Faulted { fault: Fault, elapsed: Duration },
}

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the tool script failed to import")]
    LoadFailed(GuestError),
    #[error("the instance stopped while starting: {0}")]
    Faulted(Fault),
    #[error("the instance could not be created")]
    Host(#[source] anyhow::Error),
}

pub(super) fn ended_with(ended: wasmtime::Result<i32>) -> Fault {
    match ended {
        Ok(code) => Fault::Exited(code),
        Err(err) => classify(&err),
    }
}

/// Names a guest error.
pub(super) fn classify(err: &wasmtime::Error) -> Fault {
    if err.downcast_ref::<DeadlineExceeded>().is_some() {
        return Fault::DeadlineExceeded;
    }
    if err.downcast_ref::<FrameTooLarge>().is_some() {
        return Fault::OutputLimit;
    }
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Fault::Exited(exit.0);
    }
    if err.downcast_ref::<Closed>().is_some() {
        return Fault::Trapped("the instance was closed".into());
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Fault::FuelExhausted,
        Some(Trap::Interrupt) => Fault::DeadlineExceeded,
        Some(trap) => Fault::Trapped(trap.to_string()),
        None => {
            tracing::warn!(cause = ?err, "guest stopped with a host error");
            Fault::Trapped("host error".into())
        }
    }
}
