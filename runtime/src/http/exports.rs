//! `/python/exports/discover`, `GET /python/exports/all`, `/python/exports/invoke`: the
//! guide's discovery convention. A tool's `get_tool_info()` (run in its sandbox, under the
//! call limits) is merged with the signatures of the functions it lists; `invoke` calls one
//! of those with keyword arguments of any JSON type.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::answer::{CallData, call_result, registry_error};
use super::args::{AliasBody, CallBody, checked_call};
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorBody, Exports as ExportsSchema, ToolErrors};
use crate::protocol::Op;
use crate::tenants::Tenant;

/// What `exports/discover` answers: the alias, with `tool_info` and `functions`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Discovered {
    alias: String,
    /// `tool_info` and `functions`, as the tool described itself.
    #[serde(flatten)]
    #[schema(value_type = ExportsSchema)]
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
    exports_of(report, alias)
}

fn exports_of(report: crate::registry::CallReport, alias: &str) -> Result<Exports, ApiError> {
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

/// Discover a tool's exports.
///
/// `POST /python/exports/discover {alias}`: the tool's `get_tool_info()` (run in its
/// sandbox; `null` if it has none) and the signatures of the functions it lists, or of all
/// public ones when it lists none.
#[utoipa::path(
    post,
    path = "/exports/discover",
    request_body = AliasBody,
    responses(
        (status = 200, description = "The tool's exports", body = Envelope<Discovered>),
        BodyErrors,
        ToolErrors
    )
)]
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

/// One tool in `exports/all`: its exports (`tool_info`, `functions`) or its `error`.
#[derive(Serialize)]
pub struct AllItem {
    alias: String,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    exports: Option<Exports>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

/// One tool in `exports/all`: its discovery, or why it failed (the schema of [`AllItem`]).
#[derive(utoipa::ToSchema)]
#[schema(as = AllItem)]
#[serde(untagged)]
#[allow(
    dead_code,
    reason = "documentation only: describes `AllItem`, never constructed"
)]
enum AllItemSchema {
    /// The tool's discovery, as `exports/discover` answers it.
    Discovered(Discovered),
    /// A tool whose discovery failed.
    Failed(Undiscovered),
}

/// A tool whose discovery failed.
#[derive(utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documentation only: describes `AllItem`, never constructed"
)]
struct Undiscovered {
    alias: String,
    /// Why the discovery failed.
    error: ErrorBody,
}

/// Discover the exports of every tool of the caller.
///
/// `GET /python/exports/all`: every loaded tool of the caller, each discovered in turn; a
/// tool whose discovery fails carries its error instead.
#[utoipa::path(
    get,
    path = "/exports/all",
    responses((status = 200, description = "Each tool's exports or error", body = Envelope<Vec<AllItemSchema>>))
)]
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

/// `exports/invoke`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// The tool's alias.
    alias: String,
    /// An exported function.
    function_name: String,
    /// Keyword arguments: an object of any JSON values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    kwargs: Option<Box<RawValue>>,
}

/// Call an exported function.
///
/// `POST /python/exports/invoke {alias, function_name, kwargs}`: calls an exported function
/// (one `get_tool_info()` lists, or any public one when it lists none); answered as a call.
#[utoipa::path(
    post,
    path = "/exports/invoke",
    request_body = InvokeBody,
    responses(
        (status = 200, description = "The function returned", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors
    )
)]
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
