//! What guest code may ask of its owner through host calls: the owner's global variables
//! (`syncVariableToGlobal` / `syncVariableFromGlobal` over HTTP, `scriptbox.get_global` /
//! `set_global` in the guest) and the functions the owner registered (`registerFunction`).
//!
//! A registered function is another of the owner's tools' functions; calling it runs a job
//! in that tool, inside the caller's deadline (the sandbox stops the caller when it passes,
//! and the callee's job is cancelled with it). A chain of calls may not come back to a tool
//! already waiting in it (it would wait on itself) and is at most [`MAX_CHAIN`] tools long.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, Weak};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::job::{CancelOnDrop, Job};
use super::{Registry, RegistryError, lock};
use crate::protocol::{HostRequest, Op};
use crate::sandbox::{HostCalls, HostReply, Outcome};

/// Most tools one chain of registered-function calls may pass through.
pub const MAX_CHAIN: usize = 4;
/// Most global variables per owner.
pub const MAX_GLOBALS: usize = 1024;
/// Largest JSON text of one global variable.
pub const MAX_GLOBAL_BYTES: usize = 256 << 10;
/// Largest JSON text of all of an owner's global variables together.
pub const MAX_GLOBALS_TOTAL: usize = 8 << 20;
/// Most registered functions per owner.
pub const MAX_FUNCTIONS: usize = 256;

/// Why a global variable could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobalsError {
    #[error("a global value may be at most {MAX_GLOBAL_BYTES} bytes of JSON")]
    TooLarge,
    #[error("the owner already has {MAX_GLOBALS} global variables")]
    TooMany,
    #[error("the owner's global variables may hold at most {MAX_GLOBALS_TOTAL} bytes of JSON")]
    Full,
}

/// An owner's global variables: JSON values by name, bounded in count and size.
#[derive(Default)]
pub struct Globals {
    values: Mutex<BTreeMap<String, Box<RawValue>>>,
}

impl Globals {
    pub fn get(&self, name: &str) -> Option<Box<RawValue>> {
        lock(&self.values).get(name).cloned()
    }

    /// Sets `name` (a checked name) to `value`.
    pub fn set(&self, name: &str, value: Box<RawValue>) -> Result<(), GlobalsError> {
        if value.get().len() > MAX_GLOBAL_BYTES {
            return Err(GlobalsError::TooLarge);
        }
        let mut values = lock(&self.values);
        let replaced = values.get(name).map_or(0, |old| old.get().len());
        if replaced == 0 && !values.contains_key(name) && values.len() >= MAX_GLOBALS {
            return Err(GlobalsError::TooMany);
        }
        let total: usize = values.values().map(|v| v.get().len()).sum();
        if total - replaced + value.get().len() > MAX_GLOBALS_TOTAL {
            return Err(GlobalsError::Full);
        }
        values.insert(name.to_owned(), value);
        Ok(())
    }

    /// Removes `name`; whether it was there.
    pub fn delete(&self, name: &str) -> bool {
        lock(&self.values).remove(name).is_some()
    }

    pub fn names(&self) -> Vec<String> {
        lock(&self.values).keys().cloned().collect()
    }
}

/// What a registered function runs: a public function of one of the owner's tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub alias: String,
    pub function_name: String,
}

/// An owner's registered functions, by name.
#[derive(Default)]
pub struct Functions {
    targets: Mutex<BTreeMap<String, Target>>,
}

impl Functions {
    /// Registers (or re-points) `name`; `false` when the table is full.
    pub fn register(&self, name: &str, target: Target) -> bool {
        let mut targets = lock(&self.targets);
        if !targets.contains_key(name) && targets.len() >= MAX_FUNCTIONS {
            return false;
        }
        targets.insert(name.to_owned(), target);
        true
    }

    pub fn unregister(&self, name: &str) -> bool {
        lock(&self.targets).remove(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<Target> {
        lock(&self.targets).get(name).cloned()
    }

    pub fn list(&self) -> BTreeMap<String, Target> {
        lock(&self.targets).clone()
    }
}

/// The host calls of one job: the owner's services, and the tools the job's call chain has
/// passed through. Borrowed from the job's runner, so a job that makes no host call (almost
/// all of them) allocates nothing for it.
pub(super) struct JobHost<'a> {
    pub registry: &'a Weak<Registry>,
    /// The tools waiting on this job, outermost first (empty for a client's request).
    pub outer: Vec<String>,
    /// The job's own tool (none for a fresh sandbox).
    pub own: Option<&'a str>,
    /// The job's outbound HTTP so far.
    pub http: crate::egress::CallBudget,
}

impl JobHost<'_> {
    /// The whole chain, the job's own tool last.
    fn chain(&self) -> Vec<String> {
        let mut chain = self.outer.clone();
        chain.extend(self.own.map(str::to_owned));
        chain
    }
}

impl HostCalls for JobHost<'_> {
    fn handle(&self, request: HostRequest) -> Pin<Box<dyn Future<Output = HostReply> + Send + '_>> {
        Box::pin(async move {
            let registry = self
                .registry
                .upgrade()
                .ok_or_else(|| "the tool's owner is gone".to_owned())?;
            match request {
                HostRequest::GetGlobal { name } => {
                    check_global(&name)?;
                    Ok(registry
                        .globals
                        .get(&name)
                        .unwrap_or_else(crate::protocol::null))
                }
                HostRequest::SetGlobal { name, value } => {
                    check_global(&name)?;
                    registry
                        .globals
                        .set(&name, value)
                        .map_err(|e| e.to_string())?;
                    Ok(crate::protocol::null())
                }
                HostRequest::DeleteGlobal { name } => {
                    check_global(&name)?;
                    Ok(boolean(registry.globals.delete(&name)))
                }
                HostRequest::GlobalNames => {
                    let names = serde_json::to_string(&registry.globals.names())
                        .map_err(|e| e.to_string())?;
                    RawValue::from_string(names).map_err(|e| e.to_string())
                }
                HostRequest::CallFunction { name, args, kwargs } => {
                    self.call_function(&registry, &name, args, kwargs).await
                }
                HostRequest::Native {
                    module,
                    function,
                    args,
                } => call_native(&registry.settings().native, &module, &function, &args).await,
                HostRequest::Http(request) => {
                    let answer = match &registry.settings().egress {
                        Some(egress) => egress.perform(request, &self.http).await,
                        None => serde_json::json!({"error": {"kind": "denied",
                            "message": "outbound HTTP is not allowed for this tool's owner (no egress rule)"}}),
                    };
                    serde_json::value::to_raw_value(&answer).map_err(|e| e.to_string())
                }
            }
        })
    }
}

/// A global variable's (or registered function's) name: a variable name, the message naming
/// the field `name`.
/// A native-module call from guest code: only what the owner's policy names, and bounded by
/// the loader's call timeout (the instance also stops waiting at the request's deadline).
async fn call_native(
    access: &crate::native::Access,
    module: &str,
    function: &str,
    args: &RawValue,
) -> HostReply {
    access.check(module, function, "tool's owner")?;
    let share = access.slot()?;
    access
        .modules
        .call(module, function, args.get(), None, Some(share))
        .await
        .map_err(|err| err.to_string())
}

pub fn check_global(name: &str) -> Result<(), String> {
    crate::names::check_variable(name).map_err(|e| e.to_string().replace("variable_name", "name"))
}

fn boolean(value: bool) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap_or_else(|_| crate::protocol::null())
}

impl JobHost<'_> {
    async fn call_function(
        &self,
        registry: &Registry,
        name: &str,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    ) -> HostReply {
        let target = registry
            .functions
            .get(name)
            .ok_or_else(|| format!("no function is registered as {name:?}"))?;
        let chain = self.chain();
        if chain.contains(&target.alias) {
            return Err(format!(
                "{name:?} runs in tool {:?}, which is already waiting in this call chain ({})",
                target.alias,
                chain.join(" -> ")
            ));
        }
        if chain.len() >= MAX_CHAIN {
            return Err(format!(
                "a chain of registered-function calls may pass through at most {MAX_CHAIN} tools"
            ));
        }
        if !args.get().starts_with('[') || !kwargs.get().starts_with('{') {
            return Err("args must be a list and kwargs a dict".to_owned());
        }
        let tool = registry.get(&target.alias).map_err(|_| {
            format!(
                "{name:?} runs in tool {:?}, which is not loaded",
                target.alias
            )
        })?;
        let permits = registry.admit_call().map_err(|e| e.to_string())?;
        let (cancel, cancelled) = oneshot::channel();
        let mut guard = CancelOnDrop(Some(cancel));
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::Run {
            op: Op::Call {
                function: target.function_name.clone(),
                args,
                kwargs,
            },
            reply,
            permits,
            cancel: Some(cancelled),
            chain,
            within: None,
            counted: true,
            stream: None,
        })
        .map_err(|e| e.to_string())?;
        let report = answer
            .await
            .map_err(|_| RegistryError::Unloaded.to_string())?
            .map_err(|e| e.to_string())?;
        guard.disarm();
        match report.outcome {
            Outcome::Answered {
                result,
                error: None,
                ..
            } => Ok(result.unwrap_or_else(crate::protocol::null)),
            Outcome::Answered {
                error: Some(error), ..
            } => Err(format!(
                "{name:?} failed: {}{}",
                error.exc_type.map(|t| t + ": ").unwrap_or_default(),
                error.message
            )),
            Outcome::Faulted { fault, .. } => Err(format!("{name:?} stopped: {fault}")),
        }
    }
}
