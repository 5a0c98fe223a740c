//! What the server counts about itself: the Prometheus families behind `GET /metrics`
//! ([`Metrics::render`]) and the per-tenant usage behind `GET /usage` ([`usage`]).
//!
//! Plain data every layer records into (the HTTP edge its requests, the registry its calls,
//! pools and instances); nothing here knows a tenant beyond its id. Label values are only
//! names an operator or the server chose (tenant ids, route templates, outcome names, modes)
//! and tool aliases, which a tenant chooses: each tenant gets at most
//! [`MAX_TOOL_SERIES`] distinct tool labels, and calls of any further alias are counted
//! under `tool="_other"` (and in `scriptbox_metric_series_capped_total`), so a tenant that
//! loads and unloads thousands of aliases cannot grow the series count.

pub mod usage;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The most distinct `tool` label values one tenant gets; see the module docs.
pub const MAX_TOOL_SERIES: usize = 64;

/// The label for calls of a tenant's aliases past [`MAX_TOOL_SERIES`].
pub const OTHER_TOOL: &str = "_other";

/// The `tool` label of work that has no tool: a fresh sandbox (`execute`), a refusal before
/// any tool was chosen (the rate limit).
pub const NO_TOOL: &str = "_none";

/// How a call ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallOutcome {
    Ok,
    /// The guest answered with an error (a Python exception, an unserializable result).
    Error,
    Fuel,
    Deadline,
    Memory,
    OutputCap,
    Cancelled,
    /// The guest stopped otherwise (a trap, an exit, a broken frame).
    Crashed,
    QueueFull,
    RateLimited,
    /// A tenant or server quota refused it (calls in flight, capacity).
    Quota,
}

impl CallOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Fuel => "fuel",
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::OutputCap => "output_cap",
            Self::Cancelled => "cancelled",
            Self::Crashed => "crashed",
            Self::QueueFull => "queue_full",
            Self::RateLimited => "rate_limited",
            Self::Quota => "quota",
        }
    }

    /// Whether the guest ran (the other outcomes are refusals before it did).
    pub fn ran(self) -> bool {
        !matches!(self, Self::QueueFull | Self::RateLimited | Self::Quota)
    }
}

/// One finished (or refused) call, as the registry saw it.
#[derive(Debug, Clone)]
pub struct CallRecord<'a> {
    pub tenant: &'a str,
    pub tool: &'a str,
    /// `persistent` or `isolated` (a fresh sandbox is isolated).
    pub mode: &'static str,
    pub outcome: CallOutcome,
    pub fuel: u64,
    pub elapsed: Duration,
    /// CPU time the guest used on the host's threads.
    pub cpu: Duration,
    /// Result, stdout and stderr bytes.
    pub bytes_out: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tenant: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to about 52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// A server's counters. One per server (tests run several servers in one process).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Histograms<ModeLabels>,
    call_fuel: Histogram,
    respawned: Counter,
    pool_misses: Counter,
    capped: Family<TenantLabels, Counter>,
    tools_seen: Mutex<HashMap<String, HashSet<String>>>,
    /// Per-tenant usage and the node's recent calls.
    pub usage: usage::Usage,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("scriptbox");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            requests.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls (and other ops) by tenant, tool and outcome",
            calls.clone(),
        );
        let call_seconds: Histograms<ModeLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "call_duration_seconds",
            "Time calls ran in the sandbox, by mode",
            call_seconds.clone(),
        );
        // 100 thousand to about 100 billion instructions' worth of fuel.
        let call_fuel = Histogram::new(exponential_buckets(1e5, 4.0, 16));
        registry.register("call_fuel", "Fuel one call used", call_fuel.clone());
        let respawned = Counter::default();
        registry.register(
            "instances_respawned",
            "Instances replaced after a fault, a memory cap or a cancel",
            respawned.clone(),
        );
        let pool_misses = Counter::default();
        registry.register(
            "isolated_pool_misses",
            "Isolated calls that found their tool's pool empty and started their own instance",
            pool_misses.clone(),
        );
        let capped = Family::<TenantLabels, Counter>::default();
        registry.register(
            "metric_series_capped",
            "Calls counted under tool=\"_other\": the tenant had used its tool labels",
            capped.clone(),
        );
        Self {
            registry,
            requests,
            calls,
            call_seconds,
            call_fuel,
            respawned,
            pool_misses,
            capped,
            tools_seen: Mutex::new(HashMap::new()),
            usage: usage::Usage::starting_now(),
        }
    }

    /// A request answered: `route` is the matched route template (never the raw path).
    pub fn count_request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// A call finished or was refused.
    pub fn record_call(&self, call: &CallRecord<'_>) {
        let tool = self.tool_label(call.tenant, call.tool);
        self.calls
            .get_or_create(&CallLabels {
                tenant: call.tenant.to_owned(),
                tool: tool.clone(),
                outcome: call.outcome.name(),
            })
            .inc();
        if call.outcome.ran() {
            self.call_seconds
                .get_or_create(&ModeLabels { mode: call.mode })
                .observe(call.elapsed.as_secs_f64());
            self.call_fuel.observe(call.fuel as f64);
        }
        self.usage.record(call, &tool);
    }

    /// A persistent tool's instance was replaced.
    pub fn instance_respawned(&self) {
        self.respawned.inc();
    }

    /// An isolated call started its own instance.
    pub fn pool_missed(&self) {
        self.pool_misses.inc();
    }

    /// The `tool` label for `tool` of `tenant`: itself while the tenant has label room.
    fn tool_label(&self, tenant: &str, tool: &str) -> String {
        if tool == NO_TOOL {
            return tool.to_owned();
        }
        let mut seen = self
            .tools_seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let known = seen.entry(tenant.to_owned()).or_default();
        if known.contains(tool) {
            return tool.to_owned();
        }
        if known.len() < MAX_TOOL_SERIES {
            known.insert(tool.to_owned());
            return tool.to_owned();
        }
        drop(seen);
        self.capped
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .inc();
        OTHER_TOOL.to_owned()
    }

    /// The Prometheus text (format 0.0.4): the counters, then `snapshot`'s gauges.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut text = String::new();
        let mut gauges = Registry::with_prefix("scriptbox");
        snapshot.register(&mut gauges);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &gauges);
        text
    }
}

/// One tenant's state at a scrape.
#[derive(Debug, Clone, Default)]
pub struct TenantGauges {
    pub tenant: String,
    pub tools_loaded: i64,
    pub scratch_bytes: i64,
    pub calls_in_flight: i64,
}

/// The state read at each scrape (gauges), from the parts that hold it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub tenants: Vec<TenantGauges>,
    /// Instances ready in the isolated tools' pools.
    pub pool_ready: i64,
    /// Instances started since the server started (pool refills included).
    pub instances_started: u64,
    /// Tasks in the store by status.
    pub tasks: Vec<(String, i64)>,
    /// The images' state: `off`, `preparing`, `ready` or `failed`.
    pub images: &'static str,
    /// Store operations that failed since the process started.
    pub store_errors: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

impl Snapshot {
    fn register(&self, registry: &mut Registry) {
        let per_tenant =
            |registry: &mut Registry, name: &str, help: &str, value: fn(&TenantGauges) -> i64| {
                let family = Family::<TenantLabels, Gauge>::default();
                for t in &self.tenants {
                    family
                        .get_or_create(&TenantLabels {
                            tenant: t.tenant.clone(),
                        })
                        .set(value(t));
                }
                registry.register(name, help, family);
            };
        per_tenant(registry, "tools_loaded", "Tools loaded, per tenant", |t| {
            t.tools_loaded
        });
        per_tenant(
            registry,
            "scratch_bytes",
            "Bytes in the tenant's scratch folders",
            |t| t.scratch_bytes,
        );
        per_tenant(
            registry,
            "calls_in_flight",
            "Calls running or queued, per tenant (the queue depth)",
            |t| t.calls_in_flight,
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
            let g = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
            g.set(value);
            registry.register(name, help, g);
        };
        gauge(
            registry,
            "isolated_pool_ready",
            "Pre-warmed instances waiting in the isolated tools' pools",
            self.pool_ready,
        );
        let started = Counter::<u64, AtomicU64>::default();
        started.inc_by(self.instances_started);
        registry.register(
            "instances_started",
            "Instances started (loads, respawns, pool refills, fresh sandboxes)",
            started,
        );
        let errors = Counter::<u64, AtomicU64>::default();
        errors.inc_by(self.store_errors);
        registry.register(
            "store_errors",
            "Store operations that failed (this process)",
            errors,
        );
        let tasks = Family::<StateLabels, Gauge>::default();
        for (state, count) in &self.tasks {
            tasks
                .get_or_create(&StateLabels {
                    state: state.clone(),
                })
                .set(*count);
        }
        registry.register("tasks", "Tasks in the store, by state", tasks);
        let images = Family::<StateLabels, Gauge>::default();
        for state in ["off", "preparing", "ready", "failed"] {
            images
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(i64::from(state == self.images));
        }
        registry.register(
            "images",
            "The pre-initialised images' state (1 for the current one)",
            images,
        );
    }
}

/// Counts a store failure (the store calls it; read into [`Snapshot::store_errors`]).
pub fn store_failed() {
    STORE_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// Store failures since the process started.
pub fn store_errors() -> u64 {
    STORE_ERRORS.load(Ordering::Relaxed)
}

static STORE_ERRORS: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tenant: &str, tool: &str, outcome: CallOutcome) -> CallRecord<'static> {
        CallRecord {
            tenant: Box::leak(tenant.to_owned().into_boxed_str()),
            tool: Box::leak(tool.to_owned().into_boxed_str()),
            mode: "persistent",
            outcome,
            fuel: 1000,
            elapsed: Duration::from_millis(2),
            cpu: Duration::from_millis(1),
            bytes_out: 10,
        }
    }

    #[test]
    fn tool_labels_are_capped_per_tenant() {
        let metrics = Metrics::new();
        for i in 0..(MAX_TOOL_SERIES + 10) {
            metrics.record_call(&call("t", &format!("a{i}"), CallOutcome::Ok));
        }
        metrics.record_call(&call("u", "a0", CallOutcome::Ok));
        let text = metrics.render(&Snapshot::default());
        let series = text
            .lines()
            .filter(|l| l.starts_with("scriptbox_calls_total{") && l.contains("tenant=\"t\""))
            .count();
        assert_eq!(series, MAX_TOOL_SERIES + 1, "{text}");
        assert!(
            text.contains("scriptbox_calls_total{tenant=\"t\",tool=\"_other\",outcome=\"ok\"} 10")
        );
        assert!(text.contains("scriptbox_metric_series_capped_total{tenant=\"t\"} 10"));
        assert!(text.contains("scriptbox_calls_total{tenant=\"u\",tool=\"a0\",outcome=\"ok\"} 1"));
    }

    #[test]
    fn refusals_count_but_do_not_observe_latency() {
        let metrics = Metrics::new();
        metrics.record_call(&call("t", NO_TOOL, CallOutcome::RateLimited));
        let text = metrics.render(&Snapshot::default());
        assert!(text.contains("outcome=\"rate_limited\"} 1"), "{text}");
        assert!(!text.contains("scriptbox_call_duration_seconds_count{mode=\"persistent\"}"));
    }
}
