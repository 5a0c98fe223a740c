//! `/python/executeWithLogging` and `/python/executeWithProfiling`: client code run in a
//! fresh sandbox (an empty namespace, the tenant's default limits, dropped afterwards).
//!
//! `log_file` names a log in the tenant's own log folder (`<data_dir>/logs/<tenant>/`). The
//! name is checked against a strict grammar and only ever used by the host to open that
//! file; it never reaches Python source (the original pasted it into code).

use std::io::Write as _;
use std::path::Path;

use axum::Extension;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::answer::{CallData, call_result, registry_error};
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope, current_request_id};
use super::error::ApiError;
use super::namespace::checked_code;
use super::openapi::{BodyErrors, ErrorEnvelope, FreshRunErrors};
use crate::names::check_alias;
use crate::protocol::Op;
use crate::tenants::Tenant;

/// The largest a log file may grow; past it nothing more is appended.
pub const MAX_LOG_BYTES: u64 = 16 << 20;

async fn run_fresh(
    tenant: &Tenant,
    what: &str,
    op: Op,
    stream: Option<crate::sandbox::OutputSink>,
) -> Result<CallData, ApiError> {
    let report = tenant
        .registry
        .run_fresh_watched(crate::protocol::SCRATCH_MODULE, op, None, stream)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    call_result(report, "(fresh sandbox)", what).map(|Success(data)| data)
}

/// `executeWithLogging`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingBody {
    /// Python statements, at most 256 KiB.
    script_content: String,
    /// A log of the tenant's to append the output to: 5 to 64 of `[A-Za-z0-9_.-]`, ending in
    /// `.log` (at most 16 MiB per file).
    #[serde(default)]
    log_file: Option<String>,
}

/// What `executeWithLogging` answers: the call's fields, with `log_file`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoggingData {
    #[serde(flatten)]
    call: CallData,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_file: Option<String>,
}

/// Run code in a fresh sandbox, optionally logging its output.
///
/// `POST /python/executeWithLogging {script_content, log_file?}`: the code runs in a fresh
/// sandbox (an empty namespace, the tenant's default limits and scripts, no scratch folder),
/// dropped afterwards; answered as a call with `result: null`. `log_file` appends the output
/// to `<data_dir>/logs/<tenant>/<log_file>`. Streamed with `Accept: text/event-stream`, as
/// `call`.
#[utoipa::path(
    post,
    path = "/executeWithLogging",
    request_body = LoggingBody,
    responses(
        (status = 200, description = "The code ran", body = Envelope<LoggingData>),
        BodyErrors,
        FreshRunErrors,
        (status = 507, description = "`log_full`: the log file would pass 16 MiB; start a new one", body = ErrorEnvelope)
    )
)]
pub async fn with_logging(
    Extension(Caller(tenant)): Authed,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<LoggingBody>,
) -> Result<axum::response::Response, ApiError> {
    checked_code("script_content", &body.script_content)?;
    if let Some(name) = &body.log_file {
        check_log_name(name)?;
    }
    Ok(super::stream::respond(&headers, move |sink| async move {
        use axum::response::IntoResponse as _;
        logged_run(&tenant, body, sink).await.into_response()
    })
    .await)
}

async fn logged_run(
    tenant: &Tenant,
    body: LoggingBody,
    stream: Option<crate::sandbox::OutputSink>,
) -> Result<Success<LoggingData>, ApiError> {
    let answer = run_fresh(
        tenant,
        "the script",
        Op::Exec {
            code: body.script_content,
        },
        stream,
    )
    .await;
    if let Some(name) = &body.log_file {
        let (stdout, stderr) = match &answer {
            Ok(call) => (call.stdout.clone(), call.stderr.clone()),
            Err(err) => (
                err.details["stdout"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                err.details["stderr"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
        };
        append_log(tenant, name, &stdout, &stderr)?;
    }
    answer.map(|call| {
        Success(LoggingData {
            call,
            log_file: body.log_file,
        })
    })
}

/// Log names: 1-64 of `[A-Za-z0-9_.-]`, not starting with `.`, ending in `.log`.
fn check_log_name(name: &str) -> Result<(), ApiError> {
    let ok = check_alias(name).is_ok() && name.ends_with(".log") && name.len() > 4;
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "log_file must be 5-64 characters of letters, digits, '_', '-', '.', ending in .log",
        ))
    }
}

fn append_log(tenant: &Tenant, name: &str, stdout: &str, stderr: &str) -> Result<(), ApiError> {
    let dir = &tenant.log_dir;
    let entry = format!(
        "--- request {} at {}\n{stdout}{}{stderr}",
        current_request_id(),
        unix_seconds(),
        if stderr.is_empty() {
            ""
        } else {
            "--- stderr\n"
        },
    );
    write_log(dir, name, entry.as_bytes()).map_err(|err| match err.kind() {
        std::io::ErrorKind::StorageFull => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "log_full",
            format!("the log file would pass {MAX_LOG_BYTES} bytes; start a new one"),
        ),
        _ => ApiError::internal(format!("writing a tenant log: {err}")),
    })
}

fn write_log(dir: &Path, name: &str, entry: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    // The folder is the host's own (0700, never mounted in a guest), so no tenant can plant
    // a link in it; the name was checked against a grammar without separators.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    let size = file.metadata()?.len();
    if size.saturating_add(entry.len() as u64) > MAX_LOG_BYTES {
        return Err(std::io::ErrorKind::StorageFull.into());
    }
    file.write_all(entry)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `executeWithProfiling`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilingBody {
    /// Python statements, at most 256 KiB.
    script_content: String,
    /// How many rows to answer (by cumulative time): 1 to 1000, 20 by default.
    #[serde(default = "default_top")]
    #[schema(default = 20, minimum = 1, maximum = 1000)]
    top_n: u32,
}

fn default_top() -> u32 {
    20
}

/// Profile code in a fresh sandbox.
///
/// `POST /python/executeWithProfiling {script_content, top_n?}`: the script under cProfile;
/// `result` is `{total_calls, rows: [{function, file, line, ncalls, tottime, cumtime}]}`, the
/// `top_n` (default 20, at most 1000) rows by cumulative time.
#[utoipa::path(
    post,
    path = "/executeWithProfiling",
    request_body = ProfilingBody,
    responses(
        (status = 200, description = "The profile as `result`", body = Envelope<CallData>),
        BodyErrors,
        FreshRunErrors
    )
)]
pub async fn with_profiling(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<ProfilingBody>,
) -> Result<Success<CallData>, ApiError> {
    checked_code("script_content", &body.script_content)?;
    if !(1..=1000).contains(&body.top_n) {
        return Err(ApiError::bad_request("top_n must be between 1 and 1000"));
    }
    let op = Op::Profile {
        code: body.script_content,
        top: body.top_n,
    };
    run_fresh(&tenant, "the script", op, None)
        .await
        .map(Success)
}
