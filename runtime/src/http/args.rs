//! A call request's parts and their checks: the bodies that name a tool or a function of
//! it, and the argument checks (kind and nesting depth) every call route shares.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::protocol;

/// A body naming one of the caller's tools.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// The tool's alias.
    pub(super) alias: String,
}

/// A call: a function of a tool and its arguments.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallBody {
    /// The tool's alias.
    pub(super) alias: String,
    /// A public function of the tool's script (an identifier not starting with `_`).
    pub(super) function_name: String,
    /// Positional arguments (a JSON array, converted by the conversion table; nested at
    /// most 64 levels).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    pub(super) args: Option<Box<RawValue>>,
    /// Keyword arguments (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(super) kwargs: Option<Box<RawValue>>,
}

/// For optional body fields that must tell `null` from absent: `Some` whenever present.
pub(super) fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// A call body's parts, checked: alias, function name, args (an array) and kwargs (an
/// object), each argument nested at most [`MAX_ARG_DEPTH`] deep.
pub(super) fn checked_call(
    body: CallBody,
) -> Result<(String, String, Box<RawValue>, Box<RawValue>), ApiError> {
    crate::names::check_function(&body.function_name)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let args = json_kind(body.args, '[', "args", "array")?.unwrap_or_else(protocol::empty_array);
    let kwargs =
        json_kind(body.kwargs, '{', "kwargs", "object")?.unwrap_or_else(protocol::empty_object);
    Ok((body.alias, body.function_name, args, kwargs))
}

/// The deepest nesting of arrays and objects accepted in `args`/`kwargs`.
pub const MAX_ARG_DEPTH: usize = 64;

/// The nesting depth of raw JSON text: brackets outside strings, one pass.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks that a raw JSON value is nested at most [`MAX_ARG_DEPTH`] deep.
pub(super) fn check_depth(raw: &RawValue, name: &str) -> Result<(), ApiError> {
    if nesting_depth(raw.get()) > MAX_ARG_DEPTH {
        return Err(ApiError::bad_request(format!(
            "{name} is nested deeper than {MAX_ARG_DEPTH} levels"
        )));
    }
    Ok(())
}

/// Checks that a raw JSON value is an array (or object) nested at most [`MAX_ARG_DEPTH`]
/// deep, without parsing it into a tree.
pub(super) fn json_kind(
    value: Option<Box<RawValue>>,
    open: char,
    name: &str,
    kind: &str,
) -> Result<Option<Box<RawValue>>, ApiError> {
    if let Some(raw) = &value {
        check_depth(raw, name)?;
    }
    match value {
        Some(raw) if raw.get().trim_start().starts_with(open) => Ok(Some(raw)),
        Some(raw) if raw.get().trim() == "null" => Ok(None),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be a JSON {kind}"
        ))),
        None => Ok(None),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_kinds() {
        let raw = |s: &str| Some(RawValue::from_string(s.to_owned()).expect("json"));
        assert!(json_kind(raw("[1]"), '[', "args", "array").is_ok());
        assert!(
            json_kind(raw("null"), '[', "args", "array")
                .expect("ok")
                .is_none()
        );
        assert!(json_kind(raw("{}"), '[', "args", "array").is_err());
        assert!(json_kind(raw("\"x\""), '{', "kwargs", "object").is_err());
        assert_eq!(nesting_depth(r#"[1, {"a": "[[[[", "b": [2]}]"#), 3);
        assert_eq!(nesting_depth(r#"["\\", "\"[" ]"#), 1);
    }
}
