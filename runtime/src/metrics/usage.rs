//! Per-tenant usage (`GET /usage`, `GET /admin/usage`): calls, fuel, CPU, bytes out and
//! errors by kind, since the server started and over the last hour (60 one-minute buckets);
//! per tool the same with latency; and the node's recent calls in 10-second buckets for the
//! operator's page (calls, errors, p50/p99).
//!
//! Everything is bounded: tools per tenant by the metric label cap (past it they are counted
//! as `_other`), minutes to 60, recent buckets to 60 (ten minutes), latencies kept per
//! bucket to [`MAX_SAMPLES`] (past it every further one replaces an earlier one at random,
//! so the percentiles stay a fair sample).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{CallOutcome, CallRecord};

/// Latencies kept per 10-second bucket.
pub const MAX_SAMPLES: usize = 2048;

const MINUTES: usize = 60;
const RECENT_BUCKETS: usize = 60;
const RECENT_SECONDS: u64 = 10;

/// What a tenant (or a tool) used.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub calls: u64,
    pub fuel: u64,
    pub cpu_ms: f64,
    pub bytes_out: u64,
    /// Calls that did not end `ok`, by outcome (`error`, `fuel`, `deadline`, `memory`,
    /// `output_cap`, `cancelled`, `crashed`, `queue_full`, `rate_limited`, `quota`).
    pub errors: BTreeMap<&'static str, u64>,
}

impl Totals {
    fn add(&mut self, call: &CallRecord<'_>) {
        self.calls += 1;
        self.fuel = self.fuel.saturating_add(call.fuel);
        self.cpu_ms += call.cpu.as_secs_f64() * 1000.0;
        self.bytes_out = self.bytes_out.saturating_add(call.bytes_out);
        if call.outcome != CallOutcome::Ok {
            *self.errors.entry(call.outcome.name()).or_default() += 1;
        }
    }

    fn merge(&mut self, other: &Totals) {
        self.calls += other.calls;
        self.fuel = self.fuel.saturating_add(other.fuel);
        self.cpu_ms += other.cpu_ms;
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// A tool's totals and its latency.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolTotals {
    pub tool: String,
    #[serde(flatten)]
    pub totals: Totals,
    /// Mean and largest time in the sandbox of its calls that ran.
    pub mean_ms: f64,
    pub max_ms: f64,
    #[serde(skip)]
    ran: u64,
    #[serde(skip)]
    elapsed_ms: f64,
}

/// One tenant's usage, as `/usage` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct TenantUsage {
    pub tenant: String,
    pub since_start: Totals,
    pub last_hour: Totals,
    /// Its tools since the server started, busiest first.
    pub tools: Vec<ToolTotals>,
}

/// Ten seconds of the node's calls.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Unix seconds at the bucket's start.
    pub at: u64,
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Default)]
struct Tenant {
    total: Totals,
    /// (minute since the epoch, its totals), oldest first.
    minutes: VecDeque<(u64, Totals)>,
    tools: HashMap<String, ToolTotals>,
}

struct Recent {
    at: u64,
    calls: u64,
    errors: u64,
    latencies: Vec<f64>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Tenant>,
    recent: VecDeque<Recent>,
    /// For the sample's replacement choice (a cheap xorshift, not for secrets).
    seed: u64,
}

/// Every tenant's usage on this node.
#[derive(Default)]
pub struct Usage {
    state: Mutex<State>,
    started: u64,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a call under `tool` (the capped label).
    pub(super) fn record(&self, call: &CallRecord<'_>, tool: &str) {
        self.record_at(call, tool, now_s());
    }

    fn record_at(&self, call: &CallRecord<'_>, tool: &str, now: u64) {
        let mut state = self.lock();
        let tenant = state.tenants.entry(call.tenant.to_owned()).or_default();
        tenant.total.add(call);
        let minute = now / 60;
        if tenant.minutes.back().is_none_or(|(m, _)| *m != minute) {
            tenant.minutes.push_back((minute, Totals::default()));
            while tenant.minutes.len() > MINUTES {
                tenant.minutes.pop_front();
            }
        }
        if let Some((_, totals)) = tenant.minutes.back_mut() {
            totals.add(call);
        }
        let entry = tenant
            .tools
            .entry(tool.to_owned())
            .or_insert_with(|| ToolTotals {
                tool: tool.to_owned(),
                ..ToolTotals::default()
            });
        entry.totals.add(call);
        let ms = call.elapsed.as_secs_f64() * 1000.0;
        if call.outcome.ran() {
            entry.ran += 1;
            entry.elapsed_ms += ms;
            entry.max_ms = entry.max_ms.max(ms);
        }
        let at = now - now % RECENT_SECONDS;
        if state.recent.back().is_none_or(|b| b.at != at) {
            state.recent.push_back(Recent {
                at,
                calls: 0,
                errors: 0,
                latencies: Vec::new(),
            });
            while state.recent.len() > RECENT_BUCKETS {
                state.recent.pop_front();
            }
        }
        state.seed = state
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = (state.seed >> 33) as usize;
        if let Some(bucket) = state.recent.back_mut() {
            bucket.calls += 1;
            if call.outcome != CallOutcome::Ok {
                bucket.errors += 1;
            }
            if call.outcome.ran() {
                if bucket.latencies.len() < MAX_SAMPLES {
                    bucket.latencies.push(ms);
                } else {
                    // reservoir sampling: keep each of the n seen with probability k/n
                    let seen = bucket.calls as usize;
                    let slot = pick % seen.max(1);
                    if slot < MAX_SAMPLES {
                        bucket.latencies[slot] = ms;
                    }
                }
            }
        }
    }

    /// One tenant's usage (all zero if it made no call yet).
    pub fn tenant(&self, id: &str) -> TenantUsage {
        self.tenant_at(id, now_s())
    }

    fn tenant_at(&self, id: &str, now: u64) -> TenantUsage {
        let state = self.lock();
        match state.tenants.get(id) {
            Some(tenant) => view(id, tenant, now),
            None => TenantUsage {
                tenant: id.to_owned(),
                since_start: Totals::default(),
                last_hour: Totals::default(),
                tools: Vec::new(),
            },
        }
    }

    /// Every tenant that made a call, by id.
    pub fn all(&self) -> Vec<TenantUsage> {
        let now = now_s();
        let state = self.lock();
        let mut all: Vec<_> = state
            .tenants
            .iter()
            .map(|(id, tenant)| view(id, tenant, now))
            .collect();
        all.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        all
    }

    /// The node's calls in 10-second buckets over the last ten minutes, oldest first (only
    /// buckets that had calls).
    pub fn recent(&self) -> Vec<Bucket> {
        let state = self.lock();
        state
            .recent
            .iter()
            .map(|b| {
                let mut sorted = b.latencies.clone();
                sorted.sort_by(f64::total_cmp);
                Bucket {
                    at: b.at,
                    calls: b.calls,
                    errors: b.errors,
                    p50_ms: percentile(&sorted, 0.50),
                    p99_ms: percentile(&sorted, 0.99),
                }
            })
            .collect()
    }

    /// Unix seconds when this node started counting.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// A usage table that started counting now.
    pub fn starting_now() -> Self {
        Self {
            state: Mutex::new(State::default()),
            started: now_s(),
        }
    }
}

fn view(id: &str, tenant: &Tenant, now: u64) -> TenantUsage {
    let from = (now / 60).saturating_sub(MINUTES as u64 - 1);
    let mut last_hour = Totals::default();
    for (minute, totals) in &tenant.minutes {
        if *minute >= from {
            last_hour.merge(totals);
        }
    }
    let mut tools: Vec<ToolTotals> = tenant
        .tools
        .values()
        .map(|t| ToolTotals {
            mean_ms: if t.ran == 0 {
                0.0
            } else {
                t.elapsed_ms / t.ran as f64
            },
            ..t.clone()
        })
        .collect();
    tools.sort_by(|a, b| {
        b.totals
            .calls
            .cmp(&a.totals.calls)
            .then_with(|| a.tool.cmp(&b.tool))
    });
    TenantUsage {
        tenant: id.to_owned(),
        since_start: tenant.total.clone(),
        last_hour,
        tools,
    }
}

/// The `q` quantile of sorted values (nearest rank), `None` if there are none.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(outcome: CallOutcome, ms: u64) -> CallRecord<'static> {
        CallRecord {
            tenant: "t",
            tool: "a",
            mode: "persistent",
            outcome,
            fuel: 100,
            elapsed: Duration::from_millis(ms),
            cpu: Duration::from_millis(ms),
            bytes_out: 5,
        }
    }

    #[test]
    fn totals_and_the_hour_window() {
        let usage = Usage::starting_now();
        let start = 1_000_000 * 60;
        usage.record_at(&call(CallOutcome::Ok, 2), "a", start);
        usage.record_at(&call(CallOutcome::Fuel, 4), "a", start + 30);
        // Two hours later: the first two are out of the hour, still in the total.
        usage.record_at(&call(CallOutcome::Ok, 6), "b", start + 7200);
        let view = usage.tenant_at("t", start + 7200);
        assert_eq!(view.since_start.calls, 3);
        assert_eq!(view.since_start.fuel, 300);
        assert_eq!(view.since_start.bytes_out, 15);
        assert_eq!(view.since_start.errors.get("fuel"), Some(&1));
        assert_eq!(view.last_hour.calls, 1);
        assert!(view.last_hour.errors.is_empty());
        let a = view.tools.iter().find(|t| t.tool == "a").expect("a");
        assert_eq!(a.totals.calls, 2);
        assert_eq!(a.max_ms, 4.0);
        assert_eq!(a.mean_ms, 3.0);
        assert_eq!(usage.tenant_at("nobody", start).since_start.calls, 0);
    }

    #[test]
    fn recent_buckets_have_percentiles() {
        let usage = Usage::starting_now();
        for ms in 1..=100 {
            usage.record_at(&call(CallOutcome::Ok, ms), "a", 5000);
        }
        usage.record_at(&call(CallOutcome::RateLimited, 0), "a", 5012);
        let recent = usage.recent();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].calls, 100);
        assert_eq!(recent[0].p50_ms, Some(50.0));
        assert_eq!(recent[0].p99_ms, Some(99.0));
        assert_eq!(recent[1].errors, 1);
        assert_eq!(recent[1].p99_ms, None);
    }

    #[test]
    fn percentile_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
    }
}
