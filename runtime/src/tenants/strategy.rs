//! Error-handling strategies (`setErrorHandlingStrategy`): per tenant, optionally per alias.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

/// What a failing call turns into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStrategy {
    /// An error response (and a batch stops at the first failure).
    #[default]
    Throw,
    /// A `null` result with a `warning` naming the error (a batch goes on).
    ReturnDefault,
    /// An error response, logged; a batch records it and goes on.
    LogAndContinue,
}

impl ErrorStrategy {
    /// Parses a name or the original's number (0, 1, 2).
    pub fn parse(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::String(name) => match name.as_str() {
                "throw" => Some(Self::Throw),
                "return_default" => Some(Self::ReturnDefault),
                "log_and_continue" => Some(Self::LogAndContinue),
                _ => None,
            },
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(0) => Some(Self::Throw),
                Some(1) => Some(Self::ReturnDefault),
                Some(2) => Some(Self::LogAndContinue),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Most per-alias strategies one tenant may set.
pub const MAX_ALIAS_STRATEGIES: usize = 1024;

#[derive(Default)]
pub struct Strategies {
    inner: Mutex<(ErrorStrategy, HashMap<String, ErrorStrategy>)>,
}

impl Strategies {
    fn inner(&self) -> std::sync::MutexGuard<'_, (ErrorStrategy, HashMap<String, ErrorStrategy>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The strategy for calls to `alias`.
    pub fn for_alias(&self, alias: &str) -> ErrorStrategy {
        let inner = self.inner();
        inner.1.get(alias).copied().unwrap_or(inner.0)
    }

    /// Whether [`Strategies::set`] would take `alias` (the per-alias table has room for it).
    pub fn can_set(&self, alias: Option<&str>) -> bool {
        let inner = self.inner();
        alias
            .is_none_or(|alias| inner.1.len() < MAX_ALIAS_STRATEGIES || inner.1.contains_key(alias))
    }

    /// Sets the tenant's default, or one alias's strategy; `false` if the per-alias table is
    /// full.
    pub fn set(&self, alias: Option<&str>, strategy: ErrorStrategy) -> bool {
        let mut inner = self.inner();
        match alias {
            None => {
                inner.0 = strategy;
                true
            }
            Some(alias) => {
                if inner.1.len() >= MAX_ALIAS_STRATEGIES && !inner.1.contains_key(alias) {
                    return false;
                }
                inner.1.insert(alias.to_owned(), strategy);
                true
            }
        }
    }
}
