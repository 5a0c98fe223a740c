//! Live objects: `createObject` (new), `callMethod`, `getObjectAttribute`,
//! `setObjectAttribute`, `manageObjectLifecycle`, `listObjects`.
//!
//! A named object lives in its tool's interpreter until it is deleted or the instance is
//! replaced; after that, requests naming it get `410 object_lost`. Naming only `class_name`
//! keeps the original's behaviour: a fresh instance made for that one request.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::Caller;
use super::body::JsonBody;
use super::envelope::Data as Success;
use super::error::ApiError;
use super::python::{AliasBody, Authed, CallData, check_depth, json_kind, run_op};
use crate::protocol::{self, ObjectRef, Op};
use crate::registry::{check_alias, check_function};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    alias: String,
    class_name: String,
    object_name: String,
    #[serde(default)]
    args: Option<Box<RawValue>>,
    #[serde(default)]
    kwargs: Option<Box<RawValue>>,
}

/// `POST /python/createObject`: `object_name = class_name(*args, **kwargs)` in the tool.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodBody {
    alias: String,
    #[serde(default)]
    object_name: Option<String>,
    #[serde(default)]
    class_name: Option<String>,
    method_name: String,
    #[serde(default)]
    args: Option<Box<RawValue>>,
    #[serde(default)]
    kwargs: Option<Box<RawValue>>,
}

/// `POST /python/callMethod`.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeBody {
    alias: String,
    #[serde(default)]
    object_name: Option<String>,
    #[serde(default)]
    class_name: Option<String>,
    attr_name: String,
    #[serde(default, deserialize_with = "super::python::present")]
    value: Option<Box<RawValue>>,
}

/// `POST /python/getObjectAttribute`.
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

/// `POST /python/setObjectAttribute`: any JSON value.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleBody {
    alias: String,
    object_name: String,
    auto_cleanup: bool,
}

#[derive(Serialize)]
pub struct LifecycleData {
    object_name: String,
    deleted: bool,
}

/// `POST /python/manageObjectLifecycle {alias, object_name, auto_cleanup}`: `true` deletes
/// the object now; `false` keeps it (it must exist).
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

#[derive(Deserialize, Serialize)]
struct ObjectEntry {
    object_name: String,
    class_name: String,
}

#[derive(Serialize)]
pub struct ObjectsData {
    alias: String,
    objects: Box<RawValue>,
}

/// `POST /python/listObjects {alias}`: the tool's live objects, `[{object_name, class_name}]`.
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
