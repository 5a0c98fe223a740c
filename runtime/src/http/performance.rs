//! `/python/configurePerformance`: the original's performance switches, each mapped to what
//! it can mean in a sandbox. `enable_caching` and `cache_ttl_s` drive the tenant's result
//! cache (`registry::cache`); the thread and GIL switches have nothing to act on (each tool
//! is one single-threaded WASI interpreter; WASI preview 1 has no threads) and are accepted
//! and reported as not applicable, with the reason.

use std::time::Duration;

use axum::Extension;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::body::OptionalJsonBody;
use super::envelope::Data as Success;
use super::error::ApiError;
use super::python::Authed;
use crate::registry::{CacheStats, MAX_TTL};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PerformanceBody {
    #[serde(default)]
    enable_caching: Option<bool>,
    #[serde(default)]
    cache_ttl_s: Option<u64>,
    #[serde(default)]
    thread_pool_size: Option<u32>,
    #[serde(default)]
    enable_threading: Option<bool>,
    #[serde(default)]
    enable_gil_optimization: Option<bool>,
}

/// How one field was taken.
#[derive(Serialize)]
pub struct Setting {
    value: serde_json::Value,
    applied: bool,
    /// What it drives, or why nothing.
    meaning: String,
}

#[derive(Serialize)]
pub struct PerformanceData {
    cache: CacheStats,
    settings: std::collections::BTreeMap<&'static str, Setting>,
}

/// `POST /python/configurePerformance {enable_caching?, cache_ttl_s?, thread_pool_size?,
/// enable_threading?, enable_gil_optimization?}`: absent fields keep their setting; an
/// empty body only reports.
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
    cache.configure(enabled, Some(Duration::from_secs(ttl)));

    let mut settings = std::collections::BTreeMap::new();
    if let Some(value) = body.enable_caching {
        settings.insert(
            "enable_caching",
            Setting {
                value: value.into(),
                applied: true,
                meaning: "the tenant's result cache for /python/call (pure functions; see \
                          the README)"
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
