//! `JsonBody<T>`: the request body parsed as JSON whatever the Content-Type (the guide's curl
//! examples send none), with our error codes: `payload_too_large` (413), `invalid_json`,
//! `missing_field` and `bad_request` (400).

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::auth::BodyLimits;
use super::error::ApiError;

/// Longest piece of a parser message we echo back.
const MAX_MESSAGE: usize = 200;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_body(request)
            .await
            .and_then(|bytes| parse(&bytes))
            .map(JsonBody)
    }
}

/// A JSON body that may also be absent (empty): then `T::default()`. For routes the original
/// called without a body.
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse(&bytes).map(OptionalJsonBody)
    }
}

/// The whole body, under the request's size limit and arrival timeout.
async fn read_body(request: Request) -> Result<axum::body::Bytes, ApiError> {
    let limits = request
        .extensions()
        .get::<BodyLimits>()
        .copied()
        .unwrap_or(BodyLimits {
            max_bytes: DEFAULT_MAX_BODY,
            timeout: DEFAULT_BODY_TIMEOUT,
        });
    read_limited(request, limits).await
}

/// The whole body, under `limits` (a route whose bodies have a limit of their own, such as
/// a script upload's) and the request's arrival timeout.
pub async fn read_limited(
    request: Request,
    limits: BodyLimits,
) -> Result<axum::body::Bytes, ApiError> {
    let read = axum::body::to_bytes(request.into_body(), limits.max_bytes);
    let bytes = match tokio::time::timeout(limits.timeout, read).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            )
            .closing());
        }
        Ok(Err(err)) if is_length_limit(&err) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "request body is larger than this key may send ({} bytes)",
                    limits.max_bytes
                ),
            )
            .closing());
        }
        Ok(Err(err)) => {
            return Err(ApiError::bad_request("the request body could not be read")
                .with_cause(err)
                .closing());
        }
        Ok(Ok(bytes)) => bytes,
    };
    Ok(bytes)
}

/// Limits for a request that came without [`BodyLimits`] (routes outside authentication).
const DEFAULT_MAX_BODY: usize = 64 << 10;
const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Parses `bytes` as `T`, naming what is wrong in client terms.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|err| classify(&err))
}

fn classify(err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = err.to_string();
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "request body is not valid JSON (line {}, column {})",
                err.line(),
                err.column()
            ),
        ),
        Category::Data => match missing_field(&text) {
            Some(field) => ApiError::missing_field(&field),
            None => ApiError::bad_request(clip(&text)),
        },
    }
}

/// serde's "missing field `alias`" -> "alias".
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be parsed")]
    struct Body {
        alias: String,
        n: Option<u32>,
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            parse::<Body>(b"").map(|_| ()).expect_err("must fail").code,
            "invalid_json"
        );
        assert_eq!(
            parse::<Body>(b"{oops")
                .map(|_| ())
                .expect_err("must fail")
                .code,
            "invalid_json"
        );
        let missing = parse::<Body>(b"{}").map(|_| ()).expect_err("must fail");
        assert_eq!(missing.code, "missing_field");
        assert_eq!(missing.details["field"], "alias");
        assert_eq!(
            parse::<Body>(br#"{"alias": 3}"#)
                .map(|_| ())
                .expect_err("must fail")
                .code,
            "bad_request"
        );
        assert_eq!(
            parse::<Body>(br#"{"alias": "a", "x": 1}"#)
                .map(|_| ())
                .expect_err("must fail")
                .code,
            "bad_request"
        );
        assert!(parse::<Body>(br#"{"alias": "a"}"#).is_ok());
    }
}
