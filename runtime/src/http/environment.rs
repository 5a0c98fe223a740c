//! `/python/addSysPath`, `createVenv`, `activateVenv`, and the package routes that wait for
//! the packages issue.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::answer::registry_error;
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorEnvelope};
use crate::names::granted_guest_path;
use crate::sandbox::mounts::{SCRATCH_GUEST, SCRIPTS_GUEST};

/// `addSysPath`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SysPathBody {
    /// A guest path: `/scripts`, `/tmp` or a folder below them, without `.` or `..`
    /// segments.
    path: String,
}

/// What `addSysPath` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SysPathData {
    path: String,
    /// Every extra `sys.path` entry of the tenant.
    sys_paths: Vec<String>,
    /// Tools that could not take the path at once (they get it at their next start).
    pending: Vec<String>,
}

/// A guest path inside what the tenant's tools can see ([`granted_guest_path`] under
/// `/scripts` or `/tmp`). Anything else is refused with 403.
fn granted(path: &str) -> Result<String, ApiError> {
    granted_guest_path(path, &[SCRIPTS_GUEST, SCRATCH_GUEST]).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_path",
            format!("addSysPath only takes paths inside {SCRIPTS_GUEST} or {SCRATCH_GUEST}"),
        )
    })
}

/// Add a guest path to `sys.path` of the caller's tools.
///
/// `POST /python/addSysPath {path}`: appends a granted guest path to `sys.path` of the
/// caller's tools, now and at every later start (at most 16 paths).
#[utoipa::path(
    post,
    path = "/addSysPath",
    request_body = SysPathBody,
    responses(
        (status = 200, description = "The path is added", body = Envelope<SysPathData>),
        BodyErrors,
        (status = 403, description = "`forbidden_path`: the path is outside `/scripts` and `/tmp`", body = ErrorEnvelope)
    )
)]
pub async fn add_sys_path(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<SysPathBody>,
) -> Result<Success<SysPathData>, ApiError> {
    let path = granted(&body.path)?;
    let added = tenant
        .registry
        .add_sys_path(&path)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    let Some(pending) = added else {
        return Err(ApiError::bad_request(format!(
            "at most {} extra sys.path entries",
            crate::registry::MAX_SYS_PATHS
        )));
    };
    Ok(Success(SysPathData {
        path,
        sys_paths: tenant.registry.sys_paths(),
        pending,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_paths() {
        for good in ["/scripts", "/scripts/", "/scripts/lib", "/tmp/pkgs/v1.2"] {
            assert!(granted(good).is_ok(), "{good}");
        }
        for bad in [
            "/",
            "/etc",
            "scripts",
            "/scripts/../etc",
            "/scripts/./x",
            "/scripts//x",
            "/tmpx",
            "/scripts-evil",
            "/usr/local/lib",
            "/scriptbox",
            "/tmp/a\0b",
            "/tmp/é",
        ] {
            assert!(granted(bad).is_err(), "{bad:?}");
        }
    }
}

/// A package environment of the tenant (`createVenv`, `activateVenv`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VenvBody {
    /// 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`. For `activateVenv`, `null`
    /// deactivates.
    #[serde(default, deserialize_with = "super::args::present")]
    #[schema(value_type = Option<String>, required = true)]
    env_name: Option<Box<serde_json::value::RawValue>>,
}

/// What `createVenv` and `activateVenv` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VenvData {
    env_name: Option<String>,
    /// `createVenv`: whether it was made now (`false`: it already existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<bool>,
    /// The tenant's package environments.
    venvs: Vec<String>,
    /// The active one, mounted in instances the tenant starts.
    active: Option<String>,
}

/// The body's `env_name`: a string, or `None` for an explicit `null` (when allowed).
fn env_name(body: VenvBody, null_ok: bool) -> Result<Option<String>, ApiError> {
    let raw = body
        .env_name
        .ok_or_else(|| ApiError::missing_field("env_name"))?;
    if raw.get().trim() == "null" && null_ok {
        return Ok(None);
    }
    let name: String = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::bad_request("env_name must be a string"))?;
    crate::registry::check_venv(&name).map_err(|err| ApiError::bad_request(err.to_string()))?;
    Ok(Some(name))
}

/// Create a package environment.
///
/// `POST /python/createVenv {env_name}`: a named package environment of the tenant (a
/// `site-packages` folder, empty until packages can be installed; at most 16).
#[utoipa::path(
    post,
    path = "/createVenv",
    request_body = VenvBody,
    responses(
        (status = 200, description = "The environment exists (`created: false` if it did)", body = Envelope<VenvData>),
        BodyErrors
    )
)]
pub async fn create_venv(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<VenvBody>,
) -> Result<Success<VenvData>, ApiError> {
    let name = env_name(body, false)?.unwrap_or_default();
    let (_, created) = tenant
        .registry
        .create_venv(&name)
        .map_err(|err| super::answer::registry_error(&tenant.id, err))?;
    let (venvs, active) = tenant.registry.venvs();
    Ok(Success(VenvData {
        env_name: Some(name),
        created: Some(created),
        venvs,
        active,
    }))
}

/// Activate a package environment (or deactivate with `null`).
///
/// `POST /python/activateVenv {env_name}`: the environment mounted read-only at
/// `/site-packages` (and on `sys.path`) in every instance the tenant starts from now on:
/// loads, reloads and respawns. Running instances keep what they have. `null` deactivates.
#[utoipa::path(
    post,
    path = "/activateVenv",
    request_body = VenvBody,
    responses(
        (status = 200, description = "The environment is active (or none is)", body = Envelope<VenvData>),
        BodyErrors,
        (status = 404, description = "`not_found`: no package environment of that name", body = ErrorEnvelope)
    )
)]
pub async fn activate_venv(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<VenvBody>,
) -> Result<Success<VenvData>, ApiError> {
    let name = env_name(body, true)?;
    tenant
        .registry
        .activate_venv(name.as_deref())
        .map_err(|err| super::answer::registry_error(&tenant.id, err))?;
    let (venvs, active) = tenant.registry.venvs();
    Ok(Success(VenvData {
        env_name: name,
        created: None,
        venvs,
        active,
    }))
}
