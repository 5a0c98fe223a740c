//! `/python/*`: load, unload, reload, list, call. Each handler reads the request, calls one
//! registry method and maps the result. Status codes are documented in the README.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::audit;
use super::auth::Caller;
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{
    BodyErrors, ErrorBody, ErrorEnvelope, LimitOverridesSchema, LoadErrors, ToolErrors,
    ToolInfoSchema,
};
use crate::protocol::{self, GuestError, GuestErrorKind};
use crate::registry::{CallReport, RegistryError, ToolInfo};
use crate::sandbox::{Fault, LimitOverrides, Outcome};
use crate::tenants::ErrorStrategy;

pub type Authed = Extension<Caller>;

/// `load`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBody {
    /// A Python module name in the tenant's scripts folder: an identifier (`my_tool` is
    /// `my_tool.py` or `my_tool/__init__.py`), no paths or dots.
    script_name: String,
    /// The name to call the tool by: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`.
    alias: String,
    /// Limits to lower for this tool; absent ones get the tenant's defaults.
    #[serde(default)]
    #[schema(value_type = Option<LimitOverridesSchema>)]
    limits: Option<LimitOverrides>,
    /// `persistent` (the default): one instance serves every call and keeps state.
    /// `isolated`: every call runs in an instance no earlier call touched (from a pre-warmed
    /// pool), and nothing survives it.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "isolated")]
    mode: Option<crate::registry::Mode>,
}

/// A body naming one of the caller's tools.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// The tool's alias.
    pub(super) alias: String,
}

/// A call: a function of a tool and its arguments.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    /// The tool's alias.
    pub(super) alias: String,
    /// A public function of the tool's script (an identifier not starting with `_`).
    pub(super) function_name: String,
    /// Positional arguments (a JSON array, converted by the conversion table; nested at
    /// most 64 levels).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    pub(super) args: Option<Box<RawValue>>,
    /// Keyword arguments (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(super) kwargs: Option<Box<RawValue>>,
}

/// Load a script as a tool under an alias.
///
/// Starts a sandboxed instance of the tenant's script under the tenant's limits (lowered by
/// `limits`). The import runs under the start budget.
#[utoipa::path(
    post,
    path = "/load",
    request_body = LoadBody,
    responses(
        (status = 200, description = "The tool is loaded", body = Envelope<ToolInfoSchema>),
        BodyErrors,
        LoadErrors
    )
)]

pub async fn load(
    Extension(Caller(tenant)): Authed,
    Extension(packages): Extension<std::sync::Arc<crate::packages::Packages>>,
    JsonBody(body): JsonBody<LoadBody>,
) -> Result<Success<ToolInfo>, ApiError> {
    let overrides = body.limits.unwrap_or_default();
    let info = tenant
        .registry
        .load(
            &body.script_name,
            &body.alias,
            &overrides,
            body.mode.unwrap_or_default(),
        )
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    if let Err(err) = super::packages::check_requirements(&tenant, &packages, &info.alias).await {
        // A tool that cannot run is not kept loaded.
        let _ = tenant.registry.unload(&info.alias);
        return Err(err);
    }
    audit::tool_event(&tenant.id, "tool_loaded", &info.alias);
    Ok(Success(info))
}

/// What `unload` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Unloaded {
    alias: String,
    /// Always `true`.
    unloaded: bool,
}

/// Unload a tool.
///
/// The instance is dropped at once; a call running or queued for the tool is answered
/// `tool_unloaded`.
#[utoipa::path(
    post,
    path = "/unload",
    request_body = AliasBody,
    responses(
        (status = 200, description = "The tool is unloaded", body = Envelope<Unloaded>),
        BodyErrors,
        (status = 404, description = "`not_found`: no tool of the caller under that alias", body = ErrorEnvelope)
    )
)]
pub async fn unload(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<AliasBody>,
) -> Result<Success<Unloaded>, ApiError> {
    tenant
        .registry
        .unload(&body.alias)
        .map_err(|err| registry_error(&tenant.id, err))?;
    audit::tool_event(&tenant.id, "tool_unloaded", &body.alias);
    Ok(Success(Unloaded {
        alias: body.alias,
        unloaded: true,
    }))
}

/// Reload a tool.
///
/// Re-imports the script in a fresh instance, so module state starts over. If the new
/// import fails, the old instance stays.
#[utoipa::path(
    post,
    path = "/reload",
    request_body = AliasBody,
    responses(
        (status = 200, description = "The tool is reloaded", body = Envelope<ToolInfoSchema>),
        BodyErrors,
        LoadErrors
    )
)]
pub async fn reload(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<AliasBody>,
) -> Result<Success<ToolInfo>, ApiError> {
    let info = tenant
        .registry
        .reload(&body.alias)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    audit::tool_event(&tenant.id, "tool_reloaded", &body.alias);
    Ok(Success(info))
}

/// What `list` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListData {
    /// Aliases, as the original API returned them.
    scripts: Vec<String>,
    #[schema(value_type = Vec<ToolInfoSchema>)]
    tools: Vec<ToolInfo>,
}

/// List the caller's tools.
#[utoipa::path(
    get,
    path = "/list",
    responses((status = 200, description = "The caller's tools", body = Envelope<ListData>))
)]
pub async fn list(Extension(Caller(tenant)): Authed) -> Success<ListData> {
    let tools = tenant.registry.list();
    Success(ListData {
        scripts: tools.iter().map(|t| t.alias.clone()).collect(),
        tools,
    })
}

/// A call's answer (also what `eval`, `inject`, the object routes and the fresh-sandbox
/// routes answer).
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallData {
    /// The return value, converted by the conversion table.
    #[schema(value_type = Value)]
    pub(super) result: Box<RawValue>,
    /// What the call printed.
    pub(super) stdout: String,
    pub(super) stderr: String,
    /// Fuel the call used (0 for a cached answer).
    fuel_used: u64,
    /// Time the call ran in the sandbox, in milliseconds.
    elapsed_ms: f64,
    /// Whether the tool's instance was replaced (its module state started over).
    state_reset: bool,
    /// Set when the `return_default` strategy turned an error into a `null` result.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorBody>)]
    warning: Option<serde_json::Value>,
    /// What tracing recorded (enableDebug, setBreakpoint), when it is on for the tool:
    /// `{lines: [[function, line]...], breakpoints: [{line, function, locals}...], truncated}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    debug: Option<Box<RawValue>>,
    /// The answer came from the result cache (configurePerformance); the tool did not run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
}

impl CallData {
    /// The `return_default` answer for a failed call: `null`, the error as a warning, and
    /// what the error's details say of output, fuel and time.
    pub(super) fn defaulted(err: &ApiError) -> Self {
        let d = &err.details;
        let text = |key: &str| d[key].as_str().unwrap_or_default().to_owned();
        Self {
            result: protocol::null(),
            stdout: text("stdout"),
            stderr: text("stderr"),
            fuel_used: d["fuel_used"].as_u64().unwrap_or(0),
            elapsed_ms: d["elapsed_ms"].as_f64().unwrap_or(0.0),
            state_reset: d["state_reset"].as_bool().unwrap_or(false),
            warning: Some(err.public_json()),
            debug: None,
            cached: false,
        }
    }
}

/// Whether an error is the call's own failure (its code, its limits), which an error
/// strategy may soften, rather than a refusal of the request (bad input, quotas).
pub(super) fn is_call_failure(err: &ApiError) -> bool {
    err.status == StatusCode::UNPROCESSABLE_ENTITY
}

/// Applies the tenant's error strategy for `alias` to a call's answer.
pub(super) fn with_strategy(
    strategy: ErrorStrategy,
    answer: Result<Success<CallData>, ApiError>,
) -> Result<Success<CallData>, ApiError> {
    match (strategy, answer) {
        (ErrorStrategy::ReturnDefault, Err(err)) if is_call_failure(&err) => {
            Ok(Success(CallData::defaulted(&err)))
        }
        (ErrorStrategy::LogAndContinue, Err(err)) => {
            tracing::info!(code = err.code, message = %err.message, "call failed (log_and_continue)");
            Err(err)
        }
        (_, answer) => answer,
    }
}

/// For optional body fields that must tell `null` from absent: `Some` whenever present.
pub(super) fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Runs `op` in the caller's tool `alias` and maps the outcome like a call's (`what` names
/// it in messages).
pub(super) async fn run_op(
    tenant: &crate::tenants::Tenant,
    alias: &str,
    what: &str,
    op: crate::protocol::Op,
) -> Result<CallData, ApiError> {
    let report = tenant
        .registry
        .run(alias, op)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    call_result(report, alias, what).map(|Success(data)| data)
}

/// A call body's parts, checked: alias, function name, args (an array) and kwargs (an
/// object), each argument nested at most [`MAX_ARG_DEPTH`] deep.
pub(super) fn checked_call(
    body: CallBody,
) -> Result<(String, String, Box<RawValue>, Box<RawValue>), ApiError> {
    crate::registry::check_function(&body.function_name)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let args = json_kind(body.args, '[', "args", "array")?.unwrap_or_else(protocol::empty_array);
    let kwargs =
        json_kind(body.kwargs, '{', "kwargs", "object")?.unwrap_or_else(protocol::empty_object);
    Ok((body.alias, body.function_name, args, kwargs))
}

/// Call a function of a tool.
///
/// Arguments go in `args` and `kwargs`; the result comes back converted by the conversion
/// table. The tool's error strategy applies to the call's own failures.
#[utoipa::path(
    post,
    path = "/call",
    request_body = CallBody,
    responses(
        (status = 200, description = "The function returned", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn call(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<CallBody>,
) -> Result<Success<CallData>, ApiError> {
    let (alias, function, args, kwargs) = checked_call(body)?;
    let report = tenant
        .registry
        .call(&alias, &function, args, kwargs)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    let answer = call_result(report, &alias, &function);
    audit_limits(&tenant.id, &answer);
    with_strategy(tenant.strategies.for_alias(&alias), answer)
}

/// Audits a call that hit one of its limits.
pub(super) fn audit_limits<T>(tenant: &str, answer: &Result<T, ApiError>) {
    if let Err(err) = answer
        && LIMIT_CODES.contains(&err.code)
    {
        audit::limit_hit(tenant, err.code);
    }
}

/// Error codes that mean a call hit one of its limits.
const LIMIT_CODES: [&str; 4] = [
    "fuel_exhausted",
    "deadline_exceeded",
    "output_limit",
    "guest_crashed",
];

/// The deepest nesting of arrays and objects accepted in `args`/`kwargs`.
pub const MAX_ARG_DEPTH: usize = 64;

/// The nesting depth of raw JSON text: brackets outside strings, one pass.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks that a raw JSON value is nested at most [`MAX_ARG_DEPTH`] deep.
pub(super) fn check_depth(raw: &RawValue, name: &str) -> Result<(), ApiError> {
    if nesting_depth(raw.get()) > MAX_ARG_DEPTH {
        return Err(ApiError::bad_request(format!(
            "{name} is nested deeper than {MAX_ARG_DEPTH} levels"
        )));
    }
    Ok(())
}

/// Checks that a raw JSON value is an array (or object) nested at most [`MAX_ARG_DEPTH`]
/// deep, without parsing it into a tree.
pub(super) fn json_kind(
    value: Option<Box<RawValue>>,
    open: char,
    name: &str,
    kind: &str,
) -> Result<Option<Box<RawValue>>, ApiError> {
    if let Some(raw) = &value {
        check_depth(raw, name)?;
    }
    match value {
        Some(raw) if raw.get().trim_start().starts_with(open) => Ok(Some(raw)),
        Some(raw) if raw.get().trim() == "null" => Ok(None),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be a JSON {kind}"
        ))),
        None => Ok(None),
    }
}

fn millis(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

pub(super) fn call_result(
    report: CallReport,
    alias: &str,
    function: &str,
) -> Result<Success<CallData>, ApiError> {
    let state_reset = report.state_reset;
    match report.outcome {
        Outcome::Answered {
            result,
            error: None,
            stdout,
            stderr,
            fuel_used,
            elapsed,
            debug,
            ..
        } => Ok(Success(CallData {
            result: result.unwrap_or_else(protocol::null),
            stdout,
            stderr,
            fuel_used,
            elapsed_ms: millis(elapsed),
            state_reset,
            warning: None,
            debug,
            cached: report.cached,
        })),
        Outcome::Answered {
            error: Some(error),
            stdout,
            stderr,
            fuel_used,
            elapsed,
            debug,
            ..
        } => {
            let mut details = json!({
                "stdout": stdout,
                "stderr": stderr,
                "fuel_used": fuel_used,
                "elapsed_ms": millis(elapsed),
                "state_reset": state_reset,
            });
            if let Some(debug) = debug
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(debug.get())
            {
                details["debug"] = value;
            }
            Err(guest_error(error, alias, function, details))
        }
        Outcome::Faulted { fault, elapsed } => Err(fault_error(&fault).with_details(json!({
            "elapsed_ms": millis(elapsed),
            "state_reset": state_reset,
        }))),
    }
}

/// Guest text bound for the log: at most 256 bytes.
fn clip(text: &str) -> String {
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Errors the driver reported; the instance is still alive. `details` (output, fuel, time)
/// gain the exception's type, message and traceback: the tenant's own code's, returned to
/// the tenant that called it.
fn guest_error(
    error: GuestError,
    alias: &str,
    function: &str,
    mut details: serde_json::Value,
) -> ApiError {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let api = match error.kind {
        GuestErrorKind::PythonException => {
            if let Some(map) = details.as_object_mut() {
                map.insert("type".into(), json!(error.exc_type));
                map.insert("message".into(), json!(error.message));
                map.insert("traceback".into(), json!(error.traceback));
            }
            ApiError::new(
                unprocessable,
                "python_exception",
                format!(
                    "{function} raised {}",
                    error.exc_type.as_deref().unwrap_or("an exception")
                ),
            )
        }
        GuestErrorKind::UnserializableResult => {
            ApiError::new(unprocessable, "unserializable_result", error.message)
        }
        GuestErrorKind::OutputLimit => ApiError::new(
            unprocessable,
            "output_limit",
            "the call's print() output passed its cap (limits.output_bytes)",
        ),
        GuestErrorKind::NotFound => ApiError::not_found(format!(
            "tool '{alias}' has no public function '{function}'"
        )),
        GuestErrorKind::BadRequest => {
            // The driver's reason (a bad tagged argument, a bad name): the tenant's own data.
            ApiError::bad_request(format!(
                "the tool's interpreter could not read the request: {}",
                clip(&error.message)
            ))
            .with_cause(clip(&error.message))
        }
        // A call answered as if the tool never loaded: the driver was tampered with.
        GuestErrorKind::LoadFailed => ApiError::new(
            unprocessable,
            "guest_crashed",
            "the tool's interpreter answered out of protocol",
        )
        .with_cause(clip(&error.message)),
    };
    api.with_details(details)
}

/// The instance stopped during the call; it has been replaced.
fn fault_error(fault: &Fault) -> ApiError {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let (code, message) = match fault {
        Fault::FuelExhausted => (
            "fuel_exhausted",
            "the call used up its fuel budget (limits.fuel); the tool's state was reset",
        ),
        Fault::DeadlineExceeded => (
            "deadline_exceeded",
            "the call passed its deadline (limits.deadline_ms); the tool's state was reset",
        ),
        Fault::OutputLimit => (
            "output_limit",
            "the call's response passed its cap (limits.output_bytes); the tool's state was reset",
        ),
        Fault::Exited(_) => (
            "guest_exited",
            "the tool's interpreter exited; the tool's state was reset",
        ),
        Fault::Trapped(_) | Fault::Protocol(_) => (
            "guest_crashed",
            "the tool's interpreter stopped abnormally; the tool's state was reset",
        ),
        Fault::Cancelled => (
            "cancelled",
            "the call was cancelled and its instance stopped; the tool's state was reset",
        ),
    };
    ApiError::new(unprocessable, code, message).with_cause(clip(&fault.to_string()))
}

/// Maps registry failures to client errors, auditing quota refusals.
pub fn registry_error(tenant: &str, err: RegistryError) -> ApiError {
    let api = client_error(err);
    if matches!(
        api.code,
        "too_many_tools" | "too_many_calls" | "overloaded" | "busy"
    ) {
        audit::limit_hit(tenant, api.code);
    }
    api
}

fn client_error(err: RegistryError) -> ApiError {
    match err {
        RegistryError::NotFound => ApiError::not_found("no tool is loaded under that alias"),
        RegistryError::ScriptNotFound => {
            ApiError::not_found("no script of that name in the scripts directory")
        }
        RegistryError::AliasExists => ApiError::new(
            StatusCode::CONFLICT,
            "alias_exists",
            "a tool is already loaded under that alias; unload or reload it",
        ),
        RegistryError::BadName(err) => ApiError::bad_request(err.to_string()),
        RegistryError::Limits(err) => ApiError::bad_request(err.to_string()),
        RegistryError::TooManyTools(max) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_tools",
            format!("this key already has its maximum of {max} tools loaded"),
        ),
        RegistryError::TooManyCalls(max) => {
            let mut api = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_calls",
                format!("this key already has its maximum of {max} calls in flight"),
            );
            api.retry_after_s = Some(1);
            api
        }
        RegistryError::Overloaded => {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the server is at capacity; retry shortly",
            );
            api.retry_after_s = Some(1);
            api
        }
        RegistryError::Busy => ApiError::busy(),
        RegistryError::TooManyVenvs(max) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_venvs",
            format!("this key already has its maximum of {max} package environments"),
        ),
        RegistryError::TooManyBreakpoints(max) => {
            ApiError::bad_request(format!("a tool may have at most {max} breakpoints"))
        }
        RegistryError::VenvNotFound => {
            ApiError::not_found("no package environment of that name; create it first")
        }
        RegistryError::Unloaded => ApiError::new(
            StatusCode::CONFLICT,
            "tool_unloaded",
            "the tool was unloaded before the call ran",
        ),
        RegistryError::ObjectLost(name) => ApiError::new(
            StatusCode::GONE,
            "object_lost",
            format!(
                "object '{name}' was lost when the tool's instance was replaced (after a fault, \
                 a memory cap or a reload); create it again"
            ),
        ),
        RegistryError::LoadFailed(error) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "load_failed",
            "the tool script raised while being imported",
        )
        .with_details(json!({
            "type": error.exc_type,
            "message": error.message,
            "traceback": error.traceback,
        })),
        RegistryError::StartFaulted(fault) => {
            let mut api = fault_error(&fault);
            api.message = format!("the tool could not start: {}", start_reason(&fault));
            api
        }
        RegistryError::Host(err) => ApiError::internal(format!("{err:#}")),
    }
}

fn start_reason(fault: &Fault) -> &'static str {
    match fault {
        Fault::FuelExhausted => "importing it used up the start fuel budget",
        Fault::DeadlineExceeded => "importing it passed the start deadline",
        Fault::OutputLimit => "its first response passed the output cap",
        Fault::Exited(_) => "the interpreter exited while importing it",
        Fault::Trapped(_) | Fault::Protocol(_) | Fault::Cancelled => {
            "the interpreter stopped abnormally"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_kinds() {
        let raw = |s: &str| Some(RawValue::from_string(s.to_owned()).expect("json"));
        assert!(json_kind(raw("[1]"), '[', "args", "array").is_ok());
        assert!(
            json_kind(raw("null"), '[', "args", "array")
                .expect("ok")
                .is_none()
        );
        assert!(json_kind(raw("{}"), '[', "args", "array").is_err());
        assert!(json_kind(raw("\"x\""), '{', "kwargs", "object").is_err());
        assert_eq!(nesting_depth(r#"[1, {"a": "[[[[", "b": [2]}]"#), 3);
        assert_eq!(nesting_depth(r#"["\\", "\"[" ]"#), 1);
    }
}
