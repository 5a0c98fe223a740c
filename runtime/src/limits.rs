//! The limits one sandboxed instance runs under: plain, validated data (the configuration
//! reads them, the sandbox enforces them, a load lowers them).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-call and per-instance limits. The server's configuration gives the defaults, which are
/// also the maxima: a load may lower any of them, never raise one ([`Limits::lowered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wasm fuel (roughly, wasm instructions) one call may use. About 10^9 is half a second
    /// to a second of interpreter work on the reference machine.
    pub fuel: u64,
    /// Wall-clock time one call may take, including blocking waits such as `time.sleep`.
    pub deadline_ms: u64,
    /// Linear memory one instance may hold, in bytes. Past it Python sees `MemoryError`.
    pub memory_bytes: u64,
    /// `print()` output (stdout and stderr together, UTF-8 bytes) one call may produce.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 2_000_000_000,
            deadline_ms: 10_000,
            memory_bytes: 512 << 20,
            output_bytes: 1 << 20,
        }
    }
}

/// A request to lower some limits (any field may be absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub output_bytes: Option<u64>,
}

/// Why a set of overrides was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("limit {name} must be at least {min}")]
    TooLow { name: &'static str, min: u64 },
    #[error("limit {name} may not exceed the server's maximum of {max}")]
    AboveMaximum { name: &'static str, max: u64 },
}

/// The smallest values that still let the interpreter start and answer.
pub const MIN_FUEL: u64 = 1_000;
pub const MIN_DEADLINE_MS: u64 = 1;
pub const MIN_MEMORY_BYTES: u64 = 64 << 20;
/// The largest values a configuration may set: a day of wall clock (beyond it `Instant`
/// arithmetic is no longer obviously safe), wasm32's 4 GiB address space, 256 MiB of output.
pub const MAX_DEADLINE_MS: u64 = 24 * 3600 * 1000;
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;
pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// These limits with `overrides` applied, each at most the current value.
    pub fn lowered(&self, overrides: &LimitOverrides) -> Result<Self, LimitError> {
        Ok(Self {
            fuel: pick("fuel", overrides.fuel, self.fuel, MIN_FUEL)?,
            deadline_ms: pick(
                "deadline_ms",
                overrides.deadline_ms,
                self.deadline_ms,
                MIN_DEADLINE_MS,
            )?,
            memory_bytes: pick(
                "memory_bytes",
                overrides.memory_bytes,
                self.memory_bytes,
                MIN_MEMORY_BYTES,
            )?,
            output_bytes: pick("output_bytes", overrides.output_bytes, self.output_bytes, 0)?,
        })
    }

    /// Checks that configured values are usable.
    pub fn validate(&self) -> Result<(), LimitError> {
        for (name, value, max) in [
            ("deadline_ms", self.deadline_ms, MAX_DEADLINE_MS),
            ("memory_bytes", self.memory_bytes, MAX_MEMORY_BYTES),
            ("output_bytes", self.output_bytes, MAX_OUTPUT_BYTES),
        ] {
            if value > max {
                return Err(LimitError::AboveMaximum { name, max });
            }
        }
        for (name, value, min) in [
            ("fuel", self.fuel, MIN_FUEL),
            ("deadline_ms", self.deadline_ms, MIN_DEADLINE_MS),
            ("memory_bytes", self.memory_bytes, MIN_MEMORY_BYTES),
        ] {
            if value < min {
                return Err(LimitError::TooLow { name, min });
            }
        }
        Ok(())
    }
}

fn pick(name: &'static str, asked: Option<u64>, max: u64, min: u64) -> Result<u64, LimitError> {
    match asked {
        None => Ok(max),
        Some(v) if v > max => Err(LimitError::AboveMaximum { name, max }),
        Some(v) if v < min => Err(LimitError::TooLow { name, min }),
        Some(v) => Ok(v),
    }
}

/// The budget an instance gets to start: boot the interpreter and import the tool script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StartLimits {
    pub fuel: u64,
    pub deadline_ms: u64,
}

impl Default for StartLimits {
    fn default() -> Self {
        Self {
            fuel: 20_000_000_000,
            deadline_ms: 30_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_lower_but_never_raise() {
        let base = Limits::default();
        let lowered = base
            .lowered(&LimitOverrides {
                fuel: Some(5_000),
                ..Default::default()
            })
            .expect("lower is fine");
        assert_eq!(lowered.fuel, 5_000);
        assert_eq!(lowered.deadline_ms, base.deadline_ms);
        let raised = base.lowered(&LimitOverrides {
            deadline_ms: Some(base.deadline_ms + 1),
            ..Default::default()
        });
        assert!(matches!(
            raised,
            Err(LimitError::AboveMaximum {
                name: "deadline_ms",
                ..
            })
        ));
        let zero = base.lowered(&LimitOverrides {
            memory_bytes: Some(0),
            ..Default::default()
        });
        assert!(matches!(zero, Err(LimitError::TooLow { .. })));
    }
}
