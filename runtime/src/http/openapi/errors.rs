//! The error side of the document: every error code with its status, the error envelope's
//! schema, and the reusable response sets the handlers' annotations list.
//!
//! These types only describe what [`ApiError`](super::super::ApiError) sends; they are never
//! constructed.
#![allow(
    dead_code,
    reason = "documentation-only types: read by utoipa's derives, never constructed"
)]

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

/// One error code: the code, the HTTP status it comes with, and when it is answered.
pub struct CodeDoc {
    /// The code, as `error.code` carries it.
    pub code: &'static str,
    /// The HTTP status it is answered with.
    pub status: u16,
    /// When it is answered.
    pub when: &'static str,
}

const fn code(code: &'static str, status: u16, when: &'static str) -> CodeDoc {
    CodeDoc { code, status, when }
}

/// Every error code the API answers with, in the order of docs/errors.md.
/// The unit test below checks that every code the source constructs is listed.
pub const ERROR_CODES: &[CodeDoc] = &[
    code("invalid_json", 400, "body is empty or not JSON"),
    code(
        "missing_field",
        400,
        "a required field is absent (`details.field` names it)",
    ),
    code(
        "bad_request",
        400,
        "wrong type, unknown field, bad name, `args`/`kwargs` of the wrong kind or too deep, a limit above the server's maximum",
    ),
    code(
        "not_found",
        404,
        "unknown alias, unknown script or script version, no such public function, unknown route, another tenant's script",
    ),
    code("method_not_allowed", 405, "wrong HTTP method for a route"),
    code("alias_exists", 409, "`load` with an alias already in use"),
    code(
        "missing_api_key",
        401,
        "tenants are declared and the request has no `X-API-Key`",
    ),
    code("invalid_api_key", 401, "the key matches no tenant"),
    code(
        "forbidden",
        403,
        "an `admin` route called with a `tenant` key",
    ),
    code(
        "forbidden_path",
        403,
        "`addSysPath` with a path outside `/scripts` and `/tmp`",
    ),
    code(
        "body_timeout",
        408,
        "the body did not arrive within `body_read_timeout_ms`",
    ),
    code(
        "payload_too_large",
        413,
        "body over the tenant's `max_body_bytes`; answered with `Connection: close`",
    ),
    code(
        "tool_unloaded",
        409,
        "the tool was unloaded while the call ran or waited",
    ),
    code(
        "too_many_tools",
        429,
        "the tenant already has `max_tools` tools loaded",
    ),
    code(
        "too_many_calls",
        429,
        "the tenant already has `max_concurrent_calls` calls in flight; `Retry-After: 1`",
    ),
    code(
        "rate_limited",
        429,
        "the tenant's `requests_per_second` (and `burst`) is spent; `Retry-After` says when to retry",
    ),
    code(
        "too_many_auth_failures",
        429,
        "this address sent `auth_failures_per_minute` bad keys; every key it sends is refused until the minute ends",
    ),
    code(
        "too_many_venvs",
        429,
        "`createVenv` past the tenant's maximum of package environments",
    ),
    code(
        "python_exception",
        422,
        "the tool raised; `details` has `type`, `message`, `traceback`, `stdout`, `stderr`, `state_reset`",
    ),
    code(
        "unserializable_result",
        422,
        "the result is not JSON-representable; the message names the type",
    ),
    code(
        "output_limit",
        422,
        "`print()` output passed `output_bytes`, or the whole response passed its cap",
    ),
    code(
        "fuel_exhausted",
        422,
        "the call used up `fuel`; the instance was replaced",
    ),
    code(
        "deadline_exceeded",
        422,
        "the call passed `deadline_ms`; the instance was replaced",
    ),
    code(
        "load_failed",
        422,
        "the script raised while being imported (`details.type/message/traceback`)",
    ),
    code(
        "guest_crashed",
        422,
        "the interpreter trapped; the instance was replaced",
    ),
    code(
        "guest_exited",
        422,
        "the interpreter exited; the instance was replaced",
    ),
    code(
        "bad_tool_info",
        422,
        "the tool's `get_tool_info()` answer could not be read as exports",
    ),
    code(
        "object_lost",
        410,
        "the named live object was lost when its tool's instance was replaced",
    ),
    code(
        "too_many_jobs",
        429,
        "the tenant already holds `max_jobs` jobs, running or finished and unexpired",
    ),
    code(
        "job_elsewhere",
        409,
        "the job runs on another node of the cluster: it can be read through any node, deleted only through its own",
    ),
    code(
        "cancelled",
        422,
        "(in a job's `error`) the job was cancelled; the instance was replaced",
    ),
    code(
        "invalid_manifest",
        422,
        "`/module/*`: the module's `module.json` is invalid; the message names the field",
    ),
    code(
        "dependency_error",
        422,
        "`/module/load`, `reload`: a dependency cycle, a missing module or a version that does not fit; the message names the chain",
    ),
    code(
        "module_load_failed",
        422,
        "`/module/load`, `reload`: the library is missing, speaks another ABI version, lacks a declared function, fails its `sha256`, or its init failed",
    ),
    code(
        "module_in_use",
        409,
        "`/module/unload`, `disable`: loaded modules depend on it (`details.dependents`)",
    ),
    code(
        "module_state",
        409,
        "`/module/call`, `load`: the module (or a dependency) is not loaded, or is disabled",
    ),
    code(
        "module_error",
        422,
        "`/module/call`: the module answered an error, panicked (caught at the ABI boundary) or answered text that is not JSON",
    ),
    code(
        "module_timeout",
        504,
        "`/module/call`: no answer within `[native] call_timeout_ms`; the module's thread keeps its call slot until it returns",
    ),
    code(
        "invalid_package_name",
        400,
        "`installPackage`, `uninstallPackage`: not a PEP 508 name (checked before pip runs)",
    ),
    code(
        "invalid_version",
        400,
        "`installPackage`: not a version or PEP 440 specifier list",
    ),
    code(
        "package_not_found",
        404,
        "`installPackage`: no such package on the index (or in `find_links`)",
    ),
    code(
        "no_such_version",
        404,
        "`installPackage`: no release matches the version; the message lists available ones",
    ),
    code(
        "not_installed",
        404,
        "`uninstallPackage`: the package is not installed in that environment",
    ),
    code(
        "already_available",
        409,
        "`installPackage`: the package is built into the interpreter (numpy, pandas, scipy…)",
    ),
    code(
        "file_conflict",
        409,
        "`installPackage`: a file of the package belongs to another installed package",
    ),
    code(
        "native_only",
        422,
        "`installPackage`: the package (or a dependency) ships only compiled extensions, which cannot run in the sandbox",
    ),
    code(
        "source_only",
        422,
        "`installPackage`: the package publishes only source archives; building them would run its code",
    ),
    code(
        "unsupported_python",
        422,
        "`installPackage`: no release supports the sandbox's Python (3.15)",
    ),
    code(
        "dependency_conflict",
        422,
        "`installPackage`: the dependencies cannot be satisfied together (e.g. a pin against a built-in package)",
    ),
    code(
        "unsafe_wheel",
        422,
        "`installPackage`: a wheel has a path outside its folder, a link, or a duplicate entry",
    ),
    code(
        "invalid_wheel",
        422,
        "`installPackage`: a wheel is malformed",
    ),
    code(
        "too_large",
        422,
        "`installPackage`: a wheel or the install passes the size or file-count limits",
    ),
    code(
        "missing_requirements",
        422,
        "`load`: the tool's `get_tool_info()[\"requirements\"]` names packages its sandbox lacks (`details.missing`; names are checked, not versions)",
    ),
    code(
        "quota_exceeded",
        507,
        "`installPackage`: the tenant's packages would pass `packages_bytes`; `PUT /scripts`: its scripts would pass `max_scripts` or `scripts_bytes` (`details.quota` names it)",
    ),
    code(
        "no_network",
        503,
        "`installPackage`: the package index cannot be reached",
    ),
    code(
        "pip_unavailable",
        503,
        "`installPackage`: pip is not installed on the server",
    ),
    code(
        "pip_failed",
        502,
        "`installPackage`: pip failed for another reason (the log has its output)",
    ),
    code(
        "pip_timeout",
        504,
        "`installPackage`: pip did not finish within `[packages] timeout_s`",
    ),
    code(
        "log_full",
        507,
        "`executeWithLogging`: the log file would pass 16 MiB",
    ),
    code(
        "too_many_tasks",
        429,
        "the tenant already runs `max_running_tasks` tasks, or keeps `max_tasks`",
    ),
    code(
        "unsupported_media_type",
        415,
        "`PUT /scripts/{name}`: the body is neither `text/x-python` (a module) nor `application/zip` (a package)",
    ),
    code(
        "invalid_package",
        400,
        "`PUT /scripts/{name}`: the package's zip has a path outside it, a link, an encrypted or duplicate entry, too many entries, no `__init__.py`, or a `.py` that is not UTF-8; nothing is stored",
    ),
    code(
        "syntax_error",
        422,
        "`PUT /scripts/{name}`: a `.py` does not compile (`details: {file, line, column, message}`); nothing is stored",
    ),
    code(
        "script_too_complex",
        422,
        "`PUT /scripts/{name}`: compiling the script passed the syntax check's fuel or deadline",
    ),
    code(
        "script_in_use",
        409,
        "`DELETE /scripts/{name}`: loaded tools run the script (`details.tools`); unload them or pass `force=true`",
    ),
    code(
        "tenant_exists",
        409,
        "`POST /admin/tenants`: a tenant of that id exists",
    ),
    code(
        "read_only_tenant",
        409,
        "`/admin/tenants/{id}`: the tenant is declared in the config file, so it is changed there",
    ),
    code(
        "too_many_keys",
        429,
        "`POST /admin/tenants/{id}/keys`: the tenant holds 16 keys",
    ),
    code(
        "too_many_tenants",
        429,
        "`POST /admin/tenants`: the server holds 10,000 tenants made through the API",
    ),
    code(
        "task_state",
        409,
        "the task is not in a state for that (resuming a running or succeeded task, cancelling a finished one)",
    ),
    code(
        "busy",
        503,
        "the tool's queue (`queue_depth`) is full; `Retry-After: 1`",
    ),
    code(
        "overloaded",
        503,
        "the server-wide `max_concurrent_calls` or `max_tools` is reached; `Retry-After: 1`",
    ),
    code(
        "internal_error",
        500,
        "a server fault; the message holds only the request id, the cause is in the server log",
    ),
];

/// The stable error code (`error.code`): a string enum of every code in [`ERROR_CODES`].
pub struct ErrorCode;

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let lines: Vec<String> = ERROR_CODES
            .iter()
            .map(|c| format!("* `{}` ({}): {}", c.code, c.status, c.when))
            .collect();
        let description = format!(
            "The stable error code; `message` is for people and may change.\n\n{}",
            lines.join("\n")
        );
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ERROR_CODES.iter().map(|c| c.code)))
            .description(Some(description))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// `false`, for the error envelope's `success`.
fn always_false() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([false]))
        .description(Some(
            "Always `false` here (`true` in the success envelope).",
        ))
}

/// The error envelope: every refusal and failure (except a failing run of the
/// `/api/python/execute*` routes, which answer in their own shape).
#[derive(ToSchema)]
pub struct ErrorEnvelope {
    #[schema(schema_with = always_false)]
    success: bool,
    /// This request's id, as in the `X-Request-ID` header; the server log has the cause of an
    /// `internal_error` under it.
    request_id: String,
    error: ErrorBody,
}

/// What went wrong, in client terms (`{code, message, details}`; a job's `error` and a batch
/// item's `error` have this shape too).
#[derive(ToSchema)]
pub struct ErrorBody {
    code: ErrorCode,
    /// A short message written by the server (never a host path or a Rust error's text).
    message: String,
    /// Structured details: `field` for `missing_field`; `type`, `message`, `traceback`,
    /// `stdout`, `stderr`, `fuel_used`, `elapsed_ms`, `state_reset` (and `debug`) for a
    /// call's failure; `results` for a batch stopped by its `throw` strategy. Often `{}`.
    #[schema(value_type = Object)]
    details: serde_json::Value,
}

/// The refusals of the key check, added to every route behind it (where the check is
/// layered on, in `http::router`) rather than listed route by route.
#[derive(IntoResponses)]
pub enum KeyErrors {
    /// `missing_api_key` (tenants are declared and the request has no `X-API-Key`) or
    /// `invalid_api_key` (the key matches no tenant).
    #[response(status = 401)]
    Unauthorized(ErrorEnvelope),
    /// A quota is spent: `rate_limited` (the key's request rate) or `too_many_auth_failures`
    /// (this address sent too many bad keys) on every route; on the routes that use those
    /// quotas, `too_many_tools`, `too_many_calls`, `too_many_jobs`, `too_many_venvs` or
    /// `too_many_tasks`.
    #[response(
        status = 429,
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying (when the quota refills)"))
    )]
    TooMany(ErrorEnvelope),
    /// `internal_error`: a server fault; the cause is in the server log under the request id.
    #[response(status = 500)]
    Internal(ErrorEnvelope),
}

/// The refusals of reading a JSON body (every route that takes one).
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// `invalid_json` (empty or not JSON), `missing_field` (`details.field` names it) or
    /// `bad_request` (a wrong type, an unknown field, a bad name or value).
    #[response(status = 400)]
    BadRequest(ErrorEnvelope),
    /// `body_timeout`: the body did not arrive in time (answered with `Connection: close`).
    #[response(status = 408)]
    Timeout(ErrorEnvelope),
    /// `payload_too_large`: the body is over this key's `max_body_bytes` (answered with
    /// `Connection: close`).
    #[response(status = 413)]
    TooLarge(ErrorEnvelope),
}

/// What running something in one of the caller's tools can answer.
#[derive(IntoResponses)]
pub enum ToolErrors {
    /// `not_found`: no tool of the caller is loaded under that alias (another tenant's alias
    /// answers the same), or the tool has no such public function or name.
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// `tool_unloaded`: the tool was unloaded while the request ran or waited.
    #[response(status = 409)]
    Unloaded(ErrorEnvelope),
    /// The run failed: `python_exception`, `unserializable_result`, `output_limit`,
    /// `fuel_exhausted`, `deadline_exceeded`, `guest_crashed` or `guest_exited` (the last
    /// four replaced the instance: `details.state_reset`). The tool's error strategy may turn
    /// these into a `200` with `result: null` and a `warning`.
    #[response(status = 422)]
    Failed(ErrorEnvelope),
    /// `busy` (the tool's queue is full) or `overloaded` (the server is at capacity).
    #[response(
        status = 503,
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ErrorEnvelope),
}

/// What `load` and `reload` can answer beyond the body's refusals.
#[derive(IntoResponses)]
pub enum LoadErrors {
    /// `not_found`: no script of that name (`load`) or no tool under that alias (`reload`).
    #[response(status = 404)]
    NotFound(ErrorEnvelope),
    /// `alias_exists` (`load` with an alias in use) or `tool_unloaded`.
    #[response(status = 409)]
    Conflict(ErrorEnvelope),
    /// The import failed: `load_failed` (the script raised), or it ran out of its start
    /// budget (`fuel_exhausted`, `deadline_exceeded`), or the interpreter stopped
    /// (`guest_crashed`, `guest_exited`). A failed `reload` keeps the old instance. `load`
    /// only: `missing_requirements` (the tool's declared requirements are not in its
    /// sandbox), or an `installPackage` code when installing them automatically failed.
    #[response(status = 422)]
    Failed(ErrorEnvelope),
    /// `busy` or `overloaded`.
    #[response(
        status = 503,
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ErrorEnvelope),
}

/// What running code in a fresh sandbox (`executeWith*`) can answer.
#[derive(IntoResponses)]
pub enum FreshRunErrors {
    /// The run failed: `python_exception`, `unserializable_result`, `output_limit`,
    /// `fuel_exhausted`, `deadline_exceeded`, `guest_crashed` or `guest_exited`.
    #[response(status = 422)]
    Failed(ErrorEnvelope),
    /// `overloaded`: the server is at capacity.
    #[response(
        status = 503,
        headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ErrorEnvelope),
}
