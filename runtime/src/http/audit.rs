//! Audit events: structured tracing under the `scriptbox::audit` target, each with the
//! request id and, once known, the tenant id. Never keys, never request bodies.

use std::net::IpAddr;

use super::envelope::current_request_id;
use crate::tenants::AuthError;

const TARGET: &str = "scriptbox::audit";

pub fn auth_failed(err: AuthError, client: IpAddr) {
    let reason = match err {
        AuthError::MissingKey => "missing_api_key",
        AuthError::InvalidKey => "invalid_api_key",
        AuthError::LockedOut { .. } => "locked_out",
    };
    tracing::warn!(target: TARGET, event = "auth_failed", reason, %client, request_id = %current_request_id());
}

pub fn limit_hit(tenant: &str, code: &str) {
    tracing::info!(target: TARGET, event = "limit_hit", tenant, code, request_id = %current_request_id());
}

pub fn forbidden(tenant: &str, what: &str) {
    tracing::warn!(target: TARGET, event = "forbidden", tenant, what, request_id = %current_request_id());
}

pub fn tool_event(tenant: &str, event: &'static str, alias: &str) {
    tracing::info!(target: TARGET, event, tenant, alias, request_id = %current_request_id());
}

pub fn admin_action(tenant: &str, action: &str) {
    tracing::info!(target: TARGET, event = "admin_action", tenant, action, request_id = %current_request_id());
}
