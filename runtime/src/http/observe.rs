//! Watching the server: `GET /metrics` (Prometheus text, administrators), `GET /usage` (the
//! caller's own usage), `GET /admin/usage` (everyone's, with the node's state) and the
//! operator's page, `GET /admin/dashboard`; and the middleware that counts requests by
//! route. The counters themselves are [`crate::metrics`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::{Authed, Caller, require_admin};
use super::envelope::Data as Success;
use super::error::ApiError;
use crate::metrics::usage::{Bucket, TenantUsage};
use crate::metrics::{Metrics, Snapshot, TenantGauges};

/// The route template a request matched, put on its response for [`count_requests`].
#[derive(Clone)]
struct Route(MatchedPath);

/// Route layer: remembers which route template answered.
pub async fn mark_route(request: Request, next: Next) -> Response {
    // A clone of the matched path is a reference count, not a copy.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// Outer layer: counts each answered request by route template (`_unmatched` for a path no
/// route has: the raw path never becomes a label) and status.
pub async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<Route>()
        .map_or("_unmatched", |route| route.0.as_str());
    metrics.count_request(route, response.status().as_u16());
    response
}

/// The node's state at this moment, for the gauges and `/admin/usage`.
async fn snapshot(state: &AppState) -> Snapshot {
    let tenants = state
        .tenants
        .all()
        .iter()
        .map(|tenant| TenantGauges {
            tenant: tenant.id.clone(),
            tools_loaded: tenant.registry.list().len() as i64,
            scratch_bytes: i64::try_from(tenant.registry.scratch_bytes()).unwrap_or(i64::MAX),
            calls_in_flight: tenant.registry.calls_in_flight() as i64,
        })
        .collect();
    let tasks = match state.store.task_states().await {
        Ok(tasks) => tasks,
        Err(err) => {
            tracing::warn!(cause = %err, "metrics: could not count tasks");
            Vec::new()
        }
    };
    let shared = &state.shared;
    Snapshot {
        tenants,
        pool_ready: shared
            .warm_total
            .saturating_sub(shared.warm.available_permits()) as i64,
        instances_started: state.sandbox.instances_started(),
        tasks,
        images: images_name(state.sandbox.images_state()),
        store_errors: crate::metrics::store_errors(),
    }
}

fn images_name(state: crate::sandbox::ImagesState) -> &'static str {
    use crate::sandbox::ImagesState;
    match state {
        ImagesState::Off => "off",
        ImagesState::Preparing => "preparing",
        ImagesState::Ready => "ready",
        ImagesState::Failed => "failed",
    }
}

/// The server's metrics in the Prometheus text format (administrators only).
///
/// `GET /metrics`: counters (requests by route and status; calls by tenant, tool and
/// outcome; instances respawned; isolated-pool misses; capped series), histograms (call
/// time by mode, fuel per call) and gauges read at the scrape (tools loaded, scratch bytes
/// and calls in flight per tenant, pool size, instances started, tasks by state, image
/// state, store errors). docs/observability.md lists every series.
#[utoipa::path(
    get,
    path = "/metrics",
    responses(
        (status = 200, description = "The metrics, `text/plain; version=0.0.4`", body = String, content_type = "text/plain"),
        (status = 403, description = "`forbidden`: the key is not an administrator's", body = super::openapi::ErrorEnvelope)
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    axum::Extension(caller): Authed,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let text = state.shared.metrics.render(&snapshot(&state).await);
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The caller's usage since the server started and over the last hour.
///
/// `GET /usage`: calls, fuel, CPU milliseconds, bytes out (results and output) and errors
/// by kind, on this node, with the same per tool. What a host bills or throttles by.
#[utoipa::path(
    get,
    path = "/usage",
    operation_id = "tenant_usage",
    responses((status = 200, description = "The caller's usage", body = super::envelope::Envelope<Object>))
)]
pub async fn usage(
    State(state): State<AppState>,
    axum::Extension(Caller(tenant)): Authed,
) -> Success<TenantUsage> {
    Success(state.shared.metrics.usage.tenant(&tenant.id))
}

/// One tenant in `/admin/usage`.
#[derive(Serialize)]
pub struct TenantRow {
    #[serde(flatten)]
    usage: TenantUsage,
    tools_loaded: usize,
    calls_in_flight: usize,
    /// The loaded tools' aliases.
    aliases: Vec<String>,
}

/// What `/admin/usage` answers.
#[derive(Serialize)]
pub struct NodeUsage {
    node: String,
    /// Unix seconds when this node started counting.
    started_at: u64,
    tenants: Vec<TenantRow>,
    /// The node's calls in 10-second buckets, last ten minutes, oldest first.
    recent: Vec<Bucket>,
    pool: PoolState,
    images: &'static str,
    /// Tasks in the store by state (every node's).
    tasks: BTreeMap<String, i64>,
    instances_started: u64,
}

#[derive(Serialize)]
struct PoolState {
    ready: i64,
    capacity: usize,
}

/// Every tenant's usage and the node's state (administrators only).
///
/// `GET /admin/usage`: per tenant the `/usage` figures with its loaded tools and calls in
/// flight; the node's recent calls (calls, errors, p50/p99 per 10 s); pool, images, tasks.
#[utoipa::path(
    get,
    path = "/admin/usage",
    operation_id = "admin_usage",
    responses(
        (status = 200, description = "Every tenant's usage", body = super::envelope::Envelope<Object>),
        (status = 403, description = "`forbidden`: the key is not an administrator's", body = super::openapi::ErrorEnvelope)
    )
)]
pub async fn admin_usage(
    State(state): State<AppState>,
    axum::Extension(caller): Authed,
) -> Result<Success<NodeUsage>, ApiError> {
    require_admin(&caller)?;
    let snap = snapshot(&state).await;
    let metrics = &state.shared.metrics;
    let tenants = state
        .tenants
        .all()
        .iter()
        .map(|tenant| {
            let aliases: Vec<String> = tenant
                .registry
                .list()
                .into_iter()
                .map(|tool| tool.alias)
                .collect();
            TenantRow {
                usage: metrics.usage.tenant(&tenant.id),
                tools_loaded: aliases.len(),
                calls_in_flight: tenant.registry.calls_in_flight(),
                aliases,
            }
        })
        .collect::<Vec<_>>();
    let mut tenants = tenants;
    tenants.sort_by(|a, b| a.usage.tenant.cmp(&b.usage.tenant));
    Ok(Success(NodeUsage {
        node: state.store.node().to_owned(),
        started_at: metrics.usage.started(),
        tenants,
        recent: metrics.usage.recent(),
        pool: PoolState {
            ready: snap.pool_ready,
            capacity: state.shared.warm_total,
        },
        images: snap.images,
        tasks: snap.tasks.into_iter().collect(),
        instances_started: snap.instances_started,
    }))
}

/// The operator's page: one self-contained HTML file (no external resource; the admin key
/// is typed into the page and kept in its memory only).
const DASHBOARD: &str = include_str!("dashboard.html");

/// The operator's page.
///
/// `GET /admin/dashboard`: a self-contained HTML page (needs no key to fetch; the admin key
/// is typed into the page, which then reads `/admin/usage` every few seconds).
#[utoipa::path(
    get,
    path = "/admin/dashboard",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
pub async fn dashboard() -> Response {
    (
        StatusCode::OK,
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // Nothing but the page itself and its own origin's JSON.
            (
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                ),
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}
