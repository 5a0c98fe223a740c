//! Live objects: `createObject` (new), `callMethod`, `getObjectAttribute`,
//! `setObjectAttribute`, `manageObjectLifecycle`, `listObjects`.
//!
//! A named object lives in its tool's interpreter until it is deleted or the instance is
//! replaced; after that, requests naming it get `410 object_lost`. Naming only `class_name`
//! keeps the original's behaviour: a fresh instance made for that one request.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::answer::{CallData, run_op};
use super::args::{AliasBody, check_depth, json_kind};
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorEnvelope, ToolErrors};
use crate::names::{check_alias, check_function};
use crate::protocol::{self, ObjectRef, Op};

fn bad(err: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(err.to_string())
}

/// Object names follow the alias grammar: 1-64 of `[A-Za-z0-9_.-]`, not starting with `.`.
fn checked_object(name: &str) -> Result<(), ApiError> {
    check_alias(name).map_err(|err| bad(err.to_string().replace("alias", "object_name")))
}

/// Class, method and attribute names: public Python identifiers.
fn checked_public(what: &str, name: &str) -> Result<(), ApiError> {
    check_function(name).map_err(|err| bad(err.to_string().replace("function_name", what)))
}

/// `object_name` (a live object; it wins when both are given) or `class_name` (a fresh
/// instance).
fn target(object_name: Option<String>, class_name: Option<String>) -> Result<ObjectRef, ApiError> {
    match (object_name, class_name) {
        (Some(object_name), _) => {
            checked_object(&object_name)?;
            Ok(ObjectRef::Named { object_name })
        }
        (None, Some(class_name)) => {
            checked_public("class_name", &class_name)?;
            Ok(ObjectRef::Fresh { class_name })
        }
        (None, None) => Err(bad("give object_name (a live object) or class_name")),
    }
}

fn arguments(
    args: Option<Box<RawValue>>,
    kwargs: Option<Box<RawValue>>,
) -> Result<(Box<RawValue>, Box<RawValue>), ApiError> {
    Ok((
        json_kind(args, '[', "args", "array")?.unwrap_or_else(protocol::empty_array),
        json_kind(kwargs, '{', "kwargs", "object")?.unwrap_or_else(protocol::empty_object),
    ))
}

/// `createObject`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The tool's alias.
    alias: String,
    /// A public class of the tool's script.
    class_name: String,
    /// The live object's name (the alias grammar: 1 to 64 of `[A-Za-z0-9_.-]`).
    object_name: String,
    /// Positional arguments for the constructor (a JSON array).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    args: Option<Box<RawValue>>,
    /// Keyword arguments for the constructor (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    kwargs: Option<Box<RawValue>>,
}

/// Create a live object in a tool.
///
/// `POST /python/createObject`: `object_name = class_name(*args, **kwargs)` in the tool,
/// kept in its interpreter (at most 1,000 per tool); `result` is `{object_name, class_name}`.
#[utoipa::path(
    post,
    path = "/createObject",
    request_body = CreateBody,
    responses(
        (status = 200, description = "The object exists", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors,
        (status = 410, description = "`object_lost`: the named object was lost when the tool's instance was replaced; create it again", body = ErrorEnvelope)
    )
)]
pub async fn create_object(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Success<CallData>, ApiError> {
    checked_public("class_name", &body.class_name)?;
    checked_object(&body.object_name)?;
    let (args, kwargs) = arguments(body.args, body.kwargs)?;
    let what = body.class_name.clone();
    let op = Op::CreateObject {
        class_name: body.class_name,
        object_name: body.object_name,
        args,
        kwargs,
    };
    run_op(&tenant, &body.alias, &what, op).await.map(Success)
}

/// `callMethod`'s body: `object_name` or `class_name`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodBody {
    /// The tool's alias.
    alias: String,
    /// A live object (it wins when both are given).
    #[serde(default)]
    object_name: Option<String>,
    /// A public class: a fresh instance for this request (the original's behaviour).
    #[serde(default)]
    class_name: Option<String>,
    /// A public method name.
    method_name: String,
    /// Positional arguments (a JSON array).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    args: Option<Box<RawValue>>,
    /// Keyword arguments (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    kwargs: Option<Box<RawValue>>,
}

/// Call a method of a live object (or of a fresh instance of a class).
///
/// `POST /python/callMethod`: answered as a call.
#[utoipa::path(
    post,
    path = "/callMethod",
    request_body = MethodBody,
    responses(
        (status = 200, description = "The method returned", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors,
        (status = 410, description = "`object_lost`: the named object was lost when the tool's instance was replaced; create it again", body = ErrorEnvelope)
    )
)]
pub async fn call_method(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<MethodBody>,
) -> Result<Success<CallData>, ApiError> {
    let target = target(body.object_name, body.class_name)?;
    checked_public("method_name", &body.method_name)?;
    let (args, kwargs) = arguments(body.args, body.kwargs)?;
    let what = body.method_name.clone();
    let op = Op::CallMethod {
        target,
        method_name: body.method_name,
        args,
        kwargs,
    };
    run_op(&tenant, &body.alias, &what, op).await.map(Success)
}

/// An attribute of a live object or of a fresh instance (`getObjectAttribute`,
/// `setObjectAttribute`): `object_name` or `class_name`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeBody {
    /// The tool's alias.
    alias: String,
    /// A live object (it wins when both are given).
    #[serde(default)]
    object_name: Option<String>,
    /// A public class: a fresh instance for this request.
    #[serde(default)]
    class_name: Option<String>,
    /// A public attribute name.
    attr_name: String,
    /// `setObjectAttribute`: the value (any JSON; required). `getObjectAttribute` refuses it.
    #[serde(default, deserialize_with = "super::args::present")]
    #[schema(value_type = Value)]
    value: Option<Box<RawValue>>,
}

/// Read an attribute of a live object.
///
/// `POST /python/getObjectAttribute`: the attribute's value as `result`.
#[utoipa::path(
    post,
    path = "/getObjectAttribute",
    request_body = AttributeBody,
    responses(
        (status = 200, description = "The attribute's value", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors,
        (status = 410, description = "`object_lost`: the named object was lost when the tool's instance was replaced; create it again", body = ErrorEnvelope)
    )
)]
pub async fn get_attribute(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<AttributeBody>,
) -> Result<Success<CallData>, ApiError> {
    let target = target(body.object_name, body.class_name)?;
    checked_public("attr_name", &body.attr_name)?;
    if body.value.is_some() {
        return Err(bad("getObjectAttribute takes no value"));
    }
    let what = body.attr_name.clone();
    let op = Op::GetAttribute {
        target,
        attr_name: body.attr_name,
    };
    run_op(&tenant, &body.alias, &what, op).await.map(Success)
}

/// Set an attribute of a live object.
///
/// `POST /python/setObjectAttribute`: any JSON value; answered as a call with
/// `result: null`.
#[utoipa::path(
    post,
    path = "/setObjectAttribute",
    request_body = AttributeBody,
    responses(
        (status = 200, description = "The attribute is set", body = Envelope<CallData>),
        BodyErrors,
        ToolErrors,
        (status = 410, description = "`object_lost`: the named object was lost when the tool's instance was replaced; create it again", body = ErrorEnvelope)
    )
)]
pub async fn set_attribute(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<AttributeBody>,
) -> Result<Success<CallData>, ApiError> {
    let target = target(body.object_name, body.class_name)?;
    checked_public("attr_name", &body.attr_name)?;
    let Some(value) = body.value else {
        return Err(ApiError::missing_field("value"));
    };
    check_depth(&value, "value")?;
    let what = body.attr_name.clone();
    let op = Op::SetAttribute {
        target,
        attr_name: body.attr_name,
        value,
    };
    run_op(&tenant, &body.alias, &what, op).await.map(Success)
}

/// `manageObjectLifecycle`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleBody {
    /// The tool's alias.
    alias: String,
    /// A live object.
    object_name: String,
    /// `true` deletes the object now; `false` keeps it (it must exist).
    auto_cleanup: bool,
}

/// What `manageObjectLifecycle` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LifecycleData {
    object_name: String,
    /// Whether the object was deleted.
    deleted: bool,
}

/// Delete or keep a live object.
///
/// `POST /python/manageObjectLifecycle {alias, object_name, auto_cleanup}`: `true` deletes
/// the object now; `false` keeps it (it must exist).
#[utoipa::path(
    post,
    path = "/manageObjectLifecycle",
    request_body = LifecycleBody,
    responses(
        (status = 200, description = "Done", body = Envelope<LifecycleData>),
        BodyErrors,
        ToolErrors,
        (status = 410, description = "`object_lost`: the named object was lost when the tool's instance was replaced; create it again", body = ErrorEnvelope)
    )
)]
pub async fn lifecycle(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<LifecycleBody>,
) -> Result<Success<LifecycleData>, ApiError> {
    checked_object(&body.object_name)?;
    if body.auto_cleanup {
        let op = Op::DeleteObject {
            object_name: body.object_name.clone(),
        };
        run_op(&tenant, &body.alias, &body.object_name, op).await?;
    } else {
        // Keeping needs no change; the object must still be there (a GetAttribute of a
        // lost object answers object_lost, of an unknown one not_found).
        let listed = run_op(&tenant, &body.alias, "listObjects", Op::ListObjects).await?;
        let names: Vec<ObjectEntry> =
            serde_json::from_str(listed.result.get()).map_err(ApiError::internal)?;
        if !names.iter().any(|o| o.object_name == body.object_name) {
            return Err(ApiError::not_found("no live object of that name"));
        }
    }
    Ok(Success(LifecycleData {
        object_name: body.object_name,
        deleted: body.auto_cleanup,
    }))
}

/// A live object of a tool.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
struct ObjectEntry {
    object_name: String,
    class_name: String,
}

/// What `listObjects` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ObjectsData {
    alias: String,
    #[schema(value_type = Vec<ObjectEntry>)]
    objects: Box<RawValue>,
}

/// List a tool's live objects.
///
/// `POST /python/listObjects {alias}`: the tool's live objects, `[{object_name, class_name}]`.
#[utoipa::path(
    post,
    path = "/listObjects",
    request_body = AliasBody,
    responses(
        (status = 200, description = "The tool's live objects", body = Envelope<ObjectsData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn list_objects(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<AliasBody>,
) -> Result<Success<ObjectsData>, ApiError> {
    let listed = run_op(&tenant, &body.alias, "listObjects", Op::ListObjects).await?;
    Ok(Success(ObjectsData {
        alias: body.alias,
        objects: listed.result,
    }))
}
