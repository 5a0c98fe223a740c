//! `/python/enableDebug` and `/python/setBreakpoint`: tracing of a tool's calls inside its
//! sandbox. The original installed a logger with `sys.settrace` (enableDebug) and only
//! logged breakpoints. Here the driver traces each call of the tool and returns what it saw
//! with the call's answer, in `debug`: `lines` (`[function, line]` of the tool's own script,
//! at most 1,000), `breakpoints` (at each breakpoint line passed: the line, the function and
//! a JSON-safe snapshot of the locals; at most 20) and `truncated`. Execution never stops.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::answer::registry_error;
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorEnvelope};

/// `enableDebug`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DebugBody {
    /// Turns line tracing on or off.
    enable: bool,
    /// The tool; without it, every loaded tool of the tenant and those it loads later.
    #[serde(default)]
    alias: Option<String>,
}

/// What `enableDebug` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DebugData {
    enabled: bool,
    /// The tools whose tracing changed.
    tools: Vec<String>,
}

/// Turn line tracing of a tool's calls on or off.
///
/// `POST /python/enableDebug {enable, alias?}`: line tracing for the tool's calls; without
/// `alias`, for every loaded tool of the tenant and those it loads later. Each call's answer
/// (or error `details`) then carries `debug: {lines: [[function, line]...], truncated}`.
#[utoipa::path(
    post,
    path = "/enableDebug",
    request_body = DebugBody,
    responses(
        (status = 200, description = "Tracing is set", body = Envelope<DebugData>),
        BodyErrors,
        (status = 404, description = "`not_found`: no tool of the caller under that alias", body = ErrorEnvelope)
    )
)]
pub async fn enable(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<DebugBody>,
) -> Result<Success<DebugData>, ApiError> {
    let tools = tenant
        .registry
        .set_trace(body.alias.as_deref(), body.enable)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    Ok(Success(DebugData {
        enabled: body.enable,
        tools,
    }))
}

/// `setBreakpoint`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakpointBody {
    /// The tool's alias.
    alias: String,
    /// A line of the tool's script (from 1), or `null` to clear every breakpoint.
    #[serde(default, deserialize_with = "super::args::present")]
    #[schema(value_type = Option<u32>, required = true, minimum = 1)]
    line_number: Option<Box<RawValue>>,
}

/// What `setBreakpoint` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BreakpointData {
    alias: String,
    /// The tool's breakpoint lines.
    breakpoints: Vec<u32>,
    /// Whether line tracing is on for the tool.
    trace: bool,
}

/// Set (or clear) a snapshot point in a tool's script.
///
/// `POST /python/setBreakpoint {alias, line_number}`: a snapshot point, not a stop: when a
/// call passes that line, `debug.breakpoints` of its answer gets `{line, function, locals}`
/// (at most 20 hits per call). At most 64 per tool.
#[utoipa::path(
    post,
    path = "/setBreakpoint",
    request_body = BreakpointBody,
    responses(
        (status = 200, description = "The tool's breakpoints", body = Envelope<BreakpointData>),
        BodyErrors,
        (status = 404, description = "`not_found`: no tool of the caller under that alias", body = ErrorEnvelope)
    )
)]
pub async fn set_breakpoint(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<BreakpointBody>,
) -> Result<Success<BreakpointData>, ApiError> {
    let raw = body
        .line_number
        .ok_or_else(|| ApiError::missing_field("line_number"))?;
    let line = if raw.get().trim() == "null" {
        None
    } else {
        let line: u32 = serde_json::from_str(raw.get())
            .ok()
            .filter(|line| *line >= 1)
            .ok_or_else(|| {
                ApiError::bad_request("line_number must be a line of the script (from 1) or null")
            })?;
        Some(line)
    };
    let debug = tenant
        .registry
        .set_breakpoint(&body.alias, line)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    Ok(Success(BreakpointData {
        alias: body.alias,
        breakpoints: debug.breakpoints.into_iter().collect(),
        trace: debug.trace,
    }))
}
