//! The response envelope (`{"success", "request_id", "data" | "error"}`) and the request id.
//!
//! Every request gets an id, kept in a task-local for the request's lifetime and sent back in
//! `X-Request-ID`; a client-supplied `X-Request-ID` of up to 64 safe characters is reused.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id ("" outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// `future` run under the current request's id: for work the response body polls after
/// the handler returned (a streamed call).
pub fn carry_request_id<F: std::future::Future>(
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    REQUEST_ID.scope(current_request_id(), future)
}

fn usable_client_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| text.to_owned())
}

/// Middleware: assigns the request id and echoes it in the response header.
pub async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(usable_client_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(REQUEST_ID_HEADER.clone(), value);
    }
    response
}

/// A JSON response with a body serialised once.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => {
            tracing::error!(cause = %err, "response not serialisable");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `true`, for the success envelope's `success` (its schema in the OpenAPI document).
fn always_true() -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .description(Some("Always `true` here (`false` in the error envelope)."))
}

/// A success envelope around `data`.
pub struct Data<T>(pub T);

/// A success envelope with a status other than 200 (202 for accepted work).
pub struct DataWith<T>(pub StatusCode, pub T);

impl<T: Serialize> IntoResponse for DataWith<T> {
    fn into_response(self) -> Response {
        let body = Envelope {
            success: true,
            request_id: current_request_id(),
            data: self.1,
        };
        json_response(self.0, &body)
    }
}

/// The success envelope: `{success: true, request_id, data}`. Serialised straight to bytes
/// (not through `serde_json::Value`), so raw JSON results keep integers of any size exact.
/// Its schema is the one `GET /openapi.json` shows for every success (`Envelope_<data type>`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    /// Always `true` here (`false` in the error envelope).
    #[schema(schema_with = always_true)]
    success: bool,
    /// This request's id, as in the `X-Request-ID` header.
    request_id: String,
    /// What the route answers.
    data: T,
}

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        let body = Envelope {
            success: true,
            request_id: current_request_id(),
            data: self.0,
        };
        json_response(StatusCode::OK, &body)
    }
}
