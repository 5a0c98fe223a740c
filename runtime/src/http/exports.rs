//! `/python/exports/discover`, `GET /python/exports/all`, `/python/exports/invoke`: the
//! guide's discovery convention. A tool's `get_tool_info()` (run in its sandbox, under the
//! call limits) is merged with the signatures of the functions it lists; `invoke` calls one
//! of those with keyword arguments of any JSON type.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::Caller;
use super::body::JsonBody;
use super::envelope::Data as Success;
use super::error::ApiError;
use super::python::{
    AliasBody, Authed, CallBody, CallData, call_result, checked_call, registry_error,
};
use crate::protocol::Op;
use crate::tenants::Tenant;

#[derive(Serialize)]
pub struct Discovered {
    alias: String,
    /// `tool_info` and `functions`, as the tool described itself.
    #[serde(flatten)]
    exports: Exports,
}

/// What a tool's discovery returns. (Parsed, not raw: it is flattened into the answer.)
type Exports = serde_json::Map<String, serde_json::Value>;

#[derive(Deserialize)]
struct ExportList {
    functions: Vec<ExportedFunction>,
}

#[derive(Deserialize)]
struct ExportedFunction {
    name: String,
}

async fn discover_one(tenant: &Tenant, alias: &str) -> Result<Exports, ApiError> {
    let report = tenant
        .registry
        .run(alias, Op::Exports)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    let Success(data) = call_result(report, alias, "get_tool_info")?;
    serde_json::from_str(data.result.get()).map_err(|err| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_tool_info",
            "the tool's discovery answer could not be read",
        )
        .with_cause(err)
    })
}

/// `POST /python/exports/discover {alias}`.
pub async fn discover(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<AliasBody>,
) -> Result<Success<Discovered>, ApiError> {
    let exports = discover_one(&tenant, &body.alias).await?;
    Ok(Success(Discovered {
        alias: body.alias,
        exports,
    }))
}

#[derive(Serialize)]
pub struct AllItem {
    alias: String,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    exports: Option<Exports>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

/// `GET /python/exports/all`: every loaded tool of the caller, each discovered in turn; a
/// tool whose discovery fails carries its error instead.
pub async fn all(Extension(Caller(tenant)): Authed) -> Success<Vec<AllItem>> {
    let mut items = Vec::new();
    for tool in tenant.registry.list() {
        let item = match discover_one(&tenant, &tool.alias).await {
            Ok(exports) => AllItem {
                alias: tool.alias,
                exports: Some(exports),
                error: None,
            },
            Err(err) => AllItem {
                alias: tool.alias,
                exports: None,
                error: Some(err.public_json()),
            },
        };
        items.push(item);
    }
    Success(items)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    alias: String,
    function_name: String,
    #[serde(default)]
    kwargs: Option<Box<RawValue>>,
}

/// `POST /python/exports/invoke {alias, function_name, kwargs}`: calls an exported function
/// (one `get_tool_info()` lists, or any public one when it lists none).
pub async fn invoke(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<InvokeBody>,
) -> Result<Success<CallData>, ApiError> {
    let (alias, function, args, kwargs) = checked_call(CallBody {
        alias: body.alias,
        function_name: body.function_name,
        args: None,
        kwargs: body.kwargs,
    })?;
    let exports = discover_one(&tenant, &alias).await?;
    let listed: ExportList =
        serde_json::from_value(serde_json::Value::Object(exports)).map_err(|err| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_tool_info",
                "the tool's get_tool_info() could not be read as exports",
            )
            .with_cause(err)
        })?;
    if !listed.functions.iter().any(|f| f.name == function) {
        return Err(ApiError::not_found(format!(
            "tool '{alias}' exports no function '{function}'"
        )));
    }
    let report = tenant
        .registry
        .call(&alias, &function, args, kwargs)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    call_result(report, &alias, &function)
}
