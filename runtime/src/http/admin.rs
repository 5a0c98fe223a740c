//! `/admin/*`: routes for the `admin` role only.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use serde::Serialize;

use super::audit;
use super::auth::{Caller, require_admin};
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{ErrorEnvelope, RoleSchema};
use crate::config::Role;
use crate::tenants::Tenants;

/// One tenant, for administrators.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantSummary {
    id: String,
    #[schema(value_type = RoleSchema)]
    role: Role,
    /// Its loaded tools.
    tools: usize,
    calls_in_flight: usize,
}

/// List every tenant (administrators only).
///
/// `GET /admin/tenants`: every tenant with its loaded tools and calls in flight.
#[utoipa::path(
    get,
    path = "/tenants",
    responses(
        (status = 200, description = "Every tenant", body = Envelope<Vec<TenantSummary>>),
        (status = 403, description = "`forbidden`: the key is not an administrator's", body = ErrorEnvelope)
    )
)]
pub async fn tenants(
    State(tenants): State<Arc<Tenants>>,
    Extension(caller): Extension<Caller>,
) -> Result<Success<Vec<TenantSummary>>, ApiError> {
    require_admin(&caller)?;
    audit::admin_action(&caller.0.id, "list_tenants");
    Ok(Success(
        tenants
            .all()
            .map(|t| TenantSummary {
                id: t.id.clone(),
                role: t.role,
                tools: t.registry.list().len(),
                calls_in_flight: t.registry.calls_in_flight(),
            })
            .collect(),
    ))
}
