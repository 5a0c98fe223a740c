//! The syntax check of an upload: every `.py` file is compiled with `compile()` inside a
//! fresh sandbox, never executed. The sources travel as the request's data (the `args` of a
//! constant piece of code), never as code, and the check runs under its own fuel, deadline
//! and memory, so a hostile file costs the server no more than any other call.

use serde::Deserialize;
use serde_json::json;

use super::{Files, ScriptError};
use crate::limits::Limits;
use crate::protocol::{Op, SCRATCH_MODULE};
use crate::sandbox::{Outcome, Sandbox, ToolMounts};

/// The check's budget: compiling a megabyte of Python takes a small part of it.
pub const CHECK_LIMITS: Limits = Limits {
    fuel: 20_000_000_000,
    deadline_ms: 20_000,
    memory_bytes: 512 << 20,
    output_bytes: 64 << 10,
};

/// Constant text: the files arrive in `args` as `[[path, source], ...]`.
const COMPILE_EACH: &str = "\
result = None
for _path, _source in args:
    try:
        compile(_source, _path, 'exec', dont_inherit=True)
    except SyntaxError as _e:
        result = {'file': _path, 'line': _e.lineno, 'column': _e.offset, 'message': str(_e.msg)}
        break
    except (ValueError, MemoryError, RecursionError) as _e:
        result = {'file': _path, 'line': None, 'column': None,
                  'message': type(_e).__name__ + ': ' + str(_e)[:200]}
        break
";

/// Where a syntax error is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct SyntaxProblem {
    /// The file, as the guest sees it under `/scripts`.
    pub file: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

/// Compiles every `.py` of `files` in a fresh instance; the first syntax error, if any.
pub async fn compile_all(
    sandbox: &Sandbox,
    mounts: &ToolMounts,
    files: &Files,
) -> Result<Option<SyntaxProblem>, ScriptError> {
    let sources: Vec<(String, &str)> = files
        .0
        .iter()
        .filter(|(path, _)| path.ends_with(".py"))
        .filter_map(|(path, bytes)| {
            let text = std::str::from_utf8(bytes).ok()?;
            Some((format!("/scripts/{path}"), text))
        })
        .collect();
    let args = serde_json::value::to_raw_value(&json!(sources))
        .map_err(|err| ScriptError::Check(format!("encoding the sources: {err}")))?;
    let mut instance = sandbox
        .spawn(SCRATCH_MODULE, &CHECK_LIMITS, mounts)
        .await
        .map_err(|err| ScriptError::Check(format!("starting the check: {err}")))?;
    let op = Op::Run {
        code: COMPILE_EACH.to_owned(),
        args,
    };
    match instance.run(&op).await {
        Outcome::Answered {
            result,
            error: None,
            ..
        } => match result {
            None => Ok(None),
            Some(result) => serde_json::from_str::<Option<SyntaxProblem>>(result.get())
                .map_err(|err| ScriptError::Check(format!("reading the check's answer: {err}"))),
        },
        Outcome::Answered { error, .. } => Err(ScriptError::Check(format!(
            "the check raised: {:?}",
            error.map(|e| e.message)
        ))),
        Outcome::Faulted { fault, .. } => Err(ScriptError::CheckLimit(fault.to_string())),
    }
}
