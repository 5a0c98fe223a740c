//! Step kinds. Each is a [`Task`]: it checks a step's own fields at submit and runs one
//! attempt. The built-in kinds are `call` (a loaded tool's function) and `script` (code, or
//! a script file, in a fresh sandbox); a Rust user adds more with [`Kinds::register`] (see
//! `runtime/examples/custom_task.rs`).
//!
//! Contract for `run`: finish within `ctx.within` where possible, and stop the work when the
//! future is dropped (the runner drops it on cancel, on the step's or the task's timeout).
//! The built-in kinds hand `within` to the sandbox as the call's deadline, so an overrunning
//! guest is stopped there; dropping them stops the guest as well.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::names::{check_alias, check_function, check_script};
use crate::protocol::{self, Op, SCRATCH_MODULE};
use crate::registry::{CallReport, Registry};
use crate::sandbox::Outcome;

/// One attempt's result: the step's JSON result, or why it failed.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Box<RawValue>, String>> + Send + 'a>>;

/// What a step attempt gets.
pub struct StepContext<'a> {
    /// The task owner's tools and sandboxes.
    pub registry: &'a Arc<Registry>,
    /// The step's own fields (everything but the common ones), as raw JSON.
    pub params: &'a BTreeMap<String, Box<RawValue>>,
    /// The step's inputs, resolved from earlier results (`null` for a failed optional step).
    pub inputs: &'a BTreeMap<String, Box<RawValue>>,
    /// The time this attempt may take (the step's timeout, within the task's).
    pub within: Duration,
}

/// A step kind.
pub trait Task: Send + Sync {
    /// The name steps use in `"kind"`.
    fn kind(&self) -> &'static str;
    /// Checks a step's own fields at submit; `inputs` names the step's inputs. The message
    /// of an error is shown to the client.
    fn validate(
        &self,
        params: &BTreeMap<String, Box<RawValue>>,
        inputs: &[&str],
    ) -> Result<(), String>;
    /// Runs one attempt.
    fn run<'a>(&'a self, ctx: StepContext<'a>) -> StepFuture<'a>;
}

/// The step kinds a server knows, by name.
#[derive(Clone)]
pub struct Kinds {
    kinds: BTreeMap<&'static str, Arc<dyn Task>>,
}

impl Kinds {
    /// `call`, `script` and `native`.
    pub fn builtin() -> Self {
        let mut kinds = Self {
            kinds: BTreeMap::new(),
        };
        kinds.register(Arc::new(CallStep));
        kinds.register(Arc::new(ScriptStep));
        kinds.register(Arc::new(NativeStep));
        kinds
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, task: Arc<dyn Task>) {
        self.kinds.insert(task.kind(), task);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Task>> {
        self.kinds.get(kind)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}

/// Checks that `params` holds only `allowed` keys.
pub fn only(params: &BTreeMap<String, Box<RawValue>>, allowed: &[&str]) -> Result<(), String> {
    match params.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "unknown field {:?} (this kind takes: {})",
            key.chars().take(64).collect::<String>(),
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// A string field.
pub fn text(params: &BTreeMap<String, Box<RawValue>>, key: &str) -> Result<Option<String>, String> {
    params
        .get(key)
        .map(|raw| serde_json::from_str::<String>(raw.get()))
        .transpose()
        .map_err(|_| format!("{key} must be a string"))
}

fn starts(raw: Option<&RawValue>, open: char) -> bool {
    raw.is_none_or(|r| r.get().trim_start().starts_with(open))
}

/// The outcome of a sandboxed run as a step result.
pub fn step_result(report: CallReport) -> Result<Box<RawValue>, String> {
    match report.outcome {
        Outcome::Answered {
            result,
            error: None,
            ..
        } => Ok(result.unwrap_or_else(protocol::null)),
        Outcome::Answered {
            error: Some(error), ..
        } => Err(match error.exc_type {
            Some(kind) => format!("{kind}: {}", error.message),
            None => error.message,
        }),
        Outcome::Faulted { fault, .. } => Err(fault.to_string()),
    }
}

/// `{"kind": "call", "alias", "function_name", "args"?, "kwargs"?}`: the function of a tool
/// the owner has loaded, in that tool's instance; inputs are added to the keyword arguments.
pub struct CallStep;

impl Task for CallStep {
    fn kind(&self) -> &'static str {
        "call"
    }

    fn validate(
        &self,
        params: &BTreeMap<String, Box<RawValue>>,
        inputs: &[&str],
    ) -> Result<(), String> {
        only(params, &["alias", "function_name", "args", "kwargs"])?;
        let alias = text(params, "alias")?.ok_or("alias is required")?;
        check_alias(&alias).map_err(|e| e.to_string())?;
        let function = text(params, "function_name")?.ok_or("function_name is required")?;
        check_function(&function).map_err(|e| e.to_string())?;
        if !starts(params.get("args").map(|r| &**r), '[') {
            return Err("args must be an array".into());
        }
        if !starts(params.get("kwargs").map(|r| &**r), '{') {
            return Err("kwargs must be an object".into());
        }
        if let Some(kwargs) = params.get("kwargs") {
            let kwargs: BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(kwargs.get()).map_err(|_| "kwargs must be an object")?;
            if let Some(both) = inputs.iter().find(|name| kwargs.contains_key(**name)) {
                return Err(format!("{both:?} is both an input and a keyword argument"));
            }
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: StepContext<'a>) -> StepFuture<'a> {
        Box::pin(async move {
            let alias = text(ctx.params, "alias")?.unwrap_or_default();
            let function = text(ctx.params, "function_name")?.unwrap_or_default();
            let args = ctx
                .params
                .get("args")
                .cloned()
                .unwrap_or_else(protocol::empty_array);
            let mut kwargs: BTreeMap<String, Box<RawValue>> = match ctx.params.get("kwargs") {
                Some(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string())?,
                None => BTreeMap::new(),
            };
            kwargs.extend(ctx.inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
            let kwargs = serde_json::value::to_raw_value(&kwargs).map_err(|e| e.to_string())?;
            let op = Op::Call {
                function,
                args,
                kwargs,
            };
            let report = ctx
                .registry
                .run_step(&alias, op, Some(ctx.within))
                .await
                .map_err(|e| e.to_string())?;
            step_result(report)
        })
    }
}

/// `{"kind": "script", "code" | "script_name", "args"?, "imports"?}`: code (the value of a
/// final expression, else its variable `result`), or a script of the owner's scripts folder
/// run as `__main__` (its variable `result`), in a fresh sandbox. `args` and `inputs` are
/// bound as variables; `imports` (module names) are imported first.
pub struct ScriptStep;

/// Most modules a script step imports first.
pub const MAX_IMPORTS: usize = 32;

impl ScriptStep {
    fn imports(params: &BTreeMap<String, Box<RawValue>>) -> Result<Vec<String>, String> {
        let Some(raw) = params.get("imports") else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = serde_json::from_str(raw.get())
            .map_err(|_| "imports must be a list of module names")?;
        if names.len() > MAX_IMPORTS {
            return Err(format!("at most {MAX_IMPORTS} imports"));
        }
        for name in &names {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name.split('.').all(|part| {
                    check_alias(part).is_ok()
                        && part
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if !ok {
                return Err(format!(
                    "import {:?} is not a module name",
                    name.chars().take(64).collect::<String>()
                ));
            }
        }
        Ok(names)
    }
}

impl Task for ScriptStep {
    fn kind(&self) -> &'static str {
        "script"
    }

    fn validate(
        &self,
        params: &BTreeMap<String, Box<RawValue>>,
        _inputs: &[&str],
    ) -> Result<(), String> {
        only(params, &["code", "script_name", "args", "imports"])?;
        match (text(params, "code")?, text(params, "script_name")?) {
            (Some(code), None) => {
                if code.len() > 256 << 10 || code.contains('\0') {
                    return Err("code must be at most 256 KiB, without NUL bytes".into());
                }
            }
            (None, Some(name)) => check_script(&name).map_err(|e| e.to_string())?,
            _ => return Err("give exactly one of code and script_name".into()),
        }
        Self::imports(params)?;
        Ok(())
    }

    fn run<'a>(&'a self, ctx: StepContext<'a>) -> StepFuture<'a> {
        Box::pin(async move {
            let code = text(ctx.params, "code")?;
            let script = text(ctx.params, "script_name")?;
            let inputs = serde_json::value::to_raw_value(ctx.inputs).map_err(|e| e.to_string())?;
            let op = Op::Step {
                code,
                path: script
                    .map(|name| format!("{}/{name}.py", crate::sandbox::mounts::SCRIPTS_GUEST)),
                args: ctx
                    .params
                    .get("args")
                    .cloned()
                    .unwrap_or_else(protocol::null),
                inputs,
                imports: Self::imports(ctx.params)?,
            };
            let report = ctx
                .registry
                .run_fresh(SCRATCH_MODULE, op, Some(ctx.within))
                .await
                .map_err(|e| e.to_string())?;
            step_result(report)
        })
    }
}

/// `native`: a trusted native module's function, `{module, function, args?}`, if the task
/// owner's policy allows it (the same rule as `scriptbox.native` in guest code). `args` is an
/// object (default `{}`); the step's inputs are added to it by name.
pub struct NativeStep;

impl Task for NativeStep {
    fn kind(&self) -> &'static str {
        "native"
    }

    fn validate(
        &self,
        params: &BTreeMap<String, Box<RawValue>>,
        inputs: &[&str],
    ) -> Result<(), String> {
        only(params, &["module", "function", "args"])?;
        let module = text(params, "module")?.ok_or("module is required")?;
        crate::native::manifest::check_name(&module).map_err(|e| e.to_string())?;
        let function = text(params, "function")?.ok_or("function is required")?;
        if !crate::native::manifest::check_function(&function) {
            return Err("function must be an identifier of at most 64 characters".into());
        }
        if !starts(params.get("args").map(|r| &**r), '{') {
            return Err("args must be an object".into());
        }
        if let Some(args) = params.get("args") {
            let args: BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(args.get()).map_err(|_| "args must be an object")?;
            if let Some(both) = inputs.iter().find(|name| args.contains_key(**name)) {
                return Err(format!("{both:?} is both an input and an argument"));
            }
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: StepContext<'a>) -> StepFuture<'a> {
        Box::pin(async move {
            let module = text(ctx.params, "module")?.unwrap_or_default();
            let function = text(ctx.params, "function")?.unwrap_or_default();
            let access = &ctx.registry.settings().native;
            access.check(&module, &function, "task's owner")?;
            let mut args: BTreeMap<String, Box<RawValue>> = match ctx.params.get("args") {
                Some(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string())?,
                None => BTreeMap::new(),
            };
            args.extend(ctx.inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
            let args = serde_json::to_string(&args).map_err(|e| e.to_string())?;
            let share = access.slot()?;
            access
                .modules
                .call(&module, &function, &args, Some(ctx.within), Some(share))
                .await
                .map_err(|e| e.to_string())
        })
    }
}
