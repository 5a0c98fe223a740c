//! How a call's outcome becomes an answer: the success data, the error for a guest error,
//! a fault or a registry refusal (one mapping for every call route), and the tenant's error
//! strategy on top.

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::audit;
use super::envelope::Data as Success;
use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::protocol::{self, GuestError, GuestErrorKind};
use crate::registry::{CallReport, RegistryError};
use crate::sandbox::{Fault, Outcome};
use crate::tenants::ErrorStrategy;

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
    /// The call's outbound HTTP through `scriptbox.http` (absent when it made none):
    /// `{requests, bytes_sent, bytes_received}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    egress: Option<crate::egress::Usage>,
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
            egress: serde_json::from_value(d["egress"].clone()).ok(),
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

/// Runs `op` in the caller's tool `alias` and maps the outcome like a call's (`what` names
/// it in messages).
///
/// A client that goes away stops the guest (the registry's watched run).
pub(super) async fn run_op(
    tenant: &crate::tenants::Tenant,
    alias: &str,
    what: &str,
    op: crate::protocol::Op,
) -> Result<CallData, ApiError> {
    run_op_streamed(tenant, alias, what, op, None).await
}

/// As [`run_op`], the op's `print()` output sent to `stream` as it is written.
pub(super) async fn run_op_streamed(
    tenant: &crate::tenants::Tenant,
    alias: &str,
    what: &str,
    op: crate::protocol::Op,
    stream: Option<crate::sandbox::OutputSink>,
) -> Result<CallData, ApiError> {
    let report = tenant
        .registry
        .run_watched(alias, op, stream)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    call_result(report, alias, what).map(|Success(data)| data)
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

fn millis(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1e6).round() / 1e3
}

pub(super) fn call_result(
    report: CallReport,
    alias: &str,
    function: &str,
) -> Result<Success<CallData>, ApiError> {
    let state_reset = report.state_reset;
    let egress = (report.egress.requests > 0).then_some(report.egress);
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
            egress,
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
            if let Some(egress) = egress {
                details["egress"] = json!(egress);
            }
            Err(guest_error(error, alias, function, details))
        }
        Outcome::Faulted { fault, elapsed } => {
            let mut details = json!({
                "elapsed_ms": millis(elapsed),
                "state_reset": state_reset,
            });
            if let Some(egress) = egress {
                details["egress"] = json!(egress);
            }
            Err(fault_error(&fault).with_details(details))
        }
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
            ApiError::not_found("no script of that name (the tenant's or the shared ones)")
        }
        RegistryError::UnknownVersion => ApiError::not_found("the script has no such version"),
        RegistryError::BadScript(why) => ApiError::bad_request(why),
        RegistryError::ScriptInUse(tools) => ApiError::new(
            StatusCode::CONFLICT,
            "script_in_use",
            "loaded tools run this script; unload them, or delete with force=true",
        )
        .with_details(json!({ "tools": tools })),
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
