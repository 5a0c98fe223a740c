//! The HTTP API (axum). `router(state)` builds every route; cross-cutting limits (body size,
//! panics) are tower layers, not handler code. Only this module imports axum.

mod admin;
mod answer;
mod args;
mod audit;
mod audit_log;
mod auth;
mod batch;
mod body;
mod debug;
mod envelope;
mod environment;
mod error;
mod execute;
mod exports;
pub mod forwarded;
mod globals;
mod high_level;
mod jobs;
mod memory;
mod modules;
mod namespace;
mod objects;
mod observe;
mod openapi;
mod packages;
mod performance;
mod python;
mod scripts;
mod stream;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use envelope::Envelope;
pub use error::ApiError;

use crate::tenants::Tenants;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub tenants: Arc<Tenants>,
    /// The server-wide body cap (a tenant's own may be lower).
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    /// Every tenant's tasks.
    pub tasks: Arc<crate::tasks::Service>,
    /// The trusted native modules.
    pub native: crate::native::NativeModules,
    /// The package installer.
    pub packages: Arc<crate::packages::Packages>,
    /// The sandbox (for the state of its images).
    pub sandbox: crate::sandbox::Sandbox,
    /// The tenants' scripts.
    pub scripts: crate::scripts::Scripts,
    /// The store (whose reachability `/health` reports; it knows this node's id).
    pub store: crate::store::Store,
    /// The node's audit log writer.
    pub audit: crate::store::audit::AuditLog,
    /// The budgets every registry draws from, with the server's metrics.
    pub shared: crate::registry::Shared,
}

/// Every route, with its layers. The routes are collected through `utoipa_axum`, so the
/// OpenAPI document (`GET /openapi.json`, `GET /docs`) is built from exactly these routes and
/// their handlers' annotations, once, here.
pub fn router(state: AppState) -> Router {
    let python = OpenApiRouter::default()
        .routes(routes!(python::load))
        .routes(routes!(python::unload))
        .routes(routes!(python::reload))
        .routes(routes!(python::list))
        .routes(routes!(python::call))
        .routes(routes!(namespace::get_variable))
        .routes(routes!(namespace::set_variable))
        .routes(routes!(namespace::functions))
        .routes(routes!(namespace::eval))
        .routes(routes!(namespace::inject))
        .routes(routes!(jobs::call_async))
        .routes(routes!(batch::batch_execute))
        .routes(routes!(objects::create_object))
        .routes(routes!(objects::call_method))
        .routes(routes!(objects::get_attribute))
        .routes(routes!(objects::set_attribute))
        .routes(routes!(objects::lifecycle))
        .routes(routes!(objects::list_objects))
        .routes(routes!(exports::discover))
        .routes(routes!(exports::all))
        .routes(routes!(exports::invoke))
        .routes(routes!(memory::usage))
        .routes(routes!(memory::optimize))
        .routes(routes!(memory::clear_unused))
        .routes(routes!(execute::with_logging))
        .routes(routes!(execute::with_profiling))
        .routes(routes!(environment::add_sys_path))
        .routes(routes!(packages::install_package))
        .routes(routes!(packages::uninstall_package))
        .routes(routes!(packages::list_packages))
        .routes(routes!(batch::set_strategy))
        .routes(routes!(globals::to_global))
        .routes(routes!(globals::from_global))
        .routes(routes!(globals::register))
        .routes(routes!(performance::configure))
        .routes(routes!(debug::enable))
        .routes(routes!(debug::set_breakpoint))
        .routes(routes!(environment::create_venv))
        .routes(routes!(environment::activate_venv))
        .routes(routes!(jobs::get_job, jobs::delete_job));
    let python = behind_key(python, &state).layer(axum::Extension(Arc::clone(&state.packages)));
    let high_level = OpenApiRouter::default()
        .routes(routes!(high_level::execute))
        .routes(routes!(high_level::execute_file))
        .routes(routes!(high_level::execute_function))
        .routes(routes!(high_level::statistics));
    let high_level = behind_key(high_level, &state);
    std::sync::LazyLock::force(&high_level::STARTED);
    let tasks = OpenApiRouter::default()
        .routes(routes!(tasks::submit, tasks::list))
        .routes(routes!(tasks::get, tasks::delete))
        .routes(routes!(tasks::resume))
        .routes(routes!(tasks::script))
        .routes(routes!(tasks::status))
        .routes(routes!(tasks::active))
        .routes(routes!(tasks::cancel));
    let tasks = behind_key(tasks, &state).layer(axum::Extension(Arc::clone(&state.tasks)));
    let admin = OpenApiRouter::default()
        .routes(routes!(admin::tenants, admin::create_tenant))
        .routes(routes!(admin::delete_tenant))
        .routes(routes!(admin::add_key, admin::list_keys))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(audit_log::list));
    let admin = behind_key(admin, &state)
        .layer(axum::Extension(Arc::clone(&state.tasks)))
        .layer(axum::Extension(state.store.clone()))
        .with_state(Arc::clone(&state.tenants));
    let scripts = OpenApiRouter::default()
        .routes(routes!(scripts::list_scripts))
        .routes(routes!(
            scripts::put_script,
            scripts::get_script,
            scripts::delete_script
        ))
        .routes(routes!(scripts::script_source));
    let scripts = behind_key(scripts, &state).layer(axum::Extension(state.scripts.clone()));
    let modules = OpenApiRouter::default()
        .routes(routes!(modules::load))
        .routes(routes!(modules::unload))
        .routes(routes!(modules::reload))
        .routes(routes!(modules::enable))
        .routes(routes!(modules::disable))
        .routes(routes!(modules::status))
        .routes(routes!(modules::list))
        .routes(routes!(modules::has_function))
        .routes(routes!(modules::call));
    let modules = behind_key(modules, &state).with_state(state.native.clone());
    let health = OpenApiRouter::default()
        .routes(routes!(health))
        .with_state((state.sandbox.clone(), state.store.clone()));
    let watched = OpenApiRouter::default()
        .routes(routes!(observe::metrics))
        .routes(routes!(observe::usage))
        .routes(routes!(observe::admin_usage));
    let watched = behind_key(watched, &state).with_state(state.clone());
    let dashboard = OpenApiRouter::default().routes(routes!(observe::dashboard));
    let published = openapi::Published::default();
    let (router, document) = OpenApiRouter::with_openapi(openapi::base())
        .merge(health)
        .nest("/python", python)
        .nest("/api/python", high_level)
        .nest("/admin", admin)
        .nest("/scripts", scripts)
        .nest("/module", modules)
        .merge(tasks)
        .merge(watched)
        .merge(dashboard)
        .merge(openapi::routes(published.clone()))
        .split_for_parts();
    published.publish(document);
    router
        .merge(crate::mcp::router(Arc::clone(&state.tenants)))
        .route_layer(middleware::from_fn(observe::mark_route))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("handler panicked"))
        }))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn_with_state(state.clone(), audit::scope))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.shared.metrics),
            observe::count_requests,
        ))
        .layer(middleware::from_fn(envelope::request_id))
}

/// Puts `router`'s routes behind the key check (`auth::authenticate`, as a route layer) and
/// marks them so in the document: the key's security requirement and its refusals.
fn behind_key<S>(router: OpenApiRouter<S>, state: &AppState) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = router.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    openapi::require_key(router.get_openapi_mut());
    router
}

/// What `GET /health` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` (with status 503) while the store is out of reach: a proxy's
    /// health check then drains the node.
    status: &'static str,
    /// This node's id (`[cluster] node_id`, or the one kept in the data dir).
    node: String,
    /// `reachable` or `unreachable`.
    store: &'static str,
    /// The pre-initialised interpreter images: `preparing` while they are loaded (or, once
    /// per machine, built), then `ready`; `failed` or `off` means instances start from the
    /// base snapshot (slower starts, same behaviour).
    images: crate::sandbox::ImagesState,
}

/// Whether the server is up, and its store within reach.
///
/// Needs no key and is not rate limited. `503` while the store does not answer within a
/// second (a proxy's health check then sends the node's tenants elsewhere).
#[utoipa::path(
    get,
    path = "/health",
    responses(
        (status = 200, description = "The server is up", body = Envelope<Health>),
        (status = 503, description = "The store is out of reach", body = Envelope<Health>)
    )
)]
async fn health(
    axum::extract::State((sandbox, store)): axum::extract::State<(
        crate::sandbox::Sandbox,
        crate::store::Store,
    )>,
) -> envelope::DataWith<Health> {
    let reachable = tokio::time::timeout(std::time::Duration::from_secs(1), store.reachable())
        .await
        .unwrap_or(false);
    let (code, status, store_state) = if reachable {
        (StatusCode::OK, "ok", "reachable")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "unreachable",
        )
    };
    envelope::DataWith(
        code,
        Health {
            status,
            node: store.node().to_owned(),
            store: store_state,
            images: sandbox.images_state(),
        },
    )
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route; GET /docs lists every route")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
