//! The one error type at the HTTP edge. Its body is client-safe: a stable `code`, a short
//! message written here (never an error's Display from below), and structured `details`. The
//! real cause goes to the log with the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::envelope::{self, current_request_id};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Logged, never sent.
    pub cause: Option<String>,
    pub retry_after_s: Option<u32>,
    /// Answer with `Connection: close`: the request body was left unread, so the connection
    /// cannot carry another request (a client that reused it would see a broken reply).
    pub close_connection: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
            cause: None,
            retry_after_s: None,
            close_connection: false,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `400 missing_field`, naming the field in the message and in `details.field`.
    pub fn missing_field(field: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            format!("missing required field '{field}'"),
        )
        .with_details(json!({ "field": field }))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; the server log has the details under this request id",
        )
        .with_cause(cause)
    }

    /// See [`ApiError::close_connection`].
    pub fn closing(mut self) -> Self {
        self.close_connection = true;
        self
    }

    pub fn busy() -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the tool's call queue is full; retry shortly",
        );
        err.retry_after_s = Some(1);
        err
    }
}

impl ApiError {
    /// The client-facing part, `{code, message, details}`, as stored for a job.
    pub fn public_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "details": self.details})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        match (&self.cause, self.status.is_server_error()) {
            (Some(cause), true) => {
                tracing::error!(%request_id, code = self.code, %cause, "request failed")
            }
            (Some(cause), false) => {
                tracing::info!(%request_id, code = self.code, %cause, "request refused")
            }
            (None, _) => tracing::debug!(%request_id, code = self.code, "request refused"),
        }
        let body = json!({
            "success": false,
            "request_id": request_id,
            "error": {"code": self.code, "message": self.message, "details": self.details},
        });
        let mut response = envelope::json_response(self.status, &body);
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.close_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
