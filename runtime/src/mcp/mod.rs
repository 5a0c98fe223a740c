//! The MCP endpoint: `POST /mcp` (and `GET`, `DELETE`) speaking the Model Context Protocol's
//! streamable-HTTP transport through the official Rust SDK (`rmcp`). An edge beside
//! [`crate::http`], over the same tenants.
//!
//! * **Auth**: the tenant's key, as `Authorization: Bearer KEY` or `X-API-Key`, on every
//!   request (401 without it, 429 past the tenant's request rate); a request sees only its
//!   tenant's tools.
//! * **Sessions** (for clients of the session protocol versions; `notifications/cancelled`
//!   reaches its request through one): a session belongs to the tenant that opened it;
//!   another tenant's key with its id is answered 404, and a tenant has at most
//!   [`MAX_SESSIONS`] (a new one closes its oldest). Idle sessions close after 5 minutes.
//! * **`tools/list`**: every function of every tool the tenant has loaded, named
//!   `alias.function`, with an input schema derived from the Python signature
//!   ([`schema`]), the docstring as description and an output schema when the return
//!   annotation allows; and `run_python` (code in a fresh isolated sandbox), unless the
//!   tenant's `policy.mcp_run_python` is off.
//! * **`tools/call`**: exactly a `/python/call` (the tool's limits, the tenant's quotas); a
//!   sandbox limit is a tool error (`isError: true`) that names it (fuel, deadline, memory,
//!   output), never a protocol error. `notifications/cancelled` stops the call (the job is
//!   cancelled and the guest stopped, as at a deadline). A call with a progress token gets
//!   the guest's output as progress notifications while it runs ([`notify`]).
//! * **`notifications/tools/list_changed`** when the tenant loads, unloads or reloads a tool
//!   (on a session's `GET /mcp` stream, or a 2026-07-28 client's `subscriptions/listen`).

mod notify;
pub mod schema;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{
    SessionManager as _, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use crate::protocol::{GuestErrorKind, Op};
use crate::registry::CallReport;
use crate::sandbox::{Fault, Outcome};
use crate::tenants::{Tenant, Tenants};

/// The built-in tool's name.
pub const RUN_PYTHON: &str = "run_python";
/// Largest request body (a `tools/call` with its arguments).
const MAX_BODY: usize = 1 << 20;

/// Open MCP sessions per tenant, at most; a new one past it closes the tenant's oldest.
pub const MAX_SESSIONS: usize = 32;

/// Which tenant opened each session (a session is its tenant's only), oldest first per
/// tenant.
#[derive(Default)]
struct Sessions {
    owner: std::collections::HashMap<String, String>,
    by_tenant: std::collections::HashMap<String, std::collections::VecDeque<String>>,
}

type SharedSessions = Arc<std::sync::Mutex<Sessions>>;

fn lock(sessions: &SharedSessions) -> std::sync::MutexGuard<'_, Sessions> {
    sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `/mcp` routes, each request behind the key check.
pub fn router(tenants: Arc<Tenants>) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        // Every request must carry a tenant's key, which a DNS-rebinding page does not have;
        // behind a proxy the Host is the proxy's choice.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MAX_BODY);
    let manager = Arc::new(LocalSessionManager::default());
    let service =
        StreamableHttpService::new(|| Ok(Handler::default()), Arc::clone(&manager), config);
    let sessions = SharedSessions::default();
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(move |request, next| {
            authenticate(
                Arc::clone(&tenants),
                Arc::clone(&sessions),
                Arc::clone(&manager),
                request,
                next,
            )
        }))
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// The key from `Authorization: Bearer` or `X-API-Key`.
fn key_of(request: &Request) -> Option<Vec<u8>> {
    let headers = request.headers();
    if let Some(value) = headers.get("authorization") {
        let bytes = value.as_bytes();
        return Some(bytes.strip_prefix(b"Bearer ").unwrap_or(bytes).to_vec());
    }
    headers.get("x-api-key").map(|v| v.as_bytes().to_vec())
}

async fn authenticate(
    tenants: Arc<Tenants>,
    sessions: SharedSessions,
    manager: Arc<LocalSessionManager>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(a)| a.ip());
    let key = key_of(&request);
    let tenant = match tenants.authenticate(key.as_deref(), ip) {
        Ok(tenant) => tenant,
        Err(err) => {
            tracing::info!(target: "scriptbox::audit", event = "auth_failed", route = "/mcp", %ip);
            return refusal(StatusCode::UNAUTHORIZED, "unauthorized", &err.to_string());
        }
    };
    if tenant.check_rate().is_err() {
        let message = "this key's request rate is over its quota";
        return refusal(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    }
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Another tenant's session answers as one that does not exist.
    if let Some(id) = &session
        && lock(&sessions)
            .owner
            .get(id)
            .is_some_and(|owner| *owner != tenant.id)
    {
        return refusal(StatusCode::NOT_FOUND, "not_found", "no such MCP session");
    }
    let closing = request.method() == axum::http::Method::DELETE;
    let owner = tenant.id.clone();
    request.extensions_mut().insert(Caller(tenant));
    let response = next.run(request).await;
    if closing && let Some(id) = session {
        forget(&sessions, &id);
    } else if session.is_none()
        && let Some(id) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        let oldest = remember(&sessions, &owner, id);
        if let Some(oldest) = oldest {
            tracing::info!(tenant = %owner, "mcp: the tenant's oldest session closed (over {MAX_SESSIONS})");
            let _ = manager.close_session(&oldest.into()).await;
        }
    }
    response
}

const SESSION_HEADER: &str = "mcp-session-id";

/// Records `tenant`'s new session; the oldest one to close if it has too many now.
fn remember(sessions: &SharedSessions, tenant: &str, id: &str) -> Option<String> {
    let mut sessions = lock(sessions);
    sessions.owner.insert(id.to_owned(), tenant.to_owned());
    let queue = sessions.by_tenant.entry(tenant.to_owned()).or_default();
    queue.push_back(id.to_owned());
    let oldest = (queue.len() > MAX_SESSIONS)
        .then(|| queue.pop_front())
        .flatten();
    if let Some(oldest) = &oldest {
        sessions.owner.remove(oldest);
    }
    oldest
}

fn forget(sessions: &SharedSessions, id: &str) {
    let mut sessions = lock(sessions);
    if let Some(tenant) = sessions.owner.remove(id)
        && let Some(queue) = sessions.by_tenant.get_mut(&tenant)
    {
        queue.retain(|s| s != id);
    }
}

/// The authenticated tenant, on the request's extensions.
#[derive(Clone)]
struct Caller(Arc<Tenant>);

/// The MCP server of one session (or one sessionless request): the tenant is read from each
/// request; what it keeps is the session's watcher of list changes, stopped when it goes.
#[derive(Default)]
struct Handler {
    watcher: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let watcher = self
            .watcher
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(watcher) = watcher.take() {
            watcher.abort();
        }
    }
}

fn tenant_in(extensions: &rmcp::model::Extensions) -> Result<Arc<Tenant>, McpError> {
    extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .map(|Caller(tenant)| Arc::clone(tenant))
        .ok_or_else(|| McpError::internal_error("no tenant on the request", None))
}

fn tenant_of(context: &RequestContext<RoleServer>) -> Result<Arc<Tenant>, McpError> {
    tenant_in(&context.extensions)
}

fn text_error(text: impl Into<String>) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(text.into())]).into()
}

impl ServerHandler for Handler {
    fn get_info(&self) -> InitializeResult {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        InitializeResult::new(capabilities)
            .with_server_info(Implementation::new("scriptbox", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool is a function of a Python tool the tenant loaded, named alias.function; \
                 run_python runs code in a fresh sandbox. Calls run under the tool's limits.",
            )
    }

    /// A session's client is ready: from now on it hears of the tenant's tool changes.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let Ok(tenant) = tenant_in(&context.extensions) else {
            return;
        };
        let peer = context.peer;
        let closed = peer.clone();
        let watch = notify::list_changes(
            tenant.registry.tool_changes(),
            move || closed.is_transport_closed(),
            move || {
                let peer = peer.clone();
                async move { peer.notify_tool_list_changed().await.is_ok() }
            },
        );
        let task = tokio::spawn(watch).abort_handle();
        let mut watcher = self
            .watcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(previous) = watcher.replace(task) {
            previous.abort();
        }
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    /// A 2026-07-28 client's `subscriptions/listen`: list changes until it cancels.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let tenant = tenant_of(context.request_context())?;
        if context.accepted().tools_list_changed != Some(true) {
            context.cancelled().await;
            return Ok(());
        }
        let sink = context.sink().clone();
        let watch = notify::list_changes(
            tenant.registry.tool_changes(),
            || false,
            move || {
                let sink = sink.clone();
                async move { sink.notify_tool_list_changed().await.is_ok() }
            },
        );
        tokio::select! {
            () = watch => {}
            () = context.cancelled() => {}
        }
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tenant = tenant_of(&context)?;
        let mut tools = Vec::new();
        for info in tenant.registry.list() {
            match describe(&tenant, &info.alias).await {
                Ok(mut described) => tools.append(&mut described),
                Err(why) => {
                    tracing::info!(tenant = %tenant.id, alias = %info.alias, %why, "mcp: tool not listed")
                }
            }
        }
        if tenant.policy.mcp_run_python {
            tools.push(run_python_tool());
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let tenant = tenant_of(&context)?;
        let arguments = request.arguments.unwrap_or_default();
        if request.name.len() > 200 {
            return Ok(text_error(
                "unknown tool (a tool name is at most 200 bytes)",
            ));
        }
        let token = context.meta.get_progress_token();
        let call = notify::with_progress(&context.peer, token, |stream| async {
            if request.name == RUN_PYTHON {
                return run_python(&tenant, arguments, stream).await;
            }
            let Some((alias, function)) = request.name.split_once('.') else {
                return text_error(format!("unknown tool {:?}", request.name));
            };
            let kwargs = match serde_json::value::to_raw_value(&arguments) {
                Ok(raw) => raw,
                Err(_) => return text_error("the arguments could not be read"),
            };
            let args = crate::protocol::empty_array();
            match tenant
                .registry
                .call_watched(alias, function, args, kwargs, stream)
                .await
            {
                Ok(report) => answer(report),
                Err(err) => text_error(format!("{}: {err}", request.name)),
            }
        });
        // A cancelled request drops the call, which cancels its job and stops the guest.
        tokio::select! {
            answer = call => Ok(answer),
            () = context.ct.cancelled() => Ok(text_error("cancelled")),
        }
    }
}

/// A tool's functions as MCP tools.
async fn describe(tenant: &Tenant, alias: &str) -> Result<Vec<Tool>, String> {
    let report = tenant
        .registry
        .run(alias, Op::Exports)
        .await
        .map_err(|e| e.to_string())?;
    let Outcome::Answered {
        result: Some(result),
        error: None,
        ..
    } = report.outcome
    else {
        return Err("the tool's discovery failed".to_owned());
    };
    let exports: Value = serde_json::from_str(result.get()).map_err(|e| e.to_string())?;
    let functions = exports["functions"].as_array().cloned().unwrap_or_default();
    Ok(functions
        .iter()
        .filter_map(|f| {
            let name = f["name"].as_str()?;
            let parameters = f["parameters"].as_array().cloned().unwrap_or_default();
            let description = f["doc"]
                .as_str()
                .map_or_else(|| format!("{alias}.{name}"), str::to_owned);
            let mut tool = Tool::new(
                format!("{alias}.{name}"),
                description,
                Arc::new(schema::input(&parameters)),
            );
            if let Some(output) = schema::output(f["returns"].as_str()) {
                tool = tool.with_raw_output_schema(Arc::new(output));
            }
            Some(tool)
        })
        .collect())
}

fn run_python_tool() -> Tool {
    let input = json!({"type": "object", "properties": {
        "code": {"type": "string", "description": "Python statements; the value of a final expression (or of `result`) is returned"},
        "args": {"description": "any JSON value, bound as the variable `args`"}},
        "required": ["code"], "additionalProperties": false});
    let Value::Object(input) = input else {
        unreachable!("an object literal")
    };
    Tool::new(
        RUN_PYTHON,
        "Run Python code in a fresh, isolated sandbox (no network, bounded fuel, time, memory \
         and output) and return its result.",
        Arc::new(input),
    )
}

async fn run_python(
    tenant: &Tenant,
    mut arguments: Map<String, Value>,
    stream: Option<crate::sandbox::OutputSink>,
) -> CallToolResponse {
    let Some(Value::String(code)) = arguments.remove("code") else {
        return text_error("run_python needs `code`, a string");
    };
    if code.len() > 256 << 10 {
        return text_error("`code` may be at most 256 KiB");
    }
    if let Some(other) = arguments.keys().find(|k| *k != "args") {
        return text_error(format!("run_python takes `code` and `args`, not {other:?}"));
    }
    let args = arguments.remove("args").unwrap_or(Value::Null);
    let Ok(args) = serde_json::value::to_raw_value(&args) else {
        return text_error("`args` could not be read");
    };
    let op = Op::Run { code, args };
    match tenant
        .registry
        .run_fresh_watched(crate::protocol::SCRATCH_MODULE, op, None, stream)
        .await
    {
        Ok(report) => answer(report),
        Err(err) => text_error(format!("run_python: {err}")),
    }
}

/// A call's answer as an MCP result: the value (structured, and as text), or a tool error
/// that names the limit that stopped it.
fn answer(report: CallReport) -> CallToolResponse {
    match report.outcome {
        Outcome::Answered {
            result,
            error: None,
            stdout,
            ..
        } => {
            let value: Value = result
                .and_then(|r| serde_json::from_str(r.get()).ok())
                .unwrap_or(Value::Null);
            let mut content = vec![ContentBlock::text(value.to_string())];
            if !stdout.is_empty() {
                content.push(ContentBlock::text(format!("stdout:\n{stdout}")));
            }
            let mut result = CallToolResult::success(content);
            result.structured_content = Some(json!({ "result": value }));
            result.into()
        }
        Outcome::Answered {
            error: Some(error),
            memory_capped,
            ..
        } => {
            let text = match error.kind {
                _ if memory_capped || error.exc_type.as_deref() == Some("MemoryError") => {
                    "memory: the call ran out of the tool's memory (limits.memory_bytes)".to_owned()
                }
                GuestErrorKind::OutputLimit => format!("output: {}", error.message),
                GuestErrorKind::PythonException => format!(
                    "{}: {}",
                    error.exc_type.as_deref().unwrap_or("Exception"),
                    error.message
                ),
                _ => error.message,
            };
            text_error(text)
        }
        Outcome::Faulted { fault, .. } => text_error(match fault {
            Fault::FuelExhausted => "fuel: the call used up its fuel budget (limits.fuel)",
            Fault::DeadlineExceeded => {
                "deadline: the call passed its deadline (limits.deadline_ms)"
            }
            Fault::OutputLimit => {
                "output: the call's response passed its cap (limits.output_bytes)"
            }
            Fault::Cancelled => "cancelled",
            Fault::Exited(_) | Fault::Trapped(_) => {
                "memory or trap: the tool's interpreter stopped (state reset)"
            }
            Fault::Protocol(_) => "the tool broke the host protocol (state reset)",
        }),
    }
}
