//! `/python/getVariable`, `setVariable`, `functions`, `eval`, `inject`: a tool's namespace,
//! read and changed inside its sandbox. Every request runs in the tool's instance under the
//! same limits and quotas as a call; names are checked here before the guest sees them.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::answer::{CallData, call_result, registry_error, run_op, run_op_streamed};
use super::args::{AliasBody, check_depth};
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, FunctionInfo, ToolErrors};
use crate::names::check_variable;
use crate::protocol::Op;

/// The longest expression or code snippet accepted.
pub const MAX_CODE_BYTES: usize = 256 << 10;

/// A module variable of a tool (`getVariable`, `setVariable`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableBody {
    /// The tool's alias.
    alias: String,
    /// A Python identifier that does not start with `__`.
    variable_name: String,
    /// `setVariable`: the value (any JSON, `null` included; required). `getVariable`
    /// refuses it.
    // `Some` whenever the field is present, `null` included.
    #[serde(default, deserialize_with = "super::args::present")]
    #[schema(value_type = Value)]
    value: Option<Box<RawValue>>,
}

/// An expression to evaluate in a tool.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalBody {
    /// The tool's alias.
    alias: String,
    /// A Python expression, at most 256 KiB.
    expression: String,
}

/// Statements to run in a tool, or in the tenant's session interpreter.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectBody {
    /// Python statements, at most 256 KiB.
    code_snippet: String,
    /// The tool to run them in; without it, the tenant's session interpreter.
    #[serde(default)]
    alias: Option<String>,
}

fn checked_variable(name: &str) -> Result<(), ApiError> {
    check_variable(name).map_err(|err| ApiError::bad_request(err.to_string()))
}

pub(super) fn checked_code(field: &str, text: &str) -> Result<(), ApiError> {
    if text.len() > MAX_CODE_BYTES {
        return Err(ApiError::bad_request(format!(
            "{field} is longer than {MAX_CODE_BYTES} bytes"
        )));
    }
    if text.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field} contains a NUL byte"
        )));
    }
    Ok(())
}

/// What `getVariable` and `setVariable` answer: the call's fields, with the names.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VariableData {
    alias: String,
    variable_name: String,
    #[serde(flatten)]
    call: CallData,
}

/// Read a module variable of a tool.
///
/// `POST /python/getVariable {alias, variable_name}`: the variable's value as `result`,
/// converted as a call's result.
#[utoipa::path(
    post,
    path = "/getVariable",
    request_body = VariableBody,
    responses(
        (status = 200, description = "The variable's value", body = Envelope<VariableData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn get_variable(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<VariableBody>,
) -> Result<Success<VariableData>, ApiError> {
    checked_variable(&body.variable_name)?;
    if body.value.is_some() {
        return Err(ApiError::bad_request("getVariable takes no value"));
    }
    let op = Op::GetVariable {
        name: body.variable_name.clone(),
    };
    let call = run_op(&tenant, &body.alias, &body.variable_name, op).await?;
    Ok(Success(VariableData {
        alias: body.alias,
        variable_name: body.variable_name,
        call,
    }))
}

/// Set a module variable of a tool.
///
/// `POST /python/setVariable {alias, variable_name, value}`: any JSON value, converted as
/// call arguments are. Answers as `getVariable`, with `result: null`.
#[utoipa::path(
    post,
    path = "/setVariable",
    request_body = VariableBody,
    responses(
        (status = 200, description = "The variable is set", body = Envelope<VariableData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn set_variable(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<VariableBody>,
) -> Result<Success<VariableData>, ApiError> {
    checked_variable(&body.variable_name)?;
    let Some(value) = body.value else {
        return Err(ApiError::missing_field("value"));
    };
    // Any JSON value is accepted; only its depth is bounded, as for call arguments.
    check_depth(&value, "value")?;
    let op = Op::SetVariable {
        name: body.variable_name.clone(),
        value,
    };
    let call = run_op(&tenant, &body.alias, &body.variable_name, op).await?;
    Ok(Success(VariableData {
        alias: body.alias,
        variable_name: body.variable_name,
        call,
    }))
}

/// What `functions` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FunctionsData {
    alias: String,
    /// The public functions the tool's script defines (not classes, not imported names).
    #[schema(value_type = Vec<FunctionInfo>)]
    functions: Box<RawValue>,
}

/// List the public functions of a tool.
///
/// `POST /python/functions {alias}`: each public function defined by the tool, with its
/// signature, parameters (name, kind, default, annotation) and docstring, from `inspect`.
#[utoipa::path(
    post,
    path = "/functions",
    request_body = AliasBody,
    responses(
        (status = 200, description = "The tool's functions", body = Envelope<FunctionsData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn functions(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<AliasBody>,
) -> Result<Success<FunctionsData>, ApiError> {
    let call = run_op(&tenant, &body.alias, "functions", Op::Functions).await?;
    Ok(Success(FunctionsData {
        alias: body.alias,
        functions: call.result,
    }))
}

/// Evaluate an expression in a tool.
///
/// `POST /python/eval {alias, expression}`: the expression's value, evaluated in the tool's
/// namespace; answered as a call (streamed with `Accept: text/event-stream`, as `call`).
#[utoipa::path(
    post,
    path = "/eval",
    request_body = EvalBody,
    responses(
        (status = 200, description = "The expression's value as `result`", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn eval(
    Extension(Caller(tenant)): Authed,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<EvalBody>,
) -> Result<axum::response::Response, ApiError> {
    checked_code("expression", &body.expression)?;
    let op = Op::Eval {
        expression: body.expression,
    };
    Ok(super::stream::respond(&headers, move |sink| async move {
        use axum::response::IntoResponse as _;
        run_op_streamed(&tenant, &body.alias, "the expression", op, sink)
            .await
            .map(Success)
            .into_response()
    })
    .await)
}

/// Run statements in a tool's namespace.
///
/// `POST /python/inject {code_snippet, alias?}`: statements executed in the tool's
/// namespace (their effects stay, as the tool's own state). Without `alias` (the original's
/// `__main__`), in the tenant's session interpreter: an empty namespace of its own that keeps
/// what is defined in it (shared with `/api/python/execute` in `session` mode). Answered as
/// a call with `result: null`.
#[utoipa::path(
    post,
    path = "/inject",
    request_body = InjectBody,
    responses(
        (status = 200, description = "The statements ran", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn inject(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<InjectBody>,
) -> Result<Success<CallData>, ApiError> {
    checked_code("code_snippet", &body.code_snippet)?;
    let op = Op::Exec {
        code: body.code_snippet,
    };
    let Some(alias) = body.alias else {
        let report = tenant
            .registry
            .run_session(op, None, None)
            .await
            .map_err(|err| registry_error(&tenant.id, err))?;
        return call_result(report, "(session)", "the code snippet");
    };
    run_op(&tenant, &alias, "the code snippet", op)
        .await
        .map(Success)
}
