//! `GET /python/getMemoryUsage`, `/python/optimizeMemory`, `/python/clearUnusedResources`:
//! memory seen from both sides of the sandbox, per tool of the caller.
//!
//! Linear memory is measured by the host and never shrinks, so it is also the instance's
//! peak. The Python side reports the objects the collector tracks and their sizes (this
//! interpreter's allocator keeps no block counts). An evicted tool (no instance) reports `null`s and is not restarted just
//! to be measured.

use std::time::Duration;

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::answer::{call_result, registry_error};
use super::auth::{Authed, Caller};
use super::body::OptionalJsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorBody};
use crate::protocol::Op;
use crate::tenants::Tenant;

/// One tool's memory (`null`s for an evicted tool, which is not restarted to be measured).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ToolMemory {
    alias: String,
    /// Linear memory in bytes: the wasm heap's current size and peak (it never shrinks).
    linear_memory_bytes: Option<usize>,
    /// Python's view (`gc_objects`, `gc_tracked_bytes`, `gc_frozen_objects`), or the collection's result for
    /// `optimizeMemory` (`unreachable_collected`, `gc_objects_before`, `gc_objects_after`).
    #[schema(value_type = Option<Object>)]
    python: Option<Value>,
    /// Why the tool could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorBody>)]
    error: Option<Value>,
}

/// What `getMemoryUsage` and `optimizeMemory` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MemoryData {
    tools: Vec<ToolMemory>,
    total_linear_memory_bytes: usize,
}

/// Runs `op` in each of the caller's tools that has an instance.
async fn per_tool(tenant: &Tenant, op: &Op) -> MemoryData {
    let mut data = MemoryData {
        tools: Vec::new(),
        total_linear_memory_bytes: 0,
    };
    for tool in tenant.registry.list() {
        let alias = tool.alias;
        let linear = tenant.registry.linear_memory(&alias).await.ok().flatten();
        let mut entry = ToolMemory {
            alias: alias.clone(),
            linear_memory_bytes: linear,
            python: None,
            error: None,
        };
        if linear.is_some() {
            let answer = match tenant.registry.run(&alias, op.clone()).await {
                Ok(report) => call_result(report, &alias, "the memory report"),
                Err(err) => Err(registry_error(&tenant.id, err)),
            };
            match answer {
                Ok(super::envelope::Data(call)) => {
                    entry.python = serde_json::from_str(call.result.get()).ok();
                }
                Err(err) => entry.error = Some(err.public_json()),
            }
        }
        data.total_linear_memory_bytes += linear.unwrap_or(0);
        data.tools.push(entry);
    }
    data
}

/// Memory of each of the caller's tools.
///
/// `GET /python/getMemoryUsage`: linear memory measured by the host, and the objects
/// Python's collector tracks.
#[utoipa::path(
    get,
    path = "/getMemoryUsage",
    responses((status = 200, description = "Each tool's memory", body = Envelope<MemoryData>))
)]
pub async fn usage(Extension(Caller(tenant)): Authed) -> Success<MemoryData> {
    Success(per_tool(&tenant, &Op::MemoryStats).await)
}

/// Run a full garbage collection in each of the caller's tools.
///
/// `POST /python/optimizeMemory`: a full garbage collection in each instance, reporting
/// what it found and the tracked objects before and after. (Linear memory does not
/// shrink; `clearUnusedResources` gives it back by dropping idle instances.) Takes no body;
/// one sent is ignored.
#[utoipa::path(
    post,
    path = "/optimizeMemory",
    responses((status = 200, description = "Each tool's collection", body = Envelope<MemoryData>))
)]
pub async fn optimize(Extension(Caller(tenant)): Authed) -> Success<MemoryData> {
    Success(per_tool(&tenant, &Op::Collect).await)
}

/// `clearUnusedResources`'s body (optional).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClearBody {
    /// Evict tools idle at least this long (seconds).
    idle_s: u64,
}

impl Default for ClearBody {
    fn default() -> Self {
        Self { idle_s: 300 }
    }
}

/// What `clearUnusedResources` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Cleared {
    idle_s: u64,
    /// The tools whose instances were dropped.
    evicted: Vec<String>,
}

/// Drop the instances of idle tools.
///
/// `POST /python/clearUnusedResources {idle_s?}` (body optional, `idle_s` 300 by default,
/// at most a week): drops the instances of tools idle that long, giving their memory back;
/// each restarts on its next call with its state reset and its live objects lost.
#[utoipa::path(
    post,
    path = "/clearUnusedResources",
    request_body(content = Option<ClearBody>, description = "Optional: an empty body is `{}` (`idle_s` 300)"),
    responses(
        (status = 200, description = "The idle tools' instances are dropped", body = Envelope<Cleared>),
        BodyErrors
    )
)]
pub async fn clear_unused(
    Extension(Caller(tenant)): Authed,
    OptionalJsonBody(body): OptionalJsonBody<ClearBody>,
) -> Result<Success<Cleared>, ApiError> {
    if body.idle_s > 7 * 24 * 3600 {
        return Err(ApiError::bad_request("idle_s may be at most a week"));
    }
    let evicted = tenant
        .registry
        .evict_idle(Duration::from_secs(body.idle_s))
        .await;
    Ok(Success(Cleared {
        idle_s: body.idle_s,
        evicted,
    }))
}
