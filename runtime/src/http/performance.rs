//! `/python/configurePerformance`: the original's performance switches, each mapped to what
//! it can mean in a sandbox. `enable_caching` and `cache_ttl_s` drive the tenant's result
//! cache (`registry::cache`); the thread and GIL switches have nothing to act on (each tool
//! is one single-threaded WASI interpreter; WASI preview 1 has no threads) and are accepted
//! and reported as not applicable, with the reason.

use std::time::Duration;

use axum::Extension;
use serde::{Deserialize, Serialize};

use super::auth::{Authed, Caller};
use super::body::OptionalJsonBody;
use super::envelope::{Data as Success, Envelope};
use super::error::ApiError;
use super::openapi::{BodyErrors, CacheStatsSchema};
use crate::registry::{CacheStats, MAX_TTL};

/// `configurePerformance`'s body (optional): absent fields keep their setting.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PerformanceBody {
    /// Turns the tenant's result cache for `/python/call` on or off (pure functions only).
    #[serde(default)]
    enable_caching: Option<bool>,
    /// How long a cached result is served, in seconds (1 to 86400; 60 by default).
    #[serde(default)]
    cache_ttl_s: Option<u64>,
    /// Accepted, not applicable (`applied: false`): 1 to 1024.
    #[serde(default)]
    thread_pool_size: Option<u32>,
    /// Accepted, not applicable (`applied: false`).
    #[serde(default)]
    enable_threading: Option<bool>,
    /// Accepted, not applicable (`applied: false`).
    #[serde(default)]
    enable_gil_optimization: Option<bool>,
}

/// How one field was taken.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Setting {
    /// The value sent.
    #[schema(value_type = Value)]
    value: serde_json::Value,
    /// Whether it changed anything.
    applied: bool,
    /// What it drives, or why nothing.
    meaning: String,
}

/// What `configurePerformance` answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PerformanceData {
    /// The result cache, after the change.
    #[schema(value_type = CacheStatsSchema)]
    cache: CacheStats,
    /// Each field sent, by name.
    #[schema(value_type = std::collections::BTreeMap<String, Setting>)]
    settings: std::collections::BTreeMap<&'static str, Setting>,
}

/// Configure the result cache (and report the switches that have no meaning here).
///
/// `POST /python/configurePerformance {enable_caching?, cache_ttl_s?, thread_pool_size?,
/// enable_threading?, enable_gil_optimization?}`: absent fields keep their setting; an
/// empty body only reports.
#[utoipa::path(
    post,
    path = "/configurePerformance",
    request_body(content = Option<PerformanceBody>, description = "Optional: an empty body only reports"),
    responses(
        (status = 200, description = "The settings taken, and the cache", body = Envelope<PerformanceData>),
        BodyErrors
    )
)]
pub async fn configure(
    Extension(Caller(tenant)): Authed,
    OptionalJsonBody(body): OptionalJsonBody<PerformanceBody>,
) -> Result<Success<PerformanceData>, ApiError> {
    if let Some(ttl) = body.cache_ttl_s
        && !(1..=MAX_TTL.as_secs()).contains(&ttl)
    {
        return Err(ApiError::bad_request(format!(
            "cache_ttl_s must be between 1 and {}",
            MAX_TTL.as_secs()
        )));
    }
    if let Some(size) = body.thread_pool_size
        && !(1..=1024).contains(&size)
    {
        return Err(ApiError::bad_request(
            "thread_pool_size must be between 1 and 1024",
        ));
    }
    let cache = &tenant.registry.cache;
    let now = cache.stats();
    let enabled = body.enable_caching.unwrap_or(now.enabled);
    let ttl = body.cache_ttl_s.unwrap_or(now.ttl_s);
    if body.enable_caching.is_some() || body.cache_ttl_s.is_some() {
        tenant
            .registry
            .record_cache(enabled, ttl)
            .await
            .map_err(|err| super::answer::registry_error(&tenant.id, err))?;
    }
    cache.configure(enabled, Some(Duration::from_secs(ttl)));

    let mut settings = std::collections::BTreeMap::new();
    if let Some(value) = body.enable_caching {
        settings.insert(
            "enable_caching",
            Setting {
                value: value.into(),
                applied: true,
                meaning: "the tenant's result cache for /python/call (pure functions; see \
                          docs/api.md)"
                    .into(),
            },
        );
    }
    if let Some(value) = body.cache_ttl_s {
        settings.insert(
            "cache_ttl_s",
            Setting {
                value: value.into(),
                applied: true,
                meaning: "how long a cached result is served".into(),
            },
        );
    }
    let calls = tenant.registry.settings().max_concurrent_calls;
    let not_applicable = [
        (
            "thread_pool_size",
            body.thread_pool_size.map(serde_json::Value::from),
            format!(
                "not applicable: each tool runs in one single-threaded interpreter, and calls to \
                 different tools already run in parallel, up to this key's max_concurrent_calls \
                 ({calls})"
            ),
        ),
        (
            "enable_threading",
            body.enable_threading.map(serde_json::Value::from),
            "not applicable: WASI preview 1 has no threads; the interpreter is built without them"
                .to_owned(),
        ),
        (
            "enable_gil_optimization",
            body.enable_gil_optimization.map(serde_json::Value::from),
            "not applicable: every interpreter is single-threaded, so there is no GIL contention"
                .to_owned(),
        ),
    ];
    for (name, value, meaning) in not_applicable {
        if let Some(value) = value {
            settings.insert(
                name,
                Setting {
                    value,
                    applied: false,
                    meaning,
                },
            );
        }
    }
    Ok(Success(PerformanceData {
        cache: cache.stats(),
        settings,
    }))
}
