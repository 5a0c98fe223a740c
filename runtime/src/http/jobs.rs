//! `/python/callAsync` and `/python/jobs/{id}`: calls that answer at once (202 with a
//! `job_id`) and are read, or cancelled, later. A cancelled job's guest is stopped mid-call.

use axum::Extension;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::value::RawValue;

use super::answer::{call_result, registry_error};
use super::args::{CallBody, checked_call};
use super::auth::Authed;
use super::body::JsonBody;
use super::envelope::{Data as Success, DataWith, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorEnvelope, JobStatusSchema, JobViewSchema};
use crate::jobs::{JobError, JobStatus, JobView};
use crate::protocol::Op;

/// What `callAsync` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// 32 lowercase hex digits; read the job at `/python/jobs/{job_id}`.
    job_id: String,
    /// Always `running`.
    #[schema(value_type = JobStatusSchema)]
    status: JobStatus,
}

/// Start a call and answer at once with a job id.
///
/// `POST /python/callAsync`: as `call`, answered at once (`202`) with a job id. The alias
/// and names are checked first; the call's own outcome goes to the job.
#[utoipa::path(
    post,
    path = "/callAsync",
    request_body = CallBody,
    responses(
        (status = 202, description = "The call is running as a job", body = Envelope<Accepted>),
        BodyErrors,
        (status = 404, description = "`not_found`: no tool of the caller under that alias", body = ErrorEnvelope)
    )
)]
pub async fn call_async(
    Extension(super::auth::Caller(tenant)): Authed,
    JsonBody(body): JsonBody<CallBody>,
) -> Result<DataWith<Accepted>, ApiError> {
    let (alias, function, args, kwargs) = checked_call(body)?;
    if !tenant.registry.contains(&alias) {
        return Err(ApiError::not_found("no tool is loaded under that alias"));
    }
    let (job_id, cancel) = tenant
        .jobs
        .start(&alias, &function)
        .await
        .map_err(job_error)?;
    let task_tenant = std::sync::Arc::clone(&tenant);
    let id = job_id.clone();
    tokio::spawn(async move {
        let op = Op::Call {
            function: function.clone(),
            args,
            kwargs,
        };
        let report = task_tenant
            .registry
            .run_cancellable(&alias, op, Some(cancel))
            .await;
        let answer = match report {
            Ok(report) => call_result(report, &alias, &function).map(|Success(data)| data),
            Err(err) => Err(registry_error(&task_tenant.id, err)),
        };
        let stored = match answer {
            Ok(data) => raw(&data).map(Ok),
            Err(err) => {
                if let Some(cause) = &err.cause {
                    tracing::info!(job = %id, code = err.code, %cause, "async call failed");
                }
                raw(&err.public_json()).map(Err)
            }
        };
        match stored {
            Some(outcome) => task_tenant.jobs.finish(&id, outcome).await,
            None => tracing::error!(job = %id, "an async call's answer could not be stored"),
        }
    });
    Ok(DataWith(
        StatusCode::ACCEPTED,
        Accepted {
            job_id,
            status: JobStatus::Running,
        },
    ))
}

fn raw(value: &impl Serialize) -> Option<Box<RawValue>> {
    serde_json::to_string(value)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
}

fn job_error(err: JobError) -> ApiError {
    match err {
        JobError::Full(max) => {
            let mut api = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_jobs",
                format!("this key already has {max} jobs; read or delete finished ones"),
            );
            api.retry_after_s = Some(1);
            api
        }
        JobError::NotFound => ApiError::not_found("no such job (finished jobs expire)"),
        JobError::Store => ApiError::internal("the job could not be recorded"),
        JobError::Elsewhere => ApiError::new(
            StatusCode::CONFLICT,
            "job_elsewhere",
            "the job runs on another node of the cluster; it can be read here, not cancelled",
        ),
    }
}

/// Job ids are 32 lowercase hex digits; anything else is simply not found.
fn checked_id(id: &str) -> Result<&str, ApiError> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(id)
    } else {
        Err(job_error(JobError::NotFound))
    }
}

/// Read a job.
///
/// `GET /python/jobs/{id}`: its status and, once finished, its result or error. Finished
/// jobs are kept `job_ttl_s` (600 s), then `404`.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    params(("id" = String, Path, description = "The job id `callAsync` answered")),
    responses(
        (status = 200, description = "The job", body = Envelope<JobViewSchema>),
        (status = 404, description = "`not_found`: no such job of the caller (finished jobs expire)", body = ErrorEnvelope)
    )
)]
pub async fn get_job(
    Extension(super::auth::Caller(tenant)): Authed,
    Path(id): Path<String>,
) -> Result<Success<JobView>, ApiError> {
    tenant
        .jobs
        .get(checked_id(&id)?)
        .await
        .map(Success)
        .map_err(job_error)
}

/// Cancel a running job, or forget a finished one.
///
/// `DELETE /python/jobs/{id}`: cancels a running job (its guest is stopped and the tool's
/// instance replaced) or forgets a finished one. Answers with the job as it was.
#[utoipa::path(
    delete,
    path = "/jobs/{id}",
    params(("id" = String, Path, description = "The job id `callAsync` answered")),
    responses(
        (status = 200, description = "The job, cancelled or forgotten", body = Envelope<JobViewSchema>),
        (status = 404, description = "`not_found`: no such job of the caller", body = ErrorEnvelope)
    )
)]
pub async fn delete_job(
    Extension(super::auth::Caller(tenant)): Authed,
    Path(id): Path<String>,
) -> Result<Success<JobView>, ApiError> {
    tenant
        .jobs
        .cancel(checked_id(&id)?)
        .await
        .map(Success)
        .map_err(job_error)
}
