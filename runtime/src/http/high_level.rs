//! The newer version's high-level routes: `POST /api/python/execute`, `executeFile`,
//! `executeFunction` and `GET /api/python/statistics`.
//!
//! The three execute routes answer in the original's shape, `{success, result, stdout,
//! stderr, error, executionTime, mode}` (plus `error_code`, `details` and `request_id`),
//! with the status codes of the rest of the API: 200, or 422 when the code failed (raised,
//! hit a limit). A request the server refuses (bad input, quotas) gets the usual error
//! envelope.

use std::time::Duration;

use axum::Extension;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::answer::{call_result, is_call_failure, registry_error};
use super::args::check_depth;
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope, current_request_id, json_response};
use super::error::ApiError;
use super::namespace::checked_code;
use super::openapi::{BodyErrors, CacheStatsSchema, ErrorCode, ErrorEnvelope};
use crate::names::{check_function, check_script};
use crate::protocol::{self, Op, SCRATCH_MODULE};
use crate::registry::{CallReport, RegistryError};
use crate::sandbox::mounts::SCRIPTS_GUEST;

/// How code runs: in a fresh sandbox dropped afterwards, or in the tenant's session
/// interpreter (shared with `inject` without an alias), which keeps its state.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Isolated,
    Session,
}

/// The original's answer: the execute routes' own shape, at the top level (no envelope).
#[derive(Serialize, utoipa::ToSchema)]
struct Executed {
    /// `true` when the code ran, `false` when it failed.
    success: bool,
    /// The value of a final expression statement, else the variable `result` (`null` on
    /// failure).
    #[schema(value_type = Value)]
    result: Box<RawValue>,
    stdout: String,
    stderr: String,
    /// The failure's message (`null` on success).
    error: Option<String>,
    /// The failure's error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorCode>)]
    error_code: Option<&'static str>,
    /// The failure's details, as in the error envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    details: Option<serde_json::Value>,
    /// Milliseconds the code ran (inside the sandbox, without queueing).
    #[serde(rename = "executionTime")]
    execution_time: f64,
    mode: Mode,
    request_id: String,
}

/// A `422` of the execute routes: the failed run in the original's shape, or, when the
/// sandbox could not start it, the error envelope.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "documentation only: describes what `executed` answers, never constructed"
)]
enum ExecuteFailure {
    Ran(Executed),
    Refused(ErrorEnvelope),
}

/// A finished execution as the original's answer; a refusal as an error envelope.
fn executed(answer: Result<CallReport, RegistryError>, tenant: &str, mode: Mode) -> Response {
    let report = match answer {
        Ok(report) => report,
        Err(err) => return registry_error(tenant, err).into_response(),
    };
    match call_result(report, "(code)", "the code") {
        Ok(Success(data)) => {
            let value = serde_json::to_value(&data).unwrap_or_default();
            let body = Executed {
                success: true,
                result: data.result,
                stdout: data.stdout,
                stderr: data.stderr,
                error: None,
                error_code: None,
                details: None,
                execution_time: value["elapsed_ms"].as_f64().unwrap_or(0.0),
                mode,
                request_id: current_request_id(),
            };
            json_response(StatusCode::OK, &body)
        }
        Err(err) if is_call_failure(&err) => {
            let text = |key: &str| err.details[key].as_str().unwrap_or_default().to_owned();
            let body = Executed {
                success: false,
                result: protocol::null(),
                stdout: text("stdout"),
                stderr: text("stderr"),
                error: Some(err.message.clone()),
                error_code: Some(err.code),
                execution_time: err.details["elapsed_ms"].as_f64().unwrap_or(0.0),
                details: Some(err.details.clone()),
                mode,
                request_id: current_request_id(),
            };
            json_response(err.status, &body)
        }
        Err(err) => err.into_response(),
    }
}

/// `execute`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// Python statements, at most 256 KiB.
    code: String,
    /// Bound as the variable `args` (any JSON; `null` when absent).
    #[serde(default)]
    #[schema(value_type = Value)]
    args: Option<Box<RawValue>>,
    /// `isolated` (default): a fresh sandbox dropped afterwards; `session`: the tenant's
    /// session interpreter, which keeps what is defined in it.
    #[serde(default)]
    mode: Mode,
    /// Seconds; lowers the deadline for this request (never past the tenant's limit).
    #[serde(default)]
    timeout: Option<f64>,
}

/// A client's `timeout` in seconds (above 0, at most a day), as a duration.
pub(super) fn timeout_seconds(timeout: Option<f64>) -> Result<Option<Duration>, ApiError> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => {
            Ok(Some(Duration::from_secs_f64(t)))
        }
        Some(_) => Err(ApiError::bad_request(
            "timeout must be a number of seconds above 0 (at most 86400)",
        )),
    }
}

/// Run code and answer in the original's shape.
///
/// `POST /api/python/execute {code, args?, mode?, timeout?}`: runs `code` with `args` bound;
/// `result` is the value of a final expression statement, else the variable `result`. The
/// answer is `{success, result, stdout, stderr, error, executionTime, mode, request_id}` at
/// the top level (no envelope); a refused request gets the usual error envelope. Streamed
/// with `Accept: text/event-stream`, as `/python/call`; a client that disconnects stops it.
#[utoipa::path(
    post,
    path = "/execute",
    request_body = ExecuteBody,
    responses(
        (status = 200, description = "The code ran (`success: true`)", body = Executed),
        BodyErrors,
        (status = 422, description = "The code failed (`success: false`, with `error`, `error_code` and `details`; `python_exception`, a limit, ...); or the sandbox could not start it (the error envelope: `load_failed`, `fuel_exhausted`, ...)", body = ExecuteFailure),
        (status = 503, description = "`overloaded` or `busy`", body = ErrorEnvelope)
    )
)]
pub async fn execute(
    Extension(Caller(tenant)): Authed,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<ExecuteBody>,
) -> Result<Response, ApiError> {
    checked_code("code", &body.code)?;
    let args = body.args.unwrap_or_else(protocol::null);
    check_depth(&args, "args")?;
    let within = timeout_seconds(body.timeout)?;
    let op = Op::Run {
        code: body.code,
        args,
    };
    let mode = body.mode;
    Ok(super::stream::respond(&headers, move |sink| async move {
        let answer = match mode {
            Mode::Isolated => {
                tenant
                    .registry
                    .run_fresh_watched(SCRATCH_MODULE, op, within, sink)
                    .await
            }
            Mode::Session => tenant.registry.run_session(op, within, sink).await,
        };
        executed(answer, &tenant.id, mode)
    })
    .await)
}

/// `executeFile`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    /// `name.py` or `dir/name.py` inside the tenant's scripts folder (no `..`, no leading
    /// `/` or `.`).
    path: String,
    /// Command-line arguments: strings (numbers and booleans are accepted and passed as
    /// their JSON text).
    #[serde(default)]
    args: Vec<serde_json::Value>,
}

/// Most command-line arguments for `executeFile`.
pub const MAX_ARGV: usize = 256;

/// A script path relative to the tenant's scripts folder: `name.py` or `dir/name.py`,
/// segments of `[A-Za-z0-9_.-]` not starting with `.`, at most 256 bytes.
fn checked_path(path: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "path must be a .py file inside the scripts folder, as dir/name.py (letters, \
             digits, '_', '-', '.'; no leading '.' or '/', no '..')",
        )
    };
    let ok = path.len() <= 256
        && path.ends_with(".py")
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('.')
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        });
    if ok { Ok(path.to_owned()) } else { Err(bad()) }
}

fn argv(args: Vec<serde_json::Value>) -> Result<Vec<String>, ApiError> {
    if args.len() > MAX_ARGV {
        return Err(ApiError::bad_request(format!(
            "args may hold at most {MAX_ARGV} arguments"
        )));
    }
    args.into_iter()
        .map(|arg| match arg {
            serde_json::Value::String(text) => Ok(text),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => Ok(arg.to_string()),
            _ => Err(ApiError::bad_request(
                "args must be strings, numbers or booleans (command-line arguments)",
            )),
        })
        .collect()
}

/// Run a script file of the tenant as `__main__`.
///
/// `POST /api/python/executeFile {path, args?}`: runs a script of the tenant's scripts
/// folder as `__main__` in a fresh sandbox, with `sys.argv = [path, *args]`; `result` is the
/// script's variable `result`. Answers as `execute`.
#[utoipa::path(
    post,
    path = "/executeFile",
    request_body = FileBody,
    responses(
        (status = 200, description = "The code ran (`success: true`)", body = Executed),
        BodyErrors,
        (status = 404, description = "`not_found`: no such file in the scripts folder", body = ErrorEnvelope),
        (status = 422, description = "The code failed (`success: false`, with `error`, `error_code` and `details`; `python_exception`, a limit, ...); or the sandbox could not start it (the error envelope: `load_failed`, `fuel_exhausted`, ...)", body = ExecuteFailure),
        (status = 503, description = "`overloaded` or `busy`", body = ErrorEnvelope)
    )
)]
pub async fn execute_file(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<FileBody>,
) -> Result<Response, ApiError> {
    let path = checked_path(&body.path)?;
    let argv = argv(body.args)?;
    if !tenant
        .registry
        .settings()
        .shared_scripts
        .join(&path)
        .is_file()
    {
        return Err(ApiError::not_found("no such file in the scripts folder"));
    }
    let op = Op::RunFile {
        path: format!("{SCRIPTS_GUEST}/{path}"),
        argv,
    };
    let answer = tenant.registry.run_fresh(SCRATCH_MODULE, op, None).await;
    Ok(executed(answer, &tenant.id, Mode::Isolated))
}

/// `executeFunction`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionBody {
    /// A script name of the tenant's scripts folder.
    module: String,
    /// A public function of it.
    function: String,
    /// An array (positional arguments) or an object (keyword arguments).
    #[serde(default)]
    #[schema(value_type = Value)]
    args: Option<Box<RawValue>>,
}

/// Import a script in a fresh sandbox and call one of its functions.
///
/// `POST /api/python/executeFunction {module, function, args?}`: imports the script
/// `module` in a fresh sandbox and calls `function` with `args`. Answers as `execute`.
#[utoipa::path(
    post,
    path = "/executeFunction",
    request_body = FunctionBody,
    responses(
        (status = 200, description = "The code ran (`success: true`)", body = Executed),
        BodyErrors,
        (status = 404, description = "`not_found`: no script of that name, or no such public function", body = ErrorEnvelope),
        (status = 422, description = "The code failed (`success: false`, with `error`, `error_code` and `details`; `python_exception`, a limit, ...); or the sandbox could not start it (the error envelope: `load_failed`, `fuel_exhausted`, ...)", body = ExecuteFailure),
        (status = 503, description = "`overloaded` or `busy`", body = ErrorEnvelope)
    )
)]
pub async fn execute_function(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<FunctionBody>,
) -> Result<Response, ApiError> {
    check_script(&body.module).map_err(|err| ApiError::bad_request(err.to_string()))?;
    check_function(&body.function).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let args = body.args.unwrap_or_else(protocol::empty_array);
    check_depth(&args, "args")?;
    let text = args.get().trim_start();
    let (args, kwargs) = if text.starts_with('[') {
        (args, protocol::empty_object())
    } else if text.starts_with('{') {
        (protocol::empty_array(), args)
    } else if text == "null" {
        (protocol::empty_array(), protocol::empty_object())
    } else {
        return Err(ApiError::bad_request(
            "args must be an array (positional) or an object (keyword arguments)",
        ));
    };
    let op = Op::Call {
        function: body.function,
        args,
        kwargs,
    };
    let answer = tenant.registry.run_fresh(&body.module, op, None).await;
    Ok(executed(answer, &tenant.id, Mode::Isolated))
}

/// What `statistics` answers: the caller's usage.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Statistics {
    /// Loaded tools.
    tools: usize,
    /// Calls (of any kind) made to loaded tools, and instance replacements, since each load.
    calls: u64,
    resets: u64,
    calls_in_flight: usize,
    /// Fresh sandboxes run (execute, executeFile, executeFunction, executeWith*).
    fresh_runs: u64,
    jobs_running: usize,
    globals: usize,
    registered_functions: usize,
    venvs: Vec<String>,
    active_venv: Option<String>,
    #[schema(value_type = CacheStatsSchema)]
    cache: crate::registry::CacheStats,
    /// Seconds since the server started.
    uptime_s: u64,
}

/// When the API was built (the server's start, for `uptime_s`).
pub static STARTED: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// The caller's usage.
///
/// `GET /api/python/statistics`: tools, calls, resets, calls in flight, fresh runs, jobs,
/// globals, registered functions, package environments, the result cache and the uptime.
#[utoipa::path(
    get,
    path = "/statistics",
    responses((status = 200, description = "The caller's usage", body = Envelope<Statistics>))
)]
pub async fn statistics(Extension(Caller(tenant)): Authed) -> Success<Statistics> {
    let registry = &tenant.registry;
    let tools = registry.list();
    let (venvs, active_venv) = registry.venvs();
    Success(Statistics {
        calls: tools.iter().map(|t| t.calls).sum(),
        resets: tools.iter().map(|t| t.resets).sum(),
        tools: tools.len(),
        calls_in_flight: registry.calls_in_flight(),
        fresh_runs: registry.fresh_runs(),
        jobs_running: tenant.jobs.running(),
        globals: registry.globals.names().len(),
        registered_functions: registry.functions.list().len(),
        venvs,
        active_venv,
        cache: registry.cache.stats(),
        uptime_s: STARTED.elapsed().as_secs(),
    })
}
