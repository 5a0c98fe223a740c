//! `/python/installPackage`, `uninstallPackage` and `GET /python/packages`: pure-Python
//! packages for a tenant's sandboxes. The original ran `sh -c "pip install <name>"`; here the
//! name is validated before pip sees it, pip only downloads wheels that fit the sandbox (never
//! builds or runs anything), and the wheels are unpacked by our own checked code (see
//! `crate::packages` and the `scriptbox-packages` crate).

use std::sync::Arc;

use axum::Extension;
use axum::extract::Query;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::answer::registry_error;
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorEnvelope};
use crate::packages::{
    EnvPackages, InstallError, InstallReport, Installed, PackageError, Packages, RequirementsError,
    parse_requirement,
};
use crate::tenants::Tenant;

/// `installPackage`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallBody {
    /// A distribution name (PEP 508: letters, digits, `.`, `_`, `-`; at most 100).
    package_name: String,
    /// A version (`1.2.3`) or specifiers (`>=1,<2`, `~=1.4`); absent: the newest that fits.
    #[serde(default)]
    version: Option<String>,
    /// An environment made with `createVenv`; absent: the tenant's `default` environment.
    #[serde(default)]
    env_name: Option<String>,
}

/// `uninstallPackage`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UninstallBody {
    package_name: String,
    #[serde(default)]
    env_name: Option<String>,
}

/// `GET /python/packages`'s filter.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PackagesQuery {
    /// Only this environment.
    #[serde(default)]
    env_name: Option<String>,
}

/// One installed distribution.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PackageSchema {
    /// The normalised name (PEP 503).
    name: String,
    version: String,
    /// SHA-256 of the wheel it came from.
    sha256: String,
    /// Bytes it takes on disk.
    bytes: u64,
    /// Its top-level entries in `site-packages`.
    top_level: Vec<String>,
    installed_at_unix: u64,
}

/// What `installPackage` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InstallData {
    package_name: String,
    env_name: String,
    /// The distributions written: the package and its dependencies.
    #[schema(value_type = Vec<PackageSchema>)]
    installed: Vec<Installed>,
    /// Bytes of packages in all the tenant's environments now.
    total_bytes: u64,
    /// The quota those bytes count against.
    quota_bytes: u64,
}

/// What `uninstallPackage` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UninstallData {
    env_name: String,
    #[schema(value_type = PackageSchema)]
    removed: Installed,
}

/// One environment's packages.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnvPackagesSchema {
    env_name: String,
    packages: Vec<PackageSchema>,
    bytes: u64,
}

/// Maps a package error to its status; the messages were written for clients (no host
/// paths, no raw pip output), host faults keep their detail in the log.
pub fn package_error(tenant: &str, err: InstallError) -> ApiError {
    let err = match err {
        InstallError::Registry(err) => return registry_error(tenant, err),
        InstallError::Thread(cause) => return ApiError::internal(cause),
        InstallError::Store(err) => return ApiError::internal(err),
        InstallError::Package(err) => err,
    };
    let status = match &err {
        PackageError::InvalidName { .. } | PackageError::InvalidVersion { .. } => {
            StatusCode::BAD_REQUEST
        }
        PackageError::NotFound { .. }
        | PackageError::NoSuchVersion { .. }
        | PackageError::NotInstalled { .. } => StatusCode::NOT_FOUND,
        PackageError::AlreadyAvailable { .. } | PackageError::FileConflict { .. } => {
            StatusCode::CONFLICT
        }
        PackageError::NativeOnly { .. }
        | PackageError::SourceOnly { .. }
        | PackageError::UnsupportedPython { .. }
        | PackageError::DependencyConflict { .. }
        | PackageError::UnsafeWheel(_)
        | PackageError::InvalidWheel(_)
        | PackageError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
        PackageError::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
        PackageError::NoNetwork | PackageError::PipUnavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        PackageError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        PackageError::Pip(_) => StatusCode::BAD_GATEWAY,
        PackageError::Io { .. } => return ApiError::internal(err),
    };
    tracing::info!(tenant, code = err.code(), error = %err, "package request refused");
    ApiError::new(status, err.code(), err.to_string())
}

/// Admins may always install; a tenant only when its policy says so.
pub fn may_install(tenant: &Tenant) -> Result<(), ApiError> {
    if tenant.is_admin() || tenant.policy.install_packages {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this tenant may not install packages (policy install_packages)",
        ))
    }
}

/// Install a pure-Python package for the tenant's sandboxes.
///
/// `POST /python/installPackage {package_name, version?, env_name?}`: pip (run without a
/// shell) downloads only wheels that fit the sandbox (pure Python), with their dependencies;
/// they are unpacked with path and size checks into the environment's `site-packages`,
/// atomically, and recorded with name, version and SHA-256. Tools started afterwards (a load,
/// a reload, a fresh sandbox) import them. Admins, or tenants whose policy has
/// `install_packages`, only.
#[utoipa::path(
    post,
    path = "/installPackage",
    request_body = InstallBody,
    responses(
        (status = 200, description = "Installed, with its dependencies", body = Envelope<InstallData>),
        (status = 400, description = "`invalid_package_name`, `invalid_version` (checked before pip runs)", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: the tenant may not install packages", body = ErrorEnvelope),
        (status = 404, description = "`package_not_found`, `no_such_version`, `not_found` (no such environment)", body = ErrorEnvelope),
        (status = 409, description = "`already_available` (built into the interpreter), `file_conflict`", body = ErrorEnvelope),
        (status = 422, description = "`native_only`, `source_only`, `unsupported_python`, `dependency_conflict`, `unsafe_wheel`, `invalid_wheel`, `too_large`", body = ErrorEnvelope),
        (status = 503, description = "`no_network`, `pip_unavailable`", body = ErrorEnvelope),
        (status = 504, description = "`pip_timeout`", body = ErrorEnvelope),
        (status = 507, description = "`quota_exceeded`: the tenant's `packages_bytes`", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn install_package(
    Extension(Caller(tenant)): Authed,
    Extension(packages): Extension<Arc<Packages>>,
    JsonBody(body): JsonBody<InstallBody>,
) -> Result<Success<InstallData>, ApiError> {
    let requirement = parse_requirement(&body.package_name, body.version.as_deref())
        .map_err(|err| package_error(&tenant.id, err.into()))?;
    may_install(&tenant)?;
    let quota_bytes = tenant.packages_bytes;
    let InstallReport {
        env_name,
        installed,
        total_bytes,
    } = packages
        .install(
            &tenant.registry,
            body.env_name.as_deref(),
            requirement,
            quota_bytes,
        )
        .await
        .map_err(|err| package_error(&tenant.id, err))?;
    super::audit::admin_action(&tenant.id, "install_package");
    Ok(Success(InstallData {
        package_name: body.package_name,
        env_name,
        installed,
        total_bytes,
        quota_bytes,
    }))
}

/// Remove an installed package.
///
/// `POST /python/uninstallPackage {package_name, env_name?}`: removes the distribution (only
/// it, not what it depended on) from the environment (`default` when absent). Tools already
/// running keep what they imported until reloaded.
#[utoipa::path(
    post,
    path = "/uninstallPackage",
    request_body = UninstallBody,
    responses(
        (status = 200, description = "Removed", body = Envelope<UninstallData>),
        (status = 400, description = "`invalid_package_name`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: the tenant may not install packages", body = ErrorEnvelope),
        (status = 404, description = "`not_installed`, `not_found` (no such environment)", body = ErrorEnvelope),
        BodyErrors
    )
)]
pub async fn uninstall_package(
    Extension(Caller(tenant)): Authed,
    Extension(packages): Extension<Arc<Packages>>,
    JsonBody(body): JsonBody<UninstallBody>,
) -> Result<Success<UninstallData>, ApiError> {
    may_install(&tenant)?;
    let (env_name, removed) = packages
        .uninstall(
            &tenant.registry,
            body.env_name.as_deref(),
            &body.package_name,
        )
        .await
        .map_err(|err| package_error(&tenant.id, err))?;
    super::audit::admin_action(&tenant.id, "uninstall_package");
    Ok(Success(UninstallData { env_name, removed }))
}

/// The tenant's installed packages.
///
/// `GET /python/packages?env_name=`: each environment (or only the one named) with its
/// packages (name, version, SHA-256, bytes) and size.
#[utoipa::path(
    get,
    path = "/packages",
    params(PackagesQuery),
    responses(
        (status = 200, description = "Each environment's packages", body = Envelope<Vec<EnvPackagesSchema>>),
        (status = 400, description = "`bad_request`: a bad query", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such environment", body = ErrorEnvelope)
    )
)]
pub async fn list_packages(
    Extension(Caller(tenant)): Authed,
    Extension(packages): Extension<Arc<Packages>>,
    query: Result<Query<PackagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Vec<EnvPackages>>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    packages
        .list(&tenant.registry, query.env_name.as_deref())
        .await
        .map(Success)
        .map_err(|err| package_error(&tenant.id, err))
}

/// Checks a just-loaded tool's declared requirements ([`Packages::check_requirements`]),
/// installing missing ones when the tenant's policy has `auto_install_requirements` (and it
/// may install); otherwise `422 missing_requirements` listing them.
pub async fn check_requirements(
    tenant: &Tenant,
    packages: &Arc<Packages>,
    alias: &str,
) -> Result<(), ApiError> {
    let auto = tenant.policy.auto_install_requirements && may_install(tenant).is_ok();
    let auto_install = auto.then_some(tenant.packages_bytes);
    match packages
        .check_requirements(&tenant.registry, alias, auto_install)
        .await
    {
        Ok(()) => Ok(()),
        Err(RequirementsError::Install(err)) => Err(package_error(&tenant.id, err)),
        Err(RequirementsError::Missing(names)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_requirements",
            format!(
                "the tool requires packages its sandbox does not have: {}; install them with \
                 installPackage (or allow auto_install_requirements in the tenant's policy)",
                names.join(", ")
            ),
        )
        .with_details(serde_json::json!({ "missing": names }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_package_error_code_is_documented() {
        use super::super::openapi::errors::ERROR_CODES;
        let io = || std::io::Error::other("x");
        let samples = [
            PackageError::InvalidName { reason: "r".into() },
            PackageError::InvalidVersion { reason: "r".into() },
            PackageError::AlreadyAvailable { name: "n".into() },
            PackageError::NativeOnly { name: "n".into() },
            PackageError::SourceOnly { name: "n".into() },
            PackageError::NotFound { name: "n".into() },
            PackageError::NoSuchVersion {
                name: "n".into(),
                specifier: "s".into(),
                available: Vec::new(),
            },
            PackageError::UnsupportedPython {
                name: "n".into(),
                python_version: "3.15".into(),
            },
            PackageError::DependencyConflict { reason: "r".into() },
            PackageError::NoNetwork,
            PackageError::Timeout { seconds: 1 },
            PackageError::UnsafeWheel("r".into()),
            PackageError::InvalidWheel("r".into()),
            PackageError::TooLarge("r".into()),
            PackageError::FileConflict {
                name: "n".into(),
                entry: "e".into(),
                owner: "o".into(),
            },
            PackageError::QuotaExceeded {
                needed: 1,
                available: 0,
            },
            PackageError::NotInstalled { name: "n".into() },
            PackageError::PipUnavailable("r".into()),
            PackageError::Pip("r".into()),
            PackageError::Io {
                what: "w",
                source: io(),
            },
        ];
        for err in samples {
            let code = err.code();
            let api = package_error("t", InstallError::Package(err));
            if code == "io_error" {
                assert_eq!(api.code, "internal_error");
                continue;
            }
            assert_eq!(api.code, code);
            let documented = ERROR_CODES.iter().find(|c| c.code == code);
            assert!(documented.is_some(), "{code} is not in ERROR_CODES");
            assert_eq!(
                documented.map(|c| c.status),
                Some(api.status.as_u16()),
                "{code}"
            );
        }
    }
}
