//! Audit events: structured tracing under the `scriptbox::audit` target, each with the
//! request id and, once known, the tenant id, and the same event recorded in the store's
//! audit log (`GET /admin/audit`). Never keys, never request bodies.
//!
//! The node's [`AuditLog`] reaches the event functions as a task-local set by [`scope`],
//! the outermost middleware, so that a refusal before any handler is recorded too.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use super::AppState;
use super::envelope::current_request_id;
use crate::store::audit::{AuditEntry, AuditLog};
use crate::tenants::AuthError;

const TARGET: &str = "scriptbox::audit";

tokio::task_local! {
    static LOG: AuditLog;
}

/// Middleware: the request's audit events go to the node's audit log.
pub async fn scope(State(state): State<AppState>, request: Request, next: Next) -> Response {
    LOG.scope(state.audit.clone(), next.run(request)).await
}

/// `future` run with the current request's audit log: for work the response body polls
/// after the handler returned (a streamed call).
pub fn carry_log<F: std::future::Future>(
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    match LOG.try_with(Clone::clone) {
        Ok(log) => futures_util::future::Either::Left(LOG.scope(log, future)),
        Err(_) => futures_util::future::Either::Right(future),
    }
}

fn record(tenant: &str, event: &str, mut detail: serde_json::Value) {
    detail["request_id"] = json!(current_request_id());
    let entry = AuditEntry {
        at: crate::store::now(),
        tenant: tenant.to_owned(),
        event: event.to_owned(),
        detail: detail.to_string(),
    };
    let _ = LOG.try_with(|log| log.record(entry));
}

pub fn auth_failed(err: AuthError, client: IpAddr) {
    let reason = match err {
        AuthError::MissingKey => "missing_api_key",
        AuthError::InvalidKey => "invalid_api_key",
        AuthError::LockedOut { .. } => "locked_out",
    };
    tracing::warn!(target: TARGET, event = "auth_failed", reason, %client, request_id = %current_request_id());
    record(
        "",
        "auth_failed",
        json!({"reason": reason, "client": client.to_string()}),
    );
}

pub fn limit_hit(tenant: &str, code: &str) {
    tracing::info!(target: TARGET, event = "limit_hit", tenant, code, request_id = %current_request_id());
    record(tenant, "limit_hit", json!({"code": code}));
}

pub fn forbidden(tenant: &str, what: &str) {
    tracing::warn!(target: TARGET, event = "forbidden", tenant, what, request_id = %current_request_id());
    record(tenant, "forbidden", json!({"what": what}));
}

pub fn tool_event(tenant: &str, event: &'static str, alias: &str) {
    tracing::info!(target: TARGET, event, tenant, alias, request_id = %current_request_id());
    record(tenant, event, json!({"name": alias}));
}

pub fn admin_action(tenant: &str, action: &str) {
    tracing::info!(target: TARGET, event = "admin_action", tenant, action, request_id = %current_request_id());
    record(tenant, "admin_action", json!({"action": action}));
}
