//! `/module/*`: the original's native-module routes, for administrators only. Native modules
//! are trusted code in the server's own process (see `native` and the trust boundary
//! in docs/native-modules.md); tenants reach them only from guest code, through `scriptbox.native` and their
//! policy.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::args::check_depth;
use super::audit;
use super::auth::{Caller, require_admin};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorEnvelope, ModuleStatusSchema};
use crate::native::{NativeError, NativeModules, State as ModuleState, Status};

/// A module, by name (`unload`, `reload`, `enable`, `disable`, `status`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleName {
    /// The module's name: its folder under the modules folder.
    name: String,
}

/// `load`: a module by name, optionally with its folder.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBody {
    name: String,
    /// The module's folder (relative to the modules folder, or absolute); it must be the
    /// folder `<modules_dir>/<name>`.
    #[serde(default)]
    path: Option<String>,
}

/// `hasFunction`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HasFunctionBody {
    name: String,
    #[serde(rename = "functionName", alias = "function_name")]
    function_name: String,
}

/// `call`: a function of a loaded module, with JSON arguments.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleCallBody {
    name: String,
    function: String,
    /// Any JSON (default `null`), handed to the function as it is.
    #[serde(default)]
    #[schema(value_type = Value)]
    args: Option<Box<RawValue>>,
}

/// What a lifecycle route did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModuleChange {
    name: String,
    /// The module's state afterwards.
    #[schema(value_type = String, example = "loaded")]
    state: ModuleState,
    /// `load`, `reload`: the modules loaded by this request, dependencies first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    loaded: Vec<String>,
}

/// `hasFunction`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HasFunction {
    name: String,
    function: String,
    /// Whether the module is loaded and exports the function.
    available: bool,
}

/// A native call's answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModuleCallResult {
    name: String,
    function: String,
    #[schema(value_type = Value)]
    result: Box<RawValue>,
}

/// Maps a loader error to its code. Every message was written for the caller (an
/// administrator); host faults keep their detail in the log only.
pub fn native_error(err: NativeError) -> ApiError {
    let (status, code) = match &err {
        NativeError::Unknown(_) | NativeError::UnknownFunction { .. } => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        NativeError::InvalidManifest { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_manifest")
        }
        NativeError::Order(_) => (StatusCode::UNPROCESSABLE_ENTITY, "dependency_error"),
        NativeError::InUse { dependents, .. } => {
            let details = serde_json::json!({ "dependents": dependents });
            return ApiError::new(StatusCode::CONFLICT, "module_in_use", err.to_string())
                .with_details(details);
        }
        NativeError::NotLoaded { .. } | NativeError::Disabled { .. } => {
            (StatusCode::CONFLICT, "module_state")
        }
        NativeError::LoadFailed { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "module_load_failed"),
        NativeError::Failed { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "module_error"),
        NativeError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "module_timeout"),
        NativeError::Busy => return ApiError::busy(),
        NativeError::ForbiddenPath => (StatusCode::FORBIDDEN, "forbidden_path"),
        NativeError::Host(_) => return ApiError::internal(err),
    };
    ApiError::new(status, code, err.to_string())
}

fn admin(caller: &Caller, action: &str) -> Result<(), ApiError> {
    require_admin(caller)?;
    audit::admin_action(&caller.0.id, action);
    Ok(())
}

fn state_of(modules: &NativeModules, name: &str) -> ModuleState {
    modules
        .list()
        .into_iter()
        .find(|s| s.name == name)
        .map_or(ModuleState::Unloaded, |s| s.state)
}

fn change(modules: &NativeModules, name: String, loaded: Vec<String>) -> Success<ModuleChange> {
    let state = state_of(modules, &name);
    Success(ModuleChange {
        name,
        state,
        loaded,
    })
}

/// Load a native module and its dependencies (administrators only).
///
/// `POST /module/load {name, path?}`: loads the module from `<modules_dir>/<name>/` after the
/// modules it depends on, in dependency order. The library's ABI version, every function the
/// manifest declares and (when given) its SHA-256 are checked first. A cycle, a missing
/// module or a version that does not fit is `422 dependency_error`, naming the chain.
#[utoipa::path(
    post,
    path = "/load",
    operation_id = "module_load",
    request_body = LoadBody,
    responses(
        (status = 200, description = "Loaded (with what it needed)", body = Envelope<ModuleChange>),
        (status = 403, description = "`forbidden`: not an administrator; `forbidden_path`: the path is not the module's folder", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module", body = ErrorEnvelope),
        (status = 409, description = "`module_state`: it or a dependency is disabled", body = ErrorEnvelope),
        (status = 422, description = "`invalid_manifest`, `dependency_error`, `module_load_failed`", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn load(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<LoadBody>,
) -> Result<Success<ModuleChange>, ApiError> {
    admin(&caller, "module_load")?;
    let loaded = modules
        .load(&body.name, body.path.as_deref().map(std::path::Path::new))
        .await
        .map_err(native_error)?;
    Ok(change(&modules, body.name, loaded))
}

/// Unload a native module (administrators only).
///
/// `POST /module/unload {name}`: refused with `409 module_in_use` while a loaded module
/// depends on it (`details.dependents` lists them). Calls already running finish first; the
/// library is shut down and closed when the last returns.
#[utoipa::path(
    post,
    path = "/unload",
    operation_id = "module_unload",
    request_body = ModuleName,
    responses(
        (status = 200, description = "Unloaded", body = Envelope<ModuleChange>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module", body = ErrorEnvelope),
        (status = 409, description = "`module_in_use`: loaded modules depend on it", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn unload(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModuleName>,
) -> Result<Success<ModuleChange>, ApiError> {
    admin(&caller, "module_unload")?;
    modules.unload(&body.name).await.map_err(native_error)?;
    Ok(change(&modules, body.name, Vec::new()))
}

/// Reload a native module and its dependents (administrators only).
///
/// `POST /module/reload {name}`: unloads the loaded modules that depend on it, then the
/// module; re-reads its manifest and library; loads it and then those dependents again, so no
/// dependent keeps talking to the old copy.
#[utoipa::path(
    post,
    path = "/reload",
    operation_id = "module_reload",
    request_body = ModuleName,
    responses(
        (status = 200, description = "Reloaded, with its dependents", body = Envelope<ModuleChange>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module", body = ErrorEnvelope),
        (status = 409, description = "`module_state`: disabled", body = ErrorEnvelope),
        (status = 422, description = "`invalid_manifest`, `dependency_error`, `module_load_failed`", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn reload(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModuleName>,
) -> Result<Success<ModuleChange>, ApiError> {
    admin(&caller, "module_reload")?;
    let loaded = modules.reload(&body.name).await.map_err(native_error)?;
    Ok(change(&modules, body.name, loaded))
}

/// Enable a disabled native module (administrators only).
///
/// `POST /module/enable {name}`: it may be loaded again (it stays unloaded until it is).
#[utoipa::path(
    post,
    path = "/enable",
    operation_id = "module_enable",
    request_body = ModuleName,
    responses(
        (status = 200, description = "Enabled", body = Envelope<ModuleChange>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn enable(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModuleName>,
) -> Result<Success<ModuleChange>, ApiError> {
    admin(&caller, "module_enable")?;
    modules.enable(&body.name).await.map_err(native_error)?;
    Ok(change(&modules, body.name, Vec::new()))
}

/// Disable a native module (administrators only).
///
/// `POST /module/disable {name}`: unloads it and refuses loads until it is enabled. Refused
/// while loaded modules depend on it. The state survives a restart.
#[utoipa::path(
    post,
    path = "/disable",
    operation_id = "module_disable",
    request_body = ModuleName,
    responses(
        (status = 200, description = "Disabled", body = Envelope<ModuleChange>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module", body = ErrorEnvelope),
        (status = 409, description = "`module_in_use`: loaded modules depend on it", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn disable(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModuleName>,
) -> Result<Success<ModuleChange>, ApiError> {
    admin(&caller, "module_disable")?;
    modules.disable(&body.name).await.map_err(native_error)?;
    Ok(change(&modules, body.name, Vec::new()))
}

/// One native module's status (administrators only).
///
/// `POST /module/status {name}`: state (`unloaded`, `loading`, `loaded`, `error`,
/// `disabled`), version, the last load error, functions, dependencies, dependents and call
/// counts. Re-reads the modules folder, so a module just dropped in is found.
#[utoipa::path(
    post,
    path = "/status",
    operation_id = "module_status",
    request_body = ModuleName,
    responses(
        (status = 200, description = "The module's status", body = Envelope<ModuleStatusSchema>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module", body = ErrorEnvelope),
        (status = 422, description = "`invalid_manifest`: its module.json is invalid (the message says why)", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn status(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModuleName>,
) -> Result<Success<Status>, ApiError> {
    admin(&caller, "module_status")?;
    modules
        .status(&body.name)
        .await
        .map(Success)
        .map_err(native_error)
}

/// Every native module found (administrators only).
///
/// `GET /module/list`: each folder of the modules folder with a `module.json`, with its
/// status; a folder whose manifest is invalid is listed in the `error` state with the reason.
#[utoipa::path(
    get,
    path = "/list",
    operation_id = "module_list",
    responses(
        (status = 200, description = "Every module", body = Envelope<Vec<ModuleStatusSchema>>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope)
    )
)]
pub async fn list(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
) -> Result<Success<Vec<Status>>, ApiError> {
    admin(&caller, "module_list")?;
    modules.refresh().await;
    Ok(Success(modules.list()))
}

/// Whether a loaded module exports a function (administrators only).
///
/// `POST /module/hasFunction {name, functionName}`.
#[utoipa::path(
    post,
    path = "/hasFunction",
    operation_id = "module_has_function",
    request_body = HasFunctionBody,
    responses(
        (status = 200, description = "Whether the function is available", body = Envelope<HasFunction>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn has_function(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<HasFunctionBody>,
) -> Result<Success<HasFunction>, ApiError> {
    admin(&caller, "module_has_function")?;
    let available = modules
        .has_function(&body.name, &body.function_name)
        .map_err(native_error)?;
    Ok(Success(HasFunction {
        name: body.name,
        function: body.function_name,
        available,
    }))
}

/// Call a native module's function (administrators only).
///
/// `POST /module/call {name, function, args}`: `args` (any JSON) goes to the function as it
/// is; its JSON answer comes back as `result`. The call runs on a blocking thread, at most
/// `[native] max_concurrent_calls` at once, and the request waits at most `call_timeout_ms`
/// (`504 module_timeout`). A module's error or panic is `422 module_error` with its message.
#[utoipa::path(
    post,
    path = "/call",
    operation_id = "module_call",
    request_body = ModuleCallBody,
    responses(
        (status = 200, description = "The function's answer", body = Envelope<ModuleCallResult>),
        (status = 403, description = "`forbidden`: not an administrator", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such module or function", body = ErrorEnvelope),
        (status = 409, description = "`module_state`: not loaded, or disabled", body = ErrorEnvelope),
        (status = 422, description = "`module_error`: the module answered an error or panicked", body = ErrorEnvelope),
        (status = 503, description = "`busy`: every native-call slot stayed taken", body = ErrorEnvelope),
        (status = 504, description = "`module_timeout`: no answer within `call_timeout_ms`", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn call(
    State(modules): State<NativeModules>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<ModuleCallBody>,
) -> Result<Success<ModuleCallResult>, ApiError> {
    admin(&caller, "module_call")?;
    let args = body.args.unwrap_or_else(crate::protocol::null);
    check_depth(&args, "args")?;
    let result = modules
        .call(&body.name, &body.function, args.get(), None, None)
        .await
        .map_err(native_error)?;
    Ok(Success(ModuleCallResult {
        name: body.name,
        function: body.function,
        result,
    }))
}
