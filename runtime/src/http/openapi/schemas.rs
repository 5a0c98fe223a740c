//! Schemas for values the HTTP layer sends but does not define: types of other modules
//! (`registry`, `jobs`, `sandbox`, `config`, `tenants`), mirrored here under their own names
//! (the unit tests in `openapi` check each mirror against the real type's serialisation),
//! and what the guest driver answers (function signatures, profiles, traces).
#![allow(
    dead_code,
    reason = "documentation-only types: read by utoipa's derives, never constructed"
)]

use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

/// Per-call and per-instance limits a tool runs under.
#[derive(ToSchema)]
#[schema(as = Limits)]
pub struct LimitsSchema {
    /// Wasm fuel (roughly, wasm instructions) one call may use.
    fuel: u64,
    /// Wall-clock time one call may take, including blocking waits, in milliseconds.
    deadline_ms: u64,
    /// Linear memory one instance may hold, in bytes.
    memory_bytes: u64,
    /// `print()` output (stdout and stderr together) one call may produce, in bytes.
    output_bytes: u64,
}

/// Limits a load asks for: each may only lower the tenant's maximum; absent ones get the
/// tenant's default.
#[derive(ToSchema)]
#[schema(as = LimitOverrides)]
#[serde(deny_unknown_fields)]
pub struct LimitOverridesSchema {
    fuel: Option<u64>,
    deadline_ms: Option<u64>,
    /// At least 64 MiB.
    memory_bytes: Option<u64>,
    output_bytes: Option<u64>,
}

/// A loaded tool.
#[derive(ToSchema)]
#[schema(as = ToolInfo)]
pub struct ToolInfoSchema {
    alias: String,
    /// The script it was loaded from (the tenant's own, or a shared one).
    script_name: String,
    /// The script version it runs: the SHA-256 of the tenant's script version, or of the
    /// shared script's file when it was loaded. A tool keeps its version until reloaded.
    script_version: String,
    /// `tenant` (the tenant's own script) or `shared` (the server's scripts folder).
    script_source: String,
    limits: LimitsSchema,
    /// `persistent` (one instance keeps state across calls) or `isolated` (every call in an
    /// instance no earlier call touched).
    mode: String,
    /// The interpreter image its latest instance started from: `scientific` (numpy and pandas
    /// already imported: the tool imports one of them), `driver`, or `base` (the images are not
    /// ready, are off, or do not fit the tool's memory cap); `null` while a tool restored
    /// after a restart has not started yet.
    image: Option<crate::sandbox::ImageKind>,
    /// Calls (of any kind) made to it since it was loaded.
    calls: u64,
    /// Times its instance was replaced (after a fault, a memory cap or a cancellation).
    resets: u64,
    /// When the tool was re-established from the store after a restart (seconds since the
    /// epoch); absent for a tool loaded since. Its module state (variables, objects) did not
    /// survive: its first answer after the restart carries `state_reset: true`.
    restored_at: Option<f64>,
}

/// Where a job is.
#[derive(ToSchema)]
#[schema(as = JobStatus, rename_all = "snake_case")]
pub enum JobStatusSchema {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

/// A `callAsync` job.
#[derive(ToSchema)]
#[schema(as = JobView)]
pub struct JobViewSchema {
    job_id: String,
    alias: String,
    function_name: String,
    status: JobStatusSchema,
    /// Seconds since the Unix epoch.
    created_at: f64,
    /// Seconds since the Unix epoch; `null` while running.
    finished_at: Option<f64>,
    /// When `succeeded`: the call's `data` (as `/python/call` answers it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    /// When `failed` or `cancelled`: the call's error, `{code, message, details}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<super::errors::ErrorBody>,
}

/// The tenant's result cache.
#[derive(ToSchema)]
#[schema(as = CacheStats)]
pub struct CacheStatsSchema {
    enabled: bool,
    ttl_s: u64,
    entries: u64,
    bytes: u64,
    hits: u64,
    misses: u64,
}

/// What a failing call turns into.
#[derive(ToSchema)]
#[schema(as = ErrorStrategy, rename_all = "snake_case")]
pub enum ErrorStrategySchema {
    /// An error response (and a batch stops at the first failure).
    Throw,
    /// A `null` result with a `warning` naming the error (a batch goes on).
    ReturnDefault,
    /// An error response, logged; a batch records it and goes on.
    LogAndContinue,
}

/// What a registered function runs: a public function of one of the tenant's tools.
#[derive(ToSchema)]
#[schema(as = Target)]
pub struct TargetSchema {
    alias: String,
    function_name: String,
}

/// A tenant's role: `admin` may use the `/admin` routes.
#[derive(ToSchema)]
#[schema(as = Role, rename_all = "lowercase")]
pub enum RoleSchema {
    Admin,
    Tenant,
}

/// A public function of a tool's script, as `inspect` describes it (from the guest driver).
#[derive(ToSchema)]
pub struct FunctionInfo {
    name: String,
    /// `name(params) -> returns`; `null` when `inspect` cannot tell.
    signature: Option<String>,
    /// The return annotation as text; absent when there is no signature.
    #[serde(skip_serializing_if = "Option::is_none")]
    returns: Option<String>,
    /// The docstring.
    doc: Option<String>,
    parameters: Vec<ParameterInfo>,
}

/// One parameter of a [`FunctionInfo`].
#[derive(ToSchema)]
pub struct ParameterInfo {
    name: String,
    /// `positional_only`, `positional_or_keyword`, `var_positional`, `keyword_only` or
    /// `var_keyword`.
    kind: String,
    /// The annotation as text (`null` without one).
    annotation: Option<String>,
    /// The default, when there is one: converted as a result, `null` when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    default: Option<serde_json::Value>,
    /// The default's `repr` (at most 200 characters) when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    default_repr: Option<String>,
}

/// A tool's discovery (`get_tool_info()` and the functions it exports).
#[derive(ToSchema)]
pub struct Exports {
    /// What the tool's `get_tool_info()` returned (`null` if it has none).
    #[schema(value_type = Value)]
    tool_info: serde_json::Value,
    /// The functions it lists, or all public ones when it lists none.
    functions: Vec<FunctionInfo>,
}

/// `strategy` as `setErrorHandlingStrategy` takes it: a name, or the original's number.
pub fn strategy_input() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["throw", "return_default", "log_and_continue"])),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([0, 1, 2]))
                .description(Some("0: throw, 1: return_default, 2: log_and_continue")),
        )
        .description(Some(
            "`throw`, `return_default` or `log_and_continue` (or the original's 0, 1, 2)",
        ))
        .into()
}

/// A task as submitted to `POST /tasks` (docs/tasks.md).
#[derive(ToSchema)]
#[schema(as = TaskSpec)]
#[serde(deny_unknown_fields)]
pub struct TaskSpecSchema {
    /// 1-128 bytes.
    name: String,
    /// 1-64 steps.
    steps: Vec<StepSpecSchema>,
    /// Steps running at once, 1-16 (default 1).
    max_concurrency: Option<u32>,
    /// The whole task's time limit in milliseconds (default an hour, at most a day).
    timeout_ms: Option<u64>,
}

/// One step: the common fields, and the fields of its kind (`call`: `alias`,
/// `function_name`, `args`, `kwargs`; `script`: `code` or `script_name`, `args`, `imports`;
/// `native`: `module`, `function`, `args`).
#[derive(ToSchema)]
#[schema(as = StepSpec)]
pub struct StepSpecSchema {
    /// 1-64 of `[A-Za-z0-9_-]`, unique in the task.
    id: String,
    /// `call`, `script`, `native`, or a kind the server added.
    kind: String,
    /// Steps that must finish first.
    depends_on: Option<Vec<String>>,
    /// Argument name -> `"<step>"` or `"<step>.key.0"`: a part of an earlier step's result
    /// (makes this step depend on it).
    inputs: Option<std::collections::BTreeMap<String, String>>,
    /// Each attempt's time limit in milliseconds (within the task's).
    timeout_ms: Option<u64>,
    /// Attempts after the first (at most 10).
    retries: Option<u32>,
    /// Wait before a retry in milliseconds, doubled after each (at most 60000).
    retry_backoff_ms: Option<u64>,
    /// A failure does not fail the task.
    optional: Option<bool>,
    /// `call`: the tool.
    alias: Option<String>,
    /// `call`: the function.
    function_name: Option<String>,
    /// `call`: positional arguments (an array); `script`: bound as the variable `args`;
    /// `native`: the function's arguments (an object; the inputs are added to it).
    #[schema(value_type = Option<Object>)]
    args: Option<serde_json::Value>,
    /// `call`: keyword arguments (an object).
    #[schema(value_type = Option<Object>)]
    kwargs: Option<serde_json::Value>,
    /// `script`: code to run (≤ 256 KiB).
    code: Option<String>,
    /// `script`: a script of the scripts folder, run as `__main__`.
    script_name: Option<String>,
    /// `script`: module names imported first.
    imports: Option<Vec<String>>,
    /// `native`: the native module.
    module: Option<String>,
    /// `native`: the module's function.
    function: Option<String>,
}

/// A task as listed.
#[derive(ToSchema)]
#[schema(as = TaskSummary)]
pub struct TaskSummarySchema {
    task_id: String,
    name: String,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled`, `timed_out`, `interrupted`.
    status: String,
    /// Why it failed, timed out or was cancelled.
    error: Option<String>,
    /// Seconds since the Unix epoch.
    created_at: f64,
    updated_at: f64,
}

/// A step's current state.
#[derive(ToSchema)]
#[schema(as = StepState)]
pub struct StepStateSchema {
    id: String,
    kind: String,
    /// `pending`, `running`, `retrying`, `succeeded`, `failed`, `cancelled`, `timed_out`,
    /// `skipped`, `interrupted`.
    status: String,
    attempts: u32,
    /// When it succeeded: its result.
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    error: Option<String>,
    started_at: Option<f64>,
    finished_at: Option<f64>,
}

/// One state change of a task (no `step_id`) or of a step.
#[derive(ToSchema)]
#[schema(as = TaskChange)]
pub struct ChangeSchema {
    at: f64,
    step_id: Option<String>,
    status: String,
    attempt: u32,
    error: Option<String>,
    /// The node that made the change (a task taken over by another node shows both).
    node: Option<String>,
}

/// A task with its steps and every state change.
#[derive(ToSchema)]
#[schema(as = TaskRecord)]
pub struct TaskRecordSchema {
    task_id: String,
    name: String,
    status: String,
    error: Option<String>,
    created_at: f64,
    updated_at: f64,
    steps: Vec<StepStateSchema>,
    history: Vec<ChangeSchema>,
}

/// A native module's state and what it offers (`/module/status`, `/module/list`).
#[derive(ToSchema)]
#[schema(as = ModuleStatus)]
pub struct ModuleStatusSchema {
    /// The module's name (its folder).
    name: String,
    /// `unloaded`, `loading`, `loaded`, `error` or `disabled`.
    state: String,
    /// Its version (absent when the manifest is invalid).
    version: Option<String>,
    /// Why the last load failed, or why the manifest is invalid.
    error: Option<String>,
    /// The functions its manifest declares.
    functions: Vec<String>,
    /// What it depends on, `name@range`.
    dependencies: Vec<String>,
    /// Modules that depend on it.
    dependents: Vec<String>,
    /// Calls made to it since the server started, and how many failed.
    calls: u64,
    failures: u64,
}
