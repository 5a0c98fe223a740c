//! `/python/syncVariableToGlobal`, `syncVariableFromGlobal` and `registerFunction`: what a
//! tenant shares with its tools' guest code through host calls (see `registry::host`).
//!
//! The original kept `__main__` attributes of its one interpreter. Here every tool has its
//! own interpreter, so the "global" namespace is the tenant's: a bounded key-value store that
//! HTTP and guest code (`import scriptbox; scriptbox.get_global(name)`) both read and write.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

use super::args::check_depth;
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, TargetSchema};
use crate::names::{check_alias, check_function};
use crate::registry::{MAX_FUNCTIONS, Target, check_global};

/// A global variable of the tenant (`syncVariableToGlobal`, `syncVariableFromGlobal`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalBody {
    /// An identifier, not starting with `__`.
    name: String,
    /// `syncVariableToGlobal`: the value (any JSON, at most 256 KiB; required).
    /// `syncVariableFromGlobal` refuses it.
    // `Some` whenever the field is present, `null` included.
    #[serde(default, deserialize_with = "super::args::present")]
    #[schema(value_type = Value)]
    value: Option<Box<RawValue>>,
}

/// A global variable and its value.
#[derive(Serialize, utoipa::ToSchema)]
pub struct GlobalData {
    name: String,
    /// Whether the name is set (for `syncVariableFromGlobal`; always true after a set).
    found: bool,
    /// The value (`null` when unset).
    #[schema(value_type = Value)]
    value: Box<RawValue>,
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    check_global(name).map_err(ApiError::bad_request)
}

/// Set a global variable of the tenant.
///
/// `POST /python/syncVariableToGlobal {name, value}`: sets the tenant's global variable,
/// which guest code reads with `scriptbox.get_global(name)`. At most 1,024 names, 256 KiB of
/// JSON each, 8 MiB in all.
#[utoipa::path(
    post,
    path = "/syncVariableToGlobal",
    request_body = GlobalBody,
    responses(
        (status = 200, description = "The variable is set", body = Envelope<GlobalData>),
        BodyErrors
    )
)]
pub async fn to_global(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<GlobalBody>,
) -> Result<Success<GlobalData>, ApiError> {
    checked_name(&body.name)?;
    let value = body.value.ok_or_else(|| ApiError::missing_field("value"))?;
    check_depth(&value, "value")?;
    tenant
        .registry
        .globals
        .set(&body.name, value.clone())
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    Ok(Success(GlobalData {
        name: body.name,
        found: true,
        value,
    }))
}

/// Read a global variable of the tenant.
///
/// `POST /python/syncVariableFromGlobal {name}`: the tenant's global variable (`found:
/// false` and a `null` value when it is not set).
#[utoipa::path(
    post,
    path = "/syncVariableFromGlobal",
    request_body = GlobalBody,
    responses(
        (status = 200, description = "The variable", body = Envelope<GlobalData>),
        BodyErrors
    )
)]
pub async fn from_global(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<GlobalBody>,
) -> Result<Success<GlobalData>, ApiError> {
    checked_name(&body.name)?;
    if body.value.is_some() {
        return Err(ApiError::bad_request(
            "syncVariableFromGlobal takes no value",
        ));
    }
    let value = tenant.registry.globals.get(&body.name);
    Ok(Success(GlobalData {
        found: value.is_some(),
        value: value.unwrap_or_else(crate::protocol::null),
        name: body.name,
    }))
}

/// What a registered name runs.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TargetBody {
    /// `"alias.function_name"`.
    Dotted(String),
    Parts {
        alias: String,
        function_name: String,
    },
}

/// `registerFunction`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The name guest code calls: an identifier, not starting with `__`.
    name: String,
    /// What the name runs: `"alias.function_name"` or `{alias, function_name}`; `null`
    /// removes the registration.
    #[serde(default, deserialize_with = "super::args::present")]
    #[schema(value_type = Option<TargetBody>, required = true)]
    target: Option<Box<RawValue>>,
}

/// What `registerFunction` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RegisterData {
    name: String,
    /// Whether the name is registered now (`false` after a removal).
    registered: bool,
    /// Every registered function of the tenant, by name.
    #[schema(value_type = BTreeMap<String, TargetSchema>)]
    functions: BTreeMap<String, Target>,
}

fn checked_target(raw: &RawValue) -> Result<Target, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "target must be \"alias.function_name\" or {\"alias\", \"function_name\"}",
        )
    };
    let (alias, function_name) = match serde_json::from_str::<TargetBody>(raw.get()) {
        Ok(TargetBody::Dotted(text)) => {
            let (alias, function) = text.rsplit_once('.').ok_or_else(bad)?;
            (alias.to_owned(), function.to_owned())
        }
        Ok(TargetBody::Parts {
            alias,
            function_name,
        }) => (alias, function_name),
        Err(_) => return Err(bad()),
    };
    check_alias(&alias).map_err(|err| ApiError::bad_request(err.to_string()))?;
    check_function(&function_name).map_err(|err| ApiError::bad_request(err.to_string()))?;
    Ok(Target {
        alias,
        function_name,
    })
}

/// Register a function for guest code to call by name.
///
/// `POST /python/registerFunction {name, target}`: exposes one of the tenant's tools'
/// functions to all its tools' guest code as `scriptbox.call(name, ...)`. The target tool
/// need not be loaded yet: a call to an unloaded one fails in the guest with a clear error.
/// At most 256 names.
#[utoipa::path(
    post,
    path = "/registerFunction",
    request_body = RegisterBody,
    responses(
        (status = 200, description = "The name is registered (or removed)", body = Envelope<RegisterData>),
        BodyErrors
    )
)]
pub async fn register(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<RegisterBody>,
) -> Result<Success<RegisterData>, ApiError> {
    checked_name(&body.name)?;
    let target = body
        .target
        .ok_or_else(|| ApiError::missing_field("target"))?;
    let functions = &tenant.registry.functions;
    let registered = if target.get().trim() == "null" {
        functions.unregister(&body.name);
        false
    } else {
        if !functions.register(&body.name, checked_target(&target)?) {
            return Err(ApiError::bad_request(format!(
                "a tenant may register at most {MAX_FUNCTIONS} functions"
            )));
        }
        true
    };
    Ok(Success(RegisterData {
        name: body.name,
        registered,
        functions: functions.list(),
    }))
}
