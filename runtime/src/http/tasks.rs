//! `/tasks` (workflows of steps with a durable history) and the original's `/api/tasks`
//! routes (one script as a task). See `crate::tasks` for what runs and how it is stored.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, DataWith, Envelope};
use super::error::ApiError;
use super::openapi::{
    BodyErrors, ErrorEnvelope, TaskRecordSchema, TaskSpecSchema, TaskSummarySchema,
};
use crate::tasks::{Service, TaskError, TaskRecord, TaskSummary};

/// The task service, as handlers get it.
pub type Tasks = Extension<Arc<Service>>;

/// Most tasks one list page holds.
pub const MAX_PAGE: usize = 100;

fn task_error(err: TaskError) -> ApiError {
    match err {
        TaskError::Spec(err) => ApiError::bad_request(err.0),
        TaskError::NotFound => ApiError::not_found("no task of the caller with that id"),
        TaskError::TooManyStored(_) | TaskError::TooManyRunning(_) | TaskError::StoreFull(_) => {
            let mut api = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_tasks",
                err.to_string(),
            );
            api.retry_after_s = Some(1);
            api
        }
        TaskError::NotResumable(_) | TaskError::Finished(_) => {
            ApiError::new(StatusCode::CONFLICT, "task_state", err.to_string())
        }
        TaskError::Store(cause) => ApiError::internal(format!("task store: {cause}")),
        TaskError::Lost => ApiError::internal("a task store read was lost"),
    }
}

/// A task accepted and started.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Submitted {
    task_id: String,
    status: &'static str,
}

/// Submits a task: validated, stored, started.
///
/// `POST /tasks {name, steps, max_concurrency?, timeout_ms?}`. Duplicate ids, unknown
/// references and cycles are refused with `400`, naming the steps.
#[utoipa::path(
    post,
    path = "/tasks",
    operation_id = "submit_task",
    request_body = TaskSpecSchema,
    responses(
        (status = 202, description = "Accepted and started", body = Envelope<Submitted>),
        BodyErrors
    )
)]
pub async fn submit(
    Extension(Caller(tenant)): Authed,
    Extension(tasks): Tasks,
    JsonBody(body): JsonBody<Box<RawValue>>,
) -> Result<DataWith<Submitted>, ApiError> {
    let task_id = tasks
        .submit(&tenant.task_owner(), body.get())
        .await
        .map_err(task_error)?;
    Ok(DataWith(
        StatusCode::ACCEPTED,
        Submitted {
            task_id,
            status: "pending",
        },
    ))
}

/// A task: status, steps (with results), and every state change.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    operation_id = "get_task",
    params(("id" = String, Path, description = "The task id `POST /tasks` answered")),
    responses(
        (status = 200, description = "The task", body = Envelope<TaskRecordSchema>),
        (status = 404, description = "`not_found`: no task of the caller with that id", body = ErrorEnvelope)
    )
)]
pub async fn get(
    Extension(Caller(tenant)): Authed,
    Extension(tasks): Tasks,
    Path(id): Path<String>,
) -> Result<Success<TaskRecord>, ApiError> {
    tasks
        .get(&tenant.id, &id)
        .await
        .map(Success)
        .map_err(task_error)
}

/// The list's filters and paging.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this state.
    #[serde(default)]
    status: Option<String>,
    /// Tasks per page, 1-100 (default 20).
    #[serde(default)]
    limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    cursor: Option<String>,
}

/// One page of tasks, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page {
    #[schema(value_type = Vec<TaskSummarySchema>)]
    tasks: Vec<TaskSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

const STATUSES: [&str; 7] = [
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "interrupted",
];

/// The caller's tasks, newest first.
#[utoipa::path(
    get,
    path = "/tasks",
    operation_id = "list_tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = Envelope<Page>),
        (status = 400, description = "`bad_request`: an unknown status, a limit out of range or a bad cursor", body = ErrorEnvelope)
    )
)]
pub async fn list(
    Extension(Caller(tenant)): Authed,
    Extension(tasks): Tasks,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Page>, ApiError> {
    let Query(query) = query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "status must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let cursor = match &query.cursor {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| ApiError::bad_request("cursor must be a next_cursor value"))?,
        ),
    };
    let (page, next) = tasks
        .list(&tenant.id, query.status.as_deref(), limit, cursor)
        .await
        .map_err(task_error)?;
    Ok(Success(Page {
        tasks: page,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

/// What `DELETE /tasks/{id}` did.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Removed {
    Cancelled(TaskRecord),
    Deleted { task_id: String, deleted: bool },
}

/// [`Removed`] in the document.
#[derive(utoipa::ToSchema)]
#[schema(as = Removed)]
#[serde(untagged)]
#[allow(dead_code, reason = "documentation only: read by utoipa's derive")]
pub enum RemovedSchema {
    /// The task was running: cancelled, as it ended.
    Cancelled(TaskRecordSchema),
    /// The task had finished: deleted with its history.
    Deleted { task_id: String, deleted: bool },
}

/// Cancels a running task (its steps' guests are stopped; the answer is the task as it
/// ended), or deletes a finished one with its history.
#[utoipa::path(
    delete,
    path = "/tasks/{id}",
    operation_id = "delete_task",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 200, description = "Cancelled or deleted", body = Envelope<RemovedSchema>),
        (status = 404, description = "`not_found`: no task of the caller with that id", body = ErrorEnvelope)
    )
)]
pub async fn delete(
    Extension(Caller(tenant)): Authed,
    Extension(tasks): Tasks,
    Path(id): Path<String>,
) -> Result<Success<Removed>, ApiError> {
    match tasks.cancel(&tenant.id, &id).await {
        Ok(record) => Ok(Success(Removed::Cancelled(record))),
        Err(TaskError::Finished(_)) => {
            tasks.delete(&tenant.id, &id).await.map_err(task_error)?;
            Ok(Success(Removed::Deleted {
                task_id: id,
                deleted: true,
            }))
        }
        Err(err) => Err(task_error(err)),
    }
}

/// Runs an interrupted (or failed, cancelled, timed-out) task again; steps that succeeded
/// keep their results and are not run again.
#[utoipa::path(
    post,
    path = "/tasks/{id}/resume",
    operation_id = "resume_task",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 202, description = "Resumed: the task as it starts again", body = Envelope<TaskRecordSchema>),
        (status = 404, description = "`not_found`: no task of the caller with that id", body = ErrorEnvelope),
        (status = 409, description = "`task_state`: the task is running or succeeded", body = ErrorEnvelope)
    )
)]
pub async fn resume(
    Extension(Caller(tenant)): Authed,
    Extension(tasks): Tasks,
    Path(id): Path<String>,
) -> Result<DataWith<TaskRecord>, ApiError> {
    tasks
        .resume(&tenant.task_owner(), &id)
        .await
        .map(|record| DataWith(StatusCode::ACCEPTED, record))
        .map_err(task_error)
}

/// The original's PythonScriptTask parameters.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScriptTaskBody {
    /// A script of the scripts folder, run as `__main__` (or give `scriptContent`).
    #[serde(default)]
    script_name: Option<String>,
    /// Code to run (or give `scriptName`).
    #[serde(default)]
    script_content: Option<String>,
    /// Bound as the variable `args`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    args: Option<Box<RawValue>>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<f64>,
    /// Retries after a failed attempt.
    #[serde(default)]
    retry_count: Option<u32>,
    /// Package names; each must be importable in the sandbox (as its module name).
    #[serde(default)]
    requirements: Vec<String>,
    /// Module names imported before the script.
    #[serde(default)]
    module_imports: Vec<String>,
}

/// A requirement's module name: lower case, `-` and `.` as `_` (`scikit-learn` ->
/// `scikit_learn`), version specifiers dropped.
fn module_of(requirement: &str) -> String {
    requirement
        .split(|c: char| "<>=!~ ;[".contains(c))
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace(['-', '.'], "_")
}

/// The original's PythonScriptTask: one `script` step as a task (see docs/api.md for the
/// mapping); answers like `POST /tasks`.
#[utoipa::path(
    post,
    path = "/api/tasks/script",
    operation_id = "script_task",
    request_body = ScriptTaskBody,
    responses(
        (status = 202, description = "Accepted and started", body = Envelope<Submitted>),
        BodyErrors
    )
)]
pub async fn script(
    caller: Authed,
    tasks: Tasks,
    JsonBody(body): JsonBody<ScriptTaskBody>,
) -> Result<DataWith<Submitted>, ApiError> {
    let mut step = serde_json::Map::new();
    step.insert("id".into(), "script".into());
    step.insert("kind".into(), "script".into());
    match (body.script_content, body.script_name) {
        (Some(code), None) => step.insert("code".into(), code.into()),
        (None, Some(name)) => step.insert("script_name".into(), name.into()),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of scriptName and scriptContent",
            ));
        }
    };
    if let Some(args) = body.args {
        let args: serde_json::Value = serde_json::from_str(args.get())
            .map_err(|_| ApiError::bad_request("args must be JSON"))?;
        step.insert("args".into(), args);
    }
    if let Some(retries) = body.retry_count {
        step.insert("retries".into(), retries.into());
    }
    let mut imports = body.module_imports;
    imports.extend(body.requirements.iter().map(|r| module_of(r)));
    if !imports.is_empty() {
        step.insert("imports".into(), imports.into());
    }
    let mut task = serde_json::Map::new();
    task.insert("name".into(), "script".into());
    if let Some(timeout) = super::high_level::timeout_seconds(body.timeout)? {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        task.insert("timeout_ms".into(), ms.into());
    }
    task.insert("steps".into(), vec![serde_json::Value::Object(step)].into());
    let text = serde_json::Value::Object(task).to_string();
    let raw = RawValue::from_string(text).map_err(ApiError::internal)?;
    submit(caller, tasks, JsonBody(raw)).await
}

/// A task, as `GET /tasks/{id}`.
#[utoipa::path(
    get,
    path = "/api/tasks/status/{id}",
    operation_id = "task_status",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 200, description = "The task", body = Envelope<TaskRecordSchema>),
        (status = 404, description = "`not_found`: no task of the caller with that id", body = ErrorEnvelope)
    )
)]
pub async fn status(
    caller: Authed,
    tasks: Tasks,
    id: Path<String>,
) -> Result<Success<TaskRecord>, ApiError> {
    get(caller, tasks, id).await
}

/// The caller's running tasks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Active {
    #[schema(value_type = Vec<TaskSummarySchema>)]
    tasks: Vec<TaskSummary>,
}

/// The caller's running tasks.
#[utoipa::path(
    get,
    path = "/api/tasks/active",
    operation_id = "active_tasks",
    responses((status = 200, description = "Running tasks, oldest first", body = Envelope<Active>))
)]
pub async fn active(
    Extension(Caller(tenant)): Authed,
    Extension(tasks): Tasks,
) -> Result<Success<Active>, ApiError> {
    tasks
        .active(&tenant.id)
        .await
        .map(|tasks| Success(Active { tasks }))
        .map_err(task_error)
}

/// Cancels a running task, stopping its steps; the task as it ended.
#[utoipa::path(
    delete,
    path = "/api/tasks/cancel/{id}",
    operation_id = "cancel_task",
    params(("id" = String, Path, description = "The task id")),
    responses(
        (status = 200, description = "Cancelled", body = Envelope<TaskRecordSchema>),
        (status = 404, description = "`not_found`: no task of the caller with that id", body = ErrorEnvelope),
        (status = 409, description = "`task_state`: the task already finished", body = ErrorEnvelope)
    )
)]
pub async fn cancel(
    Extension(Caller(tenant)): Authed,
    Extension(tasks): Tasks,
    Path(id): Path<String>,
) -> Result<Success<TaskRecord>, ApiError> {
    tasks
        .cancel(&tenant.id, &id)
        .await
        .map(Success)
        .map_err(task_error)
}
