//! `/python/*`: load, unload, reload, list, call. Each handler reads the request, calls one
//! registry method and maps the result. Status codes are documented in docs/api.md.

use axum::Extension;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::answer::{CallData, audit_limits, call_result, registry_error, with_strategy};
use super::args::{AliasBody, CallBody, checked_call};
use super::audit;
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{
    BodyErrors, ErrorEnvelope, LimitOverridesSchema, LoadErrors, ToolErrors, ToolInfoSchema,
};
use super::stream;
use crate::registry::ToolInfo;
use crate::sandbox::LimitOverrides;

/// `load`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBody {
    /// A script name: the tenant's own script (uploaded with `PUT /scripts/{name}`) or, if
    /// it has none of that name, one in the shared scripts folder (`my_tool` is
    /// `my_tool.py` or `my_tool/__init__.py`). An identifier: no paths or dots.
    script_name: String,
    /// A version of the tenant's script (its SHA-256, as `PUT /scripts` answered): the tool
    /// runs that version. Absent: the latest.
    #[serde(default)]
    version: Option<String>,
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
            body.version.as_deref(),
            &body.alias,
            &overrides,
            body.mode.unwrap_or_default(),
        )
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    if let Err(err) = super::packages::check_requirements(&tenant, &packages, &info.alias).await {
        // A tool that cannot run is not kept loaded.
        let _ = tenant.registry.unload(&info.alias).await;
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
        .await
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

/// Call a function of a tool.
///
/// Arguments go in `args` and `kwargs`; the result comes back converted by the conversion
/// table. The tool's error strategy applies to the call's own failures. With
/// `Accept: text/event-stream` the answer is an event stream: the call's output as it is
/// printed, then the JSON answer as a `result` or `error` event (docs/api.md, "Streaming").
/// A client that disconnects stops the call.
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
    headers: HeaderMap,
    JsonBody(body): JsonBody<CallBody>,
) -> Result<Response, ApiError> {
    let (alias, function, args, kwargs) = checked_call(body)?;
    Ok(stream::respond(&headers, move |sink| async move {
        let answer = async {
            let report = tenant
                .registry
                .call_watched(&alias, &function, args, kwargs, sink)
                .await
                .map_err(|err| registry_error(&tenant.id, err))?;
            let answer = call_result(report, &alias, &function);
            audit_limits(&tenant.id, &answer);
            with_strategy(tenant.strategies.for_alias(&alias), answer)
        };
        answer.await.into_response()
    })
    .await)
}
