//! The HTTP API (axum). `router(state)` builds every route; cross-cutting limits (body size,
//! panics) are tower layers, not handler code. Only this module imports axum.

mod admin;
mod audit;
mod auth;
mod batch;
mod body;
mod debug;
mod envelope;
mod environment;
mod error;
mod execute;
mod exports;
mod globals;
mod high_level;
mod jobs;
mod memory;
mod namespace;
mod objects;
mod performance;
mod python;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::tenants::Tenants;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub tenants: Arc<Tenants>,
    /// The server-wide body cap (a tenant's own may be lower).
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
}

/// Every route, with its layers.
pub fn router(state: AppState) -> Router {
    let python = Router::new()
        .route("/load", post(python::load))
        .route("/unload", post(python::unload))
        .route("/reload", post(python::reload))
        .route("/list", get(python::list))
        .route("/call", post(python::call))
        .route("/getVariable", post(namespace::get_variable))
        .route("/setVariable", post(namespace::set_variable))
        .route("/functions", post(namespace::functions))
        .route("/eval", post(namespace::eval))
        .route("/inject", post(namespace::inject))
        .route("/callAsync", post(jobs::call_async))
        .route("/batchExecute", post(batch::batch_execute))
        .route("/createObject", post(objects::create_object))
        .route("/callMethod", post(objects::call_method))
        .route("/getObjectAttribute", post(objects::get_attribute))
        .route("/setObjectAttribute", post(objects::set_attribute))
        .route("/manageObjectLifecycle", post(objects::lifecycle))
        .route("/listObjects", post(objects::list_objects))
        .route("/exports/discover", post(exports::discover))
        .route("/exports/all", get(exports::all))
        .route("/exports/invoke", post(exports::invoke))
        .route("/getMemoryUsage", get(memory::usage))
        .route("/optimizeMemory", post(memory::optimize))
        .route("/clearUnusedResources", post(memory::clear_unused))
        .route("/executeWithLogging", post(execute::with_logging))
        .route("/executeWithProfiling", post(execute::with_profiling))
        .route("/addSysPath", post(environment::add_sys_path))
        .route("/installPackage", post(environment::packages_unavailable))
        .route("/uninstallPackage", post(environment::packages_unavailable))
        .route("/setErrorHandlingStrategy", post(batch::set_strategy))
        .route("/syncVariableToGlobal", post(globals::to_global))
        .route("/syncVariableFromGlobal", post(globals::from_global))
        .route("/registerFunction", post(globals::register))
        .route("/configurePerformance", post(performance::configure))
        .route("/enableDebug", post(debug::enable))
        .route("/setBreakpoint", post(debug::set_breakpoint))
        .route("/createVenv", post(environment::create_venv))
        .route("/activateVenv", post(environment::activate_venv))
        .route("/jobs/{id}", get(jobs::get_job).delete(jobs::delete_job))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let high_level = Router::new()
        .route("/execute", post(high_level::execute))
        .route("/executeFile", post(high_level::execute_file))
        .route("/executeFunction", post(high_level::execute_function))
        .route("/statistics", get(high_level::statistics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    std::sync::LazyLock::force(&high_level::STARTED);
    let admin = Router::new()
        .route("/tenants", get(admin::tenants))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(Arc::clone(&state.tenants));
    Router::new()
        .route("/health", get(health))
        .nest("/python", python)
        .nest("/api/python", high_level)
        .nest("/admin", admin)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("handler panicked"))
        }))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(envelope::request_id))
}

async fn health() -> envelope::Data<serde_json::Value> {
    envelope::Data(json!({ "status": "ok" }))
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route; see the README's API reference")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
