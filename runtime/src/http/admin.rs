//! `/admin/*`: routes for the `admin` role only.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::audit;
use super::auth::{Caller, require_admin};
use super::body::JsonBody;
use super::envelope::{Data as Success, DataWith, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorEnvelope, RoleSchema};
use crate::config::Role;
use crate::tenants::{
    AdminError, IssuedKey, KeyInfo, MAX_KEYS, NewTenant, Origin, Tenant, Tenants,
};

/// One tenant, for administrators.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantSummary {
    id: String,
    #[schema(value_type = RoleSchema)]
    role: Role,
    /// `config` (declared in the config file: read-only here) or `api` (made through
    /// `POST /admin/tenants`).
    #[schema(value_type = String)]
    origin: Origin,
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
    Ok(Success(tenants.all().iter().map(|t| summary(t)).collect()))
}

/// Maps an admin refusal to its answer.
fn admin_error(err: AdminError) -> ApiError {
    match err {
        AdminError::BadSpec(why) => ApiError::bad_request(why),
        AdminError::Exists => ApiError::new(
            StatusCode::CONFLICT,
            "tenant_exists",
            "a tenant of that id exists",
        ),
        AdminError::NotFound => ApiError::not_found("no tenant of that id"),
        AdminError::KeyNotFound => ApiError::not_found("no key of that id for the tenant"),
        AdminError::ReadOnly => ApiError::new(
            StatusCode::CONFLICT,
            "read_only_tenant",
            "the tenant is declared in the config file; change it there",
        ),
        AdminError::TooManyKeys => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_keys",
            format!("a tenant may hold at most {MAX_KEYS} keys; revoke one first"),
        ),
        AdminError::TooManyTenants => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_tenants",
            "the server already holds its maximum of tenants made through the API",
        ),
        other @ (AdminError::Setup(_) | AdminError::Store(_)) => ApiError::internal(other),
    }
}

/// What creating a tenant answers: the tenant, and its key, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Created {
    tenant: TenantSummary,
    key: IssuedKey,
}

/// A tenant id in the path.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct TenantPath {
    /// The tenant's id.
    id: String,
}

/// A tenant id and key id in the path.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct KeyPath {
    /// The tenant's id.
    id: String,
    /// The key's id (`key_...`), as listed.
    key_id: String,
}

fn summary(tenant: &Tenant) -> TenantSummary {
    TenantSummary {
        id: tenant.id.clone(),
        role: tenant.role,
        origin: tenant.origin,
        tools: tenant.registry.list().len(),
        calls_in_flight: tenant.registry.calls_in_flight(),
    }
}

/// Create a tenant (administrators only).
///
/// `POST /admin/tenants {id, role?, quotas?, policy?, limits?, default_limits?}`: the tenant,
/// recorded in the store, with a generated API key shown this once (only its SHA-256 is
/// kept). Absent quotas get the defaults.
#[utoipa::path(
    post,
    path = "/tenants",
    request_body = NewTenant,
    responses(
        (status = 201, description = "The tenant and its first key", body = Envelope<Created>),
        BodyErrors,
        (status = 403, description = "`forbidden`: the key is not an administrator's", body = ErrorEnvelope),
        (status = 409, description = "`tenant_exists`", body = ErrorEnvelope),
        (status = 429, description = "`too_many_tenants`", body = ErrorEnvelope)
    )
)]
pub async fn create_tenant(
    State(tenants): State<Arc<Tenants>>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<NewTenant>,
) -> Result<DataWith<Created>, ApiError> {
    require_admin(&caller)?;
    let (tenant, key) = tenants.create(body).await.map_err(admin_error)?;
    audit::admin_action(&caller.0.id, "create_tenant");
    Ok(DataWith(
        StatusCode::CREATED,
        Created {
            tenant: summary(&tenant),
            key,
        },
    ))
}

/// Delete a tenant made through the API (administrators only).
///
/// Its keys stop working at once; its tools are unloaded, its running tasks cancelled, and
/// its scripts, packages, jobs, tasks, scratch and logs removed.
#[utoipa::path(
    delete,
    path = "/tenants/{id}",
    params(TenantPath),
    responses(
        (status = 200, description = "Deleted", body = Envelope<TenantSummary>),
        (status = 403, description = "`forbidden`", body = ErrorEnvelope),
        (status = 404, description = "`not_found`", body = ErrorEnvelope),
        (status = 409, description = "`read_only_tenant`: declared in the config file", body = ErrorEnvelope)
    )
)]
pub async fn delete_tenant(
    State(tenants): State<Arc<Tenants>>,
    Extension(caller): Extension<Caller>,
    Extension(tasks): Extension<Arc<crate::tasks::Service>>,
    Path(TenantPath { id }): Path<TenantPath>,
) -> Result<Success<TenantSummary>, ApiError> {
    require_admin(&caller)?;
    let gone = summary(
        &*tenants
            .get(&id)
            .ok_or_else(|| admin_error(AdminError::NotFound))?,
    );
    tenants.delete(&id).await.map_err(admin_error)?;
    tasks.cancel_all(&id).await;
    audit::admin_action(&caller.0.id, "delete_tenant");
    Ok(Success(gone))
}

/// Give a tenant made through the API another key (administrators only), for rotation.
#[utoipa::path(
    post,
    path = "/tenants/{id}/keys",
    params(TenantPath),
    responses(
        (status = 201, description = "The new key, shown this once", body = Envelope<IssuedKey>),
        (status = 403, description = "`forbidden`", body = ErrorEnvelope),
        (status = 404, description = "`not_found`", body = ErrorEnvelope),
        (status = 409, description = "`read_only_tenant`", body = ErrorEnvelope),
        (status = 429, description = "`too_many_keys`", body = ErrorEnvelope)
    )
)]
pub async fn add_key(
    State(tenants): State<Arc<Tenants>>,
    Extension(caller): Extension<Caller>,
    Path(TenantPath { id }): Path<TenantPath>,
) -> Result<DataWith<IssuedKey>, ApiError> {
    require_admin(&caller)?;
    let key = tenants.add_key(&id).await.map_err(admin_error)?;
    audit::admin_action(&caller.0.id, "add_key");
    Ok(DataWith(StatusCode::CREATED, key))
}

/// List a tenant's keys made through the API (administrators only): ids, never keys.
#[utoipa::path(
    get,
    path = "/tenants/{id}/keys",
    params(TenantPath),
    responses(
        (status = 200, description = "The keys", body = Envelope<Vec<KeyInfo>>),
        (status = 403, description = "`forbidden`", body = ErrorEnvelope),
        (status = 404, description = "`not_found`", body = ErrorEnvelope)
    )
)]
pub async fn list_keys(
    State(tenants): State<Arc<Tenants>>,
    Extension(caller): Extension<Caller>,
    Path(TenantPath { id }): Path<TenantPath>,
) -> Result<Success<Vec<KeyInfo>>, ApiError> {
    require_admin(&caller)?;
    tenants.keys(&id).map(Success).map_err(admin_error)
}

/// Revoke one of a tenant's keys (administrators only): refused from the next request on.
#[utoipa::path(
    delete,
    path = "/tenants/{id}/keys/{key_id}",
    params(KeyPath),
    responses(
        (status = 200, description = "Revoked", body = Envelope<KeyInfo>),
        (status = 403, description = "`forbidden`", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such tenant or key", body = ErrorEnvelope),
        (status = 409, description = "`read_only_tenant`", body = ErrorEnvelope)
    )
)]
pub async fn revoke_key(
    State(tenants): State<Arc<Tenants>>,
    Extension(caller): Extension<Caller>,
    Path(KeyPath { id, key_id }): Path<KeyPath>,
) -> Result<Success<KeyInfo>, ApiError> {
    require_admin(&caller)?;
    let listed = tenants
        .keys(&id)
        .map_err(admin_error)?
        .into_iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| admin_error(AdminError::KeyNotFound))?;
    tenants
        .revoke_key(&id, &key_id)
        .await
        .map_err(admin_error)?;
    audit::admin_action(&caller.0.id, "revoke_key");
    Ok(Success(listed))
}
