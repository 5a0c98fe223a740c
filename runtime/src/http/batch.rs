//! `/python/batchExecute` and `/python/setErrorHandlingStrategy`.
//!
//! A batch runs its calls one after another in one tool, each under the call limits and
//! quotas. The tool's error strategy decides what a failure does: `throw` stops the batch
//! and answers with that failure (its `details.results` hold the items run so far),
//! `return_default` turns it into a `null` result with a warning and goes on,
//! `log_and_continue` records the error in its item and goes on.

use axum::Extension;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::answer::{CallData, audit_limits, call_result, is_call_failure, registry_error};
use super::args::{CallBody, checked_call};
use super::auth::{Authed, Caller};
use super::body::JsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, ErrorBody, ErrorStrategySchema, ToolErrors, strategy_input};
use crate::names::check_alias;
use crate::tenants::{ErrorStrategy, Tenant};

/// Most calls in one batch.
pub const MAX_BATCH: usize = 100;

/// One call of a batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCall {
    /// A public function of the tool's script.
    function_name: String,
    /// Positional arguments (a JSON array).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    args: Option<Box<RawValue>>,
    /// Keyword arguments (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    kwargs: Option<Box<RawValue>>,
}

/// A batch: exactly one of `calls` and `function_names`, 1 to 100 calls.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The tool's alias.
    alias: String,
    /// The calls, run one after another.
    #[serde(default)]
    calls: Option<Vec<BatchCall>>,
    /// The original's form: functions called without arguments.
    #[serde(default)]
    function_names: Option<Vec<String>>,
}

/// One call's outcome in a batch.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    function_name: String,
    /// Whether the call succeeded.
    ok: bool,
    /// The call's answer (also for a failure the `return_default` strategy turned into a
    /// `null` result).
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<CallData>,
    /// The call's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorBody>)]
    error: Option<serde_json::Value>,
}

/// What `batchExecute` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchData {
    alias: String,
    /// The tool's error strategy, which decided what a failure did.
    #[schema(value_type = ErrorStrategySchema)]
    strategy: ErrorStrategy,
    succeeded: usize,
    failed: usize,
    results: Vec<BatchItem>,
}

/// Run several calls of one tool, one after another.
///
/// `POST /python/batchExecute {alias, calls: [{function_name, args, kwargs}]}` (or the
/// original's `function_names: [...]`). What a failure does depends on the tool's error
/// strategy: `throw` stops the batch and answers with that failure (its `details.results`
/// hold the items run so far).
#[utoipa::path(
    post,
    path = "/batchExecute",
    request_body = BatchBody,
    responses(
        (status = 200, description = "The batch ran", body = Envelope<BatchData>),
        BodyErrors,
        ToolErrors
    )
)]
pub async fn batch_execute(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Success<BatchData>, ApiError> {
    let calls = match (body.calls, body.function_names) {
        (Some(calls), None) => calls,
        (None, Some(names)) => names
            .into_iter()
            .map(|function_name| BatchCall {
                function_name,
                args: None,
                kwargs: None,
            })
            .collect(),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of calls or function_names",
            ));
        }
    };
    if calls.is_empty() || calls.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "a batch holds 1 to {MAX_BATCH} calls"
        )));
    }
    if !tenant.registry.contains(&body.alias) {
        return Err(ApiError::not_found("no tool is loaded under that alias"));
    }
    let strategy = tenant.strategies.for_alias(&body.alias);
    let mut data = BatchData {
        alias: body.alias.clone(),
        strategy,
        succeeded: 0,
        failed: 0,
        results: Vec::with_capacity(calls.len()),
    };
    for call in calls {
        let function_name = call.function_name.clone();
        match one(&tenant, &body.alias, call).await {
            Ok(call) => {
                data.succeeded += 1;
                data.results.push(BatchItem {
                    function_name,
                    ok: true,
                    data: Some(call),
                    error: None,
                });
            }
            Err(err) => {
                data.failed += 1;
                match strategy {
                    ErrorStrategy::ReturnDefault if is_call_failure(&err) => {
                        data.results.push(BatchItem {
                            function_name,
                            ok: false,
                            data: Some(CallData::defaulted(&err)),
                            error: None,
                        });
                    }
                    ErrorStrategy::Throw => {
                        data.results.push(BatchItem {
                            function_name,
                            ok: false,
                            data: None,
                            error: Some(err.public_json()),
                        });
                        let results = serde_json::to_value(&data.results).unwrap_or_default();
                        let mut details = err.details.clone();
                        if let Some(map) = details.as_object_mut() {
                            map.insert("results".into(), results);
                        }
                        return Err(err.with_details(details));
                    }
                    _ => {
                        tracing::info!(code = err.code, "batch item failed; going on");
                        data.results.push(BatchItem {
                            function_name,
                            ok: false,
                            data: None,
                            error: Some(err.public_json()),
                        });
                    }
                }
            }
        }
    }
    Ok(Success(data))
}

async fn one(tenant: &Tenant, alias: &str, call: BatchCall) -> Result<CallData, ApiError> {
    let (alias, function, args, kwargs) = checked_call(CallBody {
        alias: alias.to_owned(),
        function_name: call.function_name,
        args: call.args,
        kwargs: call.kwargs,
    })?;
    let report = tenant
        .registry
        .call(&alias, &function, args, kwargs)
        .await
        .map_err(|err| registry_error(&tenant.id, err))?;
    let answer = call_result(report, &alias, &function).map(|Success(data)| data);
    audit_limits(&tenant.id, &answer);
    answer
}

/// `setErrorHandlingStrategy`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyBody {
    #[schema(schema_with = strategy_input)]
    strategy: serde_json::Value,
    /// The tool it applies to; without it, the tenant's default.
    #[serde(default)]
    alias: Option<String>,
}

/// What `setErrorHandlingStrategy` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StrategyData {
    #[schema(value_type = ErrorStrategySchema)]
    strategy: ErrorStrategy,
    /// `null`: the tenant's default.
    alias: Option<String>,
}

/// Set how a tool's failing calls are answered.
///
/// `POST /python/setErrorHandlingStrategy {strategy, alias?}`: `throw`, `return_default`,
/// `log_and_continue` (or 0, 1, 2), for one alias or as the tenant's default.
#[utoipa::path(
    post,
    path = "/setErrorHandlingStrategy",
    request_body = StrategyBody,
    responses(
        (status = 200, description = "The strategy is set", body = Envelope<StrategyData>),
        BodyErrors
    )
)]
pub async fn set_strategy(
    Extension(Caller(tenant)): Authed,
    JsonBody(body): JsonBody<StrategyBody>,
) -> Result<Success<StrategyData>, ApiError> {
    let Some(strategy) = ErrorStrategy::parse(&body.strategy) else {
        return Err(ApiError::bad_request(
            "strategy must be throw, return_default or log_and_continue (or 0, 1, 2)",
        ));
    };
    if let Some(alias) = &body.alias {
        check_alias(alias).map_err(|err| ApiError::bad_request(err.to_string()))?;
    }
    let set = tenant
        .set_strategy(body.alias.as_deref(), strategy)
        .await
        .map_err(|err| ApiError::internal(format!("recording the strategy: {err}")))?;
    if !set {
        return Err(ApiError::bad_request(
            "too many per-alias strategies; set the default instead",
        ));
    }
    Ok(Success(StrategyData {
        strategy,
        alias: body.alias,
    }))
}
