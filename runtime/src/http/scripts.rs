//! `/scripts`: a tenant's own scripts, uploaded through the API (`PUT /scripts/{name}`), each
//! version immutable and named by the SHA-256 of its content; listed beside the server's
//! shared scripts, read back, and deleted. See `crate::scripts` for the checks.

use axum::Extension;
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::answer::registry_error;
use super::audit;
use super::auth::{Authed, BodyLimits, Caller};
use super::body::read_limited;
use super::envelope::{Data as Success, DataWith, Envelope};
use super::error::ApiError;
use super::openapi::ErrorEnvelope;
use crate::scripts::{Kind, ScriptDetail, ScriptError, ScriptInfo, Scripts, Uploaded};
use crate::store::scripts::ScriptQuota;

/// The scripts service, as the routes' extension.
pub type ScriptsService = Extension<Scripts>;

/// An upload's body: the source (`text/x-python`, `text/plain`, or no `Content-Type`) or a
/// package's zip (`application/zip`), read under the tenant's `max_script_bytes`.
pub struct Upload {
    kind: Kind,
    bytes: axum::body::Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Upload {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let kind = kind_of(request.headers().get(header::CONTENT_TYPE))?;
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("an upload without a caller"))?;
        let timeout = request
            .extensions()
            .get::<BodyLimits>()
            .map_or(std::time::Duration::from_secs(30), |l| l.timeout);
        let max = usize::try_from(caller.0.script_quotas.max_script_bytes).unwrap_or(usize::MAX);
        let bytes = read_limited(
            request,
            BodyLimits {
                max_bytes: max,
                timeout,
            },
        )
        .await?;
        Ok(Self { kind, bytes })
    }
}

fn kind_of(content_type: Option<&HeaderValue>) -> Result<Kind, ApiError> {
    let Some(value) = content_type else {
        return Ok(Kind::Module);
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "text/x-python" | "text/plain" | "application/x-python" | "text/x-script.python" => {
            Ok(Kind::Module)
        }
        "application/zip" | "application/x-zip-compressed" => Ok(Kind::Package),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a module as text/x-python (UTF-8) or a package as application/zip",
        )),
    }
}

/// Maps a script error to its answer; the messages were written for clients.
fn script_error(tenant: &str, err: ScriptError) -> ApiError {
    match err {
        ScriptError::BadName(why) => ApiError::bad_request(why),
        ScriptError::NotUtf8 => ApiError::bad_request("the source is not UTF-8"),
        ScriptError::Package(why) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_package",
            format!("the package is refused: {why}; nothing was stored"),
        ),
        ScriptError::TooLarge { max } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the script is larger than this key may store ({max} bytes, max_script_bytes)"),
        ),
        ScriptError::Syntax(problem) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "syntax_error",
            format!(
                "{} does not compile: {}; nothing was stored",
                problem.file, problem.message
            ),
        )
        .with_details(json!(problem)),
        ScriptError::CheckLimit(cause) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "script_too_complex",
            "compiling the script passed the syntax check's fuel or deadline; nothing was stored",
        )
        .with_cause(cause),
        ScriptError::Quota(quota) => {
            let (name, max) = match quota {
                ScriptQuota::Scripts(max) => ("max_scripts", max),
                ScriptQuota::TotalBytes(max) => ("scripts_bytes", max),
            };
            audit::limit_hit(tenant, "quota_exceeded");
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "quota_exceeded",
                format!(
                    "the upload would pass this key's {name} quota ({max}); delete scripts first"
                ),
            )
            .with_details(json!({"quota": name, "limit": max}))
        }
        ScriptError::NotFound => ApiError::not_found("no script of that name"),
        ScriptError::UnknownVersion => ApiError::not_found("the script has no such version"),
        ScriptError::Shared => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "shared scripts belong to the server's operator and cannot be changed here",
        ),
        other @ (ScriptError::Check(_) | ScriptError::Files(_) | ScriptError::Store(_)) => {
            ApiError::internal(other)
        }
    }
}

/// What `GET /scripts` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ScriptList {
    /// The tenant's own scripts and the shared ones it does not shadow, by name.
    #[schema(value_type = Vec<ScriptInfoSchema>)]
    scripts: Vec<ScriptInfo>,
}

/// A script in a listing.
#[derive(utoipa::ToSchema)]
#[schema(as = ScriptInfo)]
#[allow(dead_code, reason = "the schema of `crate::scripts::ScriptInfo`")]
pub struct ScriptInfoSchema {
    name: String,
    /// `tenant` (the tenant's own, uploaded here) or `shared` (the server's scripts folder);
    /// when a name is both, the tenant's wins.
    source: String,
    /// Its latest version: the SHA-256 (hex) of its content.
    latest_version: String,
    /// The latest version's size in bytes.
    size: u64,
    /// Versions kept.
    versions: u64,
}

/// A script with its versions.
#[derive(utoipa::ToSchema)]
#[schema(as = ScriptDetail)]
#[allow(dead_code, reason = "the schema of `crate::scripts::ScriptDetail`")]
pub struct ScriptDetailSchema {
    name: String,
    source: String,
    latest_version: String,
    /// Newest first: `{version, kind (module or package), size, created_at}`.
    #[schema(value_type = Vec<Object>)]
    versions: Vec<()>,
}

/// What an upload answers.
#[derive(utoipa::ToSchema)]
#[schema(as = Uploaded)]
#[allow(dead_code, reason = "the schema of `crate::scripts::Uploaded`")]
pub struct UploadedSchema {
    name: String,
    /// The SHA-256 (hex) of the content: the version's name.
    version: String,
    size: u64,
    /// When the version was first stored (seconds since the epoch).
    created_at: f64,
}

/// A script name in the path.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct NamePath {
    /// 1-64 of `[A-Za-z0-9_]`, not starting with a digit (a Python module name).
    name: String,
}

/// Store a new version of one of the tenant's scripts.
///
/// `PUT /scripts/{name}`: the body is the module's source (`text/x-python`, UTF-8) or a
/// package's zip (`application/zip`: an `__init__.py` and other modules and data files,
/// checked entry by entry). Every `.py` is compiled in a sandbox first (never run); nothing
/// is stored unless all of it passes. `201` for a new version, `200` when that content was
/// stored already (it is the latest version again). A loaded tool keeps running its version
/// until it is reloaded.
#[utoipa::path(
    put,
    path = "/{name}",
    params(NamePath),
    request_body(content = String, description = "The module's source, or a package's zip", content_type = "text/x-python"),
    responses(
        (status = 201, description = "A new version", body = Envelope<UploadedSchema>),
        (status = 200, description = "That content was stored already", body = Envelope<UploadedSchema>),
        (status = 400, description = "`bad_request` (name, not UTF-8), `invalid_package` (the zip: a path outside it, a link, too many entries, no `__init__.py`...)", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large`: over `max_script_bytes` (also unpacked)", body = ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`", body = ErrorEnvelope),
        (status = 422, description = "`syntax_error` (`details: {file, line, column, message}`), `script_too_complex`", body = ErrorEnvelope),
        (status = 507, description = "`quota_exceeded`: `max_scripts` or `scripts_bytes` (`details.quota`)", body = ErrorEnvelope)
    )
)]
pub async fn put_script(
    Extension(Caller(tenant)): Authed,
    Extension(scripts): ScriptsService,
    Path(NamePath { name }): Path<NamePath>,
    upload: Upload,
) -> Result<DataWith<Uploaded>, ApiError> {
    let uploaded = scripts
        .put(
            &tenant.id,
            &name,
            upload.kind,
            &upload.bytes,
            tenant.script_quotas,
        )
        .await
        .map_err(|err| script_error(&tenant.id, err))?;
    audit::tool_event(&tenant.id, "script_stored", &name);
    let status = if uploaded.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(DataWith(status, uploaded))
}

/// List the tenant's scripts and the shared ones.
#[utoipa::path(
    get,
    path = "",
    responses((status = 200, description = "The scripts", body = Envelope<ScriptList>))
)]
pub async fn list_scripts(
    Extension(Caller(tenant)): Authed,
    Extension(scripts): ScriptsService,
) -> Result<Success<ScriptList>, ApiError> {
    let shared = &tenant.registry.settings().shared_scripts;
    let all = scripts
        .list(&tenant.id, shared)
        .await
        .map_err(|err| script_error(&tenant.id, err))?;
    Ok(Success(ScriptList { scripts: all }))
}

/// One script with its versions.
#[utoipa::path(
    get,
    path = "/{name}",
    params(NamePath),
    responses(
        (status = 200, description = "The script", body = Envelope<ScriptDetailSchema>),
        (status = 404, description = "`not_found`: no script of that name (another tenant's are never visible)", body = ErrorEnvelope)
    )
)]
pub async fn get_script(
    Extension(Caller(tenant)): Authed,
    Extension(scripts): ScriptsService,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Success<ScriptDetail>, ApiError> {
    let shared = &tenant.registry.settings().shared_scripts;
    scripts
        .detail(&tenant.id, shared, &name)
        .await
        .map(Success)
        .map_err(|err| script_error(&tenant.id, err))
}

/// `?version=` of a source read.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A version (SHA-256); absent: the latest.
    version: Option<String>,
}

/// A script's source (a module) or zip (a package), not in an envelope.
#[utoipa::path(
    get,
    path = "/{name}/source",
    params(NamePath, VersionQuery),
    responses(
        (status = 200, description = "The content: `text/x-python; charset=utf-8` or `application/zip`, its version in `X-Script-Version`", body = String),
        (status = 404, description = "`not_found`: no such script or version (a shared package's files are not served)", body = ErrorEnvelope)
    )
)]
pub async fn script_source(
    Extension(Caller(tenant)): Authed,
    Extension(scripts): ScriptsService,
    Path(NamePath { name }): Path<NamePath>,
    Query(query): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let shared = &tenant.registry.settings().shared_scripts;
    let (kind, content) = scripts
        .source(&tenant.id, shared, &name, query.version.as_deref())
        .await
        .map_err(|err| script_error(&tenant.id, err))?;
    let content_type = match kind {
        Kind::Module => "text/x-python; charset=utf-8",
        Kind::Package => "application/zip",
    };
    let version = crate::scripts::version_of(&content);
    let mut response = content.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&version) {
        headers.insert("x-script-version", value);
    }
    Ok(response)
}

/// `?force=true` of a delete.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ForceQuery {
    /// Unload the tools that run the script, then delete it.
    #[serde(default)]
    force: bool,
}

/// What a delete answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    name: String,
    deleted: bool,
    /// The tools unloaded because they ran it (`force=true`).
    unloaded: Vec<String>,
}

/// Delete one of the tenant's scripts, every version.
///
/// Refused (`409 script_in_use`, the tools in `details.tools`) while a loaded tool runs
/// it, unless `force=true`, which unloads those tools first.
#[utoipa::path(
    delete,
    path = "/{name}",
    params(NamePath, ForceQuery),
    responses(
        (status = 200, description = "Deleted", body = Envelope<Deleted>),
        (status = 403, description = "`forbidden`: a shared script", body = ErrorEnvelope),
        (status = 404, description = "`not_found`", body = ErrorEnvelope),
        (status = 409, description = "`script_in_use`", body = ErrorEnvelope)
    )
)]
pub async fn delete_script(
    Extension(Caller(tenant)): Authed,
    Extension(scripts): ScriptsService,
    Path(NamePath { name }): Path<NamePath>,
    Query(query): Query<ForceQuery>,
) -> Result<Success<Deleted>, ApiError> {
    let unloaded = tenant
        .registry
        .unload_users_of(&name, query.force)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    let shared = &tenant.registry.settings().shared_scripts;
    scripts
        .delete(&tenant.id, shared, &name)
        .await
        .map_err(|err| script_error(&tenant.id, err))?;
    audit::tool_event(&tenant.id, "script_deleted", &name);
    Ok(Success(Deleted {
        name,
        deleted: true,
        unloaded,
    }))
}
