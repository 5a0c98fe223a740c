//! Authentication and per-tenant admission: the `X-API-Key` header selects a tenant, whose
//! rate budget is spent here; the tenant and its body limits ride on the request as
//! extensions. Failures are audit events (never with the key).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, audit};
use crate::tenants::{AuthError, Tenant};

pub const API_KEY_HEADER: &str = "x-api-key";

/// The request body limits in force for this request.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// The authenticated caller.
#[derive(Clone)]
pub struct Caller(pub Arc<Tenant>);

/// A handler's authenticated-caller argument (the auth middleware put it on the request).
pub type Authed = axum::Extension<Caller>;

/// The client's address (the server's accept loop records it on every request).
pub fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Middleware on every tenant route.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&request);
    let key = request
        .headers()
        .get(API_KEY_HEADER)
        .map(|value| value.as_bytes());
    let tenant = match state.tenants.authenticate(key, ip) {
        Ok(tenant) => tenant,
        Err(err) => {
            audit::auth_failed(err, ip);
            return auth_error(err).into_response();
        }
    };
    if let Err(wait) = tenant.check_rate() {
        audit::limit_hit(&tenant.id, "rate_limited");
        tenant
            .registry
            .metrics()
            .record_call(&crate::metrics::CallRecord {
                tenant: &tenant.id,
                tool: crate::metrics::NO_TOOL,
                mode: "persistent",
                outcome: crate::metrics::CallOutcome::RateLimited,
                fuel: 0,
                elapsed: Duration::ZERO,
                cpu: Duration::ZERO,
                bytes_out: 0,
            });
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this key's request rate is over its quota; retry after the time in Retry-After",
        );
        err.retry_after_s = Some(seconds_up(wait));
        return err.into_response();
    }
    request.extensions_mut().insert(BodyLimits {
        max_bytes: tenant.max_body_bytes.min(state.max_body_bytes),
        timeout: state.body_timeout,
    });
    request.extensions_mut().insert(Caller(tenant));
    next.run(request).await
}

fn seconds_up(wait: Duration) -> u32 {
    u32::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

fn auth_error(err: AuthError) -> ApiError {
    match err {
        AuthError::MissingKey => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "this server needs an API key in the X-API-Key header",
        ),
        AuthError::InvalidKey => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the API key is not valid",
        ),
        AuthError::LockedOut { retry_after } => {
            let mut api = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_auth_failures",
                "too many invalid keys from this address; retry after the time in Retry-After",
            );
            api.retry_after_s = Some(seconds_up(retry_after));
            api
        }
    }
}

/// Refuses callers that are not administrators.
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.0.is_admin() {
        Ok(())
    } else {
        audit::forbidden(&caller.0.id, "admin route");
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route is for administrators",
        ))
    }
}
