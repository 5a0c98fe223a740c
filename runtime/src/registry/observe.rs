//! What the registry tells the server's counters ([`crate::metrics`]) about each call: its
//! outcome named as the `outcome` label says it, its fuel, time, CPU and bytes.

use super::{CallReport, Mode, Registry, RegistryError};
use crate::metrics::{CallOutcome, CallRecord};
use crate::protocol::GuestErrorKind;
use crate::sandbox::{Fault, Outcome};

/// The label of a mode.
pub(super) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Persistent => "persistent",
        Mode::Isolated => "isolated",
    }
}

/// How a call that ran ended.
pub(super) fn outcome_of(outcome: &Outcome) -> CallOutcome {
    match outcome {
        Outcome::Answered { error: None, .. } => CallOutcome::Ok,
        Outcome::Answered {
            error: Some(error),
            memory_capped,
            ..
        } => {
            if error.kind == GuestErrorKind::OutputLimit {
                CallOutcome::OutputCap
            } else if *memory_capped {
                CallOutcome::Memory
            } else {
                CallOutcome::Error
            }
        }
        Outcome::Faulted { fault, .. } => match fault {
            Fault::FuelExhausted => CallOutcome::Fuel,
            Fault::DeadlineExceeded => CallOutcome::Deadline,
            Fault::OutputLimit => CallOutcome::OutputCap,
            Fault::Cancelled => CallOutcome::Cancelled,
            Fault::Exited(_) | Fault::Trapped(_) | Fault::Protocol(_) => CallOutcome::Crashed,
        },
    }
}

/// The outcome of a refusal worth counting (a full queue, a quota), `None` for client
/// mistakes (an unknown alias, a bad name) and the server's own failures.
pub(super) fn refusal_of(err: &RegistryError) -> Option<CallOutcome> {
    match err {
        RegistryError::Busy => Some(CallOutcome::QueueFull),
        RegistryError::TooManyCalls(_) | RegistryError::Overloaded => Some(CallOutcome::Quota),
        _ => None,
    }
}

fn bytes_out(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Answered {
            result,
            stdout,
            stderr,
            ..
        } => (result.as_ref().map_or(0, |r| r.get().len()) + stdout.len() + stderr.len()) as u64,
        Outcome::Faulted { .. } => 0,
    }
}

fn fuel_and_time(outcome: &Outcome) -> (u64, std::time::Duration) {
    match outcome {
        Outcome::Answered {
            fuel_used, elapsed, ..
        } => (*fuel_used, *elapsed),
        Outcome::Faulted { elapsed, .. } => (0, *elapsed),
    }
}

impl Registry {
    /// Counts a call of `tool` (or its refusal) in the server's metrics and the owner's usage.
    pub(super) fn observe(
        &self,
        tool: &str,
        mode: &'static str,
        answer: &Result<CallReport, RegistryError>,
    ) {
        let (outcome, fuel, elapsed, cpu, bytes) = match answer {
            Ok(report) => {
                let (fuel, elapsed) = fuel_and_time(&report.outcome);
                (
                    outcome_of(&report.outcome),
                    fuel,
                    elapsed,
                    report.cpu,
                    bytes_out(&report.outcome),
                )
            }
            Err(err) => match refusal_of(err) {
                Some(outcome) => (outcome, 0, Default::default(), Default::default(), 0),
                None => return,
            },
        };
        self.shared.metrics.record_call(&CallRecord {
            tenant: self.owner(),
            tool,
            mode,
            outcome,
            fuel,
            elapsed,
            cpu,
            bytes_out: bytes,
        });
    }
}
