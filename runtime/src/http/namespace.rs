//! `/python/getVariable`, `setVariable`, `functions`, `eval`, `inject`: a tool's namespace,
//! read and changed inside its sandbox. Every request runs in the tool's instance under the
//! same limits and quotas as a call; names are checked here before the guest sees them.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::Caller;
use super::body::JsonBody;
use super::envelope::Data as Success;
use super::error::ApiError;
use super::python::{
    AliasBody, Authed, CallData, call_result, check_depth, registry_error, run_op,
};
use crate::protocol::Op;
use crate::registry::check_variable;

/// The longest expression or code snippet accepted.
pub const MAX_CODE_BYTES: usize = 256 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableBody {
    alias: String,
    variable_name: String,
    /// `Some` whenever the field is present, `null` included.
    #[serde(default, deserialize_with = "super::python::present")]
    value: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalBody {
    alias: String,
    expression: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectBody {
    code_snippet: String,
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

#[derive(Serialize)]
pub struct VariableData {
    alias: String,
    variable_name: String,
    #[serde(flatten)]
    call: CallData,
}

/// `POST /python/getVariable {alias, variable_name}`: the variable's value as `result`.
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

/// `POST /python/setVariable {alias, variable_name, value}`: any JSON value, converted as
/// call arguments are.
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

#[derive(Serialize)]
pub struct FunctionsData {
    alias: String,
    functions: Box<RawValue>,
}

/// `POST /python/functions {alias}`: each public function defined by the tool, with its
/// signature, parameters (name, kind, default, annotation) and docstring, from `inspect`.
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

/// `POST /python/eval {alias, expression}`: the expression's value, evaluated in the tool's
/// namespace.
pub async fn eval(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<EvalBody>,
) -> Result<Success<CallData>, ApiError> {
    checked_code("expression", &body.expression)?;
    let op = Op::Eval {
        expression: body.expression,
    };
    run_op(&tenant, &body.alias, "the expression", op)
        .await
        .map(Success)
}

/// `POST /python/inject {code_snippet, alias?}`: statements executed in the tool's
/// namespace (their effects stay, as the tool's own state). Without `alias` (the original's
/// `__main__`), in the tenant's session interpreter: an empty namespace of its own that keeps
/// what is defined in it (shared with `/api/python/execute` in `session` mode).
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
            .run_session(op, None)
            .await
            .map_err(|err| registry_error(&tenant.id, err))?;
        return call_result(report, "(session)", "the code snippet");
    };
    run_op(&tenant, &alias, "the code snippet", op)
        .await
        .map(Success)
}
