//! The API's OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations
//! and the body types' `ToSchema` derives as `http::router` builds the routes (through
//! `utoipa_axum`, so the document's paths are the router's), and served as `GET
//! /openapi.json` and, rendered to self-contained HTML, as `GET /docs`. Both are built once,
//! when the router is.

pub(super) mod errors;
mod html;
mod schemas;

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Required};
use utoipa::{IntoResponses, Modify};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use errors::{
    BodyErrors, ErrorBody, ErrorCode, ErrorEnvelope, FreshRunErrors, KeyErrors, LoadErrors,
    ToolErrors,
};
pub use schemas::{
    CacheStatsSchema, ErrorStrategySchema, Exports, FunctionInfo, JobStatusSchema, JobViewSchema,
    LimitOverridesSchema, ModuleStatusSchema, RoleSchema, TargetSchema, TaskRecordSchema,
    TaskSpecSchema, TaskSummarySchema, ToolInfoSchema, strategy_input,
};

use super::error::ApiError;

/// The name of the key's security scheme in the document.
const API_KEY_SCHEME: &str = "api_key";

/// The document's fixed parts: its info, the error schemas and the key's security scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "scriptbox",
        description = "A REST server that runs untrusted Python tools in CPython compiled to \
WASI, inside wasmtime.\n\nEvery success is an envelope `{success: true, request_id, data}` \
and every error `{success: false, request_id, error: {code, message, details}}` (except the \
`/api/python/execute*` routes, which answer in the original's shape); each response carries \
an `X-Request-ID` header. Request bodies are parsed as JSON whatever the `Content-Type` says. \
A route answers `405 method_not_allowed` to a method it does not take, and an unknown path \
`404 not_found`."
    ),
    components(schemas(ErrorEnvelope, ErrorBody, ErrorCode)),
    modifiers(&KeyScheme)
)]
struct ApiDoc;

/// Adds the `X-API-Key` security scheme.
struct KeyScheme;

impl Modify for KeyScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut value = ApiKeyValue::new("X-API-Key");
        value.description = Some(
            "The tenant's key. A server with no tenants declared serves one keyless `local` \
             tenant (on a loopback address only), and then no key is needed."
                .to_owned(),
        );
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(value)),
        );
    }
}

/// The document the router starts from (before any route is added).
pub fn base() -> OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

/// Marks every operation of `openapi` as needing the key, with the key check's refusals
/// ([`KeyErrors`]). Called where the check is layered onto a router, for that router's
/// routes.
pub fn require_key(openapi: &mut OpenApi) {
    let refusals = KeyErrors::responses();
    for item in openapi.paths.paths.values_mut() {
        for operation in operations(item) {
            operation.security = Some(vec![SecurityRequirement::new(
                API_KEY_SCHEME,
                Vec::<String>::new(),
            )]);
            for (status, response) in &refusals {
                operation
                    .responses
                    .responses
                    .entry(status.clone())
                    .or_insert_with(|| response.clone());
            }
        }
    }
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// A body documented as `Option<T>` (the route also takes an empty body) comes out of utoipa
/// as `oneOf: [null, T]`, not required. An absent body is not a JSON `null` (which such a
/// route refuses), so the `null` alternative is dropped.
fn unwrap_optional_bodies(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        for operation in operations(item) {
            let Some(body) = operation.request_body.as_mut() else {
                continue;
            };
            if matches!(body.required, Some(Required::True)) {
                continue;
            }
            for content in body.content.values_mut() {
                if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                    let mut rest = one_of.items.iter().filter(|item| !is_null(item));
                    if let (Some(only), None) = (rest.next(), rest.next()) {
                        content.schema = Some(only.clone());
                    }
                }
            }
        }
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(
        schema,
        RefOr::T(Schema::Object(object)) if object.schema_type == SchemaType::Type(Type::Null)
    )
}

/// The finished document, serialised, and its HTML page.
struct Rendered {
    json: Bytes,
    html: Bytes,
}

/// The document and its page for the `GET /openapi.json` and `GET /docs` handlers: empty
/// until [`Published::publish`] (right after the router is built, before it serves).
#[derive(Clone, Default)]
pub struct Published(Arc<OnceLock<Rendered>>);

impl Published {
    /// Finishes `openapi` and renders it once, for every later request.
    pub fn publish(&self, mut openapi: OpenApi) {
        unwrap_optional_bodies(&mut openapi);
        let json = match serde_json::to_vec(&openapi) {
            Ok(json) => Bytes::from(json),
            Err(err) => {
                tracing::error!(cause = %err, "the OpenAPI document is not serialisable");
                Bytes::from_static(b"{}")
            }
        };
        let html = Bytes::from(html::render(&openapi));
        if self.0.set(Rendered { json, html }).is_err() {
            tracing::warn!("the OpenAPI document was published twice; the first one is kept");
        }
    }

    fn answer(&self, part: fn(&Rendered) -> &Bytes, content_type: &'static str) -> Response {
        match self.0.get() {
            Some(rendered) => {
                let mut response = part(rendered).clone().into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                response
            }
            None => ApiError::internal("the OpenAPI document was not published").into_response(),
        }
    }
}

/// `GET /openapi.json` and `GET /docs` (no key needed).
pub fn routes(published: Published) -> OpenApiRouter {
    OpenApiRouter::default()
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
        .with_state(published)
}

/// This document: the API's OpenAPI 3 description.
///
/// Generated from the code (the handlers' annotations and the body types), built once when
/// the server starts. Needs no key.
#[utoipa::path(
    get,
    path = "/openapi.json",
    responses((status = 200, description = "The OpenAPI 3 document", body = Object, content_type = "application/json"))
)]
async fn openapi_json(State(published): State<Published>) -> Response {
    published.answer(|r| &r.json, "application/json")
}

/// This documentation as a web page.
///
/// One section per route (method, path, description, request fields, responses) and the
/// schemas, rendered on the server from the same document as `/openapi.json`: no
/// JavaScript, no external assets. Needs no key.
#[utoipa::path(
    get,
    path = "/docs",
    responses((status = 200, description = "The HTML page", body = String, content_type = "text/html"))
)]
async fn docs(State(published): State<Published>) -> Response {
    published.answer(|r| &r.html, "text/html; charset=utf-8")
}

#[cfg(test)]
mod tests;
