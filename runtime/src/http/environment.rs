//! `/python/addSysPath`, and the package routes that wait for the packages issue.

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::body::JsonBody;
use super::envelope::Data as Success;
use super::error::ApiError;
use super::python::Authed;
use crate::sandbox::mounts::{SCRATCH_GUEST, SCRIPTS_GUEST};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysPathBody {
    path: String,
}

#[derive(Serialize)]
pub struct SysPathData {
    path: String,
    sys_paths: Vec<String>,
    /// Tools that could not take the path at once (they get it at their next start).
    pending: Vec<String>,
}

/// A guest path inside what the tenant's tools can see: `/scripts` or `/tmp`, or below them,
/// without `.`/`..` segments, of safe characters. Anything else is refused with 403.
fn granted(path: &str) -> Result<String, ApiError> {
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_path",
            format!("addSysPath only takes paths inside {SCRIPTS_GUEST} or {SCRATCH_GUEST}"),
        )
    };
    let trimmed = path.trim_end_matches('/');
    let safe = (1..=256).contains(&trimmed.len())
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if !safe {
        return Err(forbidden());
    }
    let Some(rest) = trimmed.strip_prefix('/') else {
        return Err(forbidden());
    };
    let mut segments = rest.split('/');
    let root = segments.next().unwrap_or_default();
    let under = |mount: &str| mount.trim_start_matches('/') == root;
    if !(under(SCRIPTS_GUEST) || under(SCRATCH_GUEST)) {
        return Err(forbidden());
    }
    if segments.any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(forbidden());
    }
    Ok(trimmed.to_owned())
}

/// `POST /python/addSysPath {path}`: appends a granted guest path to `sys.path` of the
/// caller's tools, now and at every later start (at most 16 paths).
pub async fn add_sys_path(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<SysPathBody>,
) -> Result<Success<SysPathData>, ApiError> {
    let path = granted(&body.path)?;
    let Some(pending) = tenant.registry.add_sys_path(&path).await else {
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

/// `installPackage` / `uninstallPackage`: not available until packages can be installed for
/// the sandbox (without ever running `pip` through a shell, as the original did).
pub async fn packages_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_available",
        "installing packages is not available yet; the interpreter already bundles numpy, \
         pandas, scipy and about 60 other packages (python-wasm/dist/MANIFEST)",
    )
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
