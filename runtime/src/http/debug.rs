//! `/python/enableDebug` and `/python/setBreakpoint`: tracing of a tool's calls inside its
//! sandbox. The original installed a logger with `sys.settrace` (enableDebug) and only
//! logged breakpoints. Here the driver traces each call of the tool and returns what it saw
//! with the call's answer, in `debug`: `lines` (`[function, line]` of the tool's own script,
//! at most 1,000), `breakpoints` (at each breakpoint line passed: the line, the function and
//! a JSON-safe snapshot of the locals; at most 20) and `truncated`. Execution never stops.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::Caller;
use super::body::JsonBody;
use super::envelope::Data as Success;
use super::error::ApiError;
use super::python::{Authed, registry_error};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugBody {
    enable: bool,
    #[serde(default)]
    alias: Option<String>,
}

#[derive(Serialize)]
pub struct DebugData {
    enabled: bool,
    /// The tools whose tracing changed.
    tools: Vec<String>,
}

/// `POST /python/enableDebug {enable, alias?}`: line tracing for the tool's calls; without
/// `alias`, for every loaded tool of the tenant and those it loads later.
pub async fn enable(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<DebugBody>,
) -> Result<Success<DebugData>, ApiError> {
    let tools = tenant
        .registry
        .set_trace(body.alias.as_deref(), body.enable)
        .map_err(|err| registry_error(&tenant.id, err))?;
    Ok(Success(DebugData {
        enabled: body.enable,
        tools,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakpointBody {
    alias: String,
    /// A line of the tool's script (from 1), or `null` to clear every breakpoint.
    #[serde(default, deserialize_with = "super::python::present")]
    line_number: Option<Box<RawValue>>,
}

#[derive(Serialize)]
pub struct BreakpointData {
    alias: String,
    breakpoints: Vec<u32>,
    trace: bool,
}

/// `POST /python/setBreakpoint {alias, line_number}`: a snapshot point in the tool's script.
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
        .map_err(|err| registry_error(&tenant.id, err))?;
    Ok(Success(BreakpointData {
        alias: body.alias,
        breakpoints: debug.breakpoints.into_iter().collect(),
        trace: debug.trace,
    }))
}
