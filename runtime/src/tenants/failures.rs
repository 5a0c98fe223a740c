//! Failed key checks per client address, in one-minute windows: past the limit every key
//! the address sends is refused until its window ends, so guessing gets no answers at all.
//!
//! Hand-written rather than `governor`'s keyed limiter because the check must look without
//! spending (a correct key must not use up the budget) and the map must stay bounded.
//! IPv6 addresses count per /64, the block one client usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past it expired windows are dropped, then the oldest.
const MAX_TRACKED: usize = 10_000;

/// The address a client is counted under: itself for IPv4, its /64 for IPv6.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

pub struct FailureWindow {
    limit: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureWindow {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (Instant, u32)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `client` must wait, if it used up its failures.
    pub fn locked_out(&self, client: IpAddr) -> Option<Duration> {
        let client = address_key(client);
        let seen = self.seen();
        let (start, count) = seen.get(&client)?;
        let elapsed = start.elapsed();
        (elapsed < WINDOW && *count >= self.limit).then(|| WINDOW - elapsed)
    }

    pub fn record(&self, client: IpAddr) {
        let client = address_key(client);
        let mut seen = self.seen();
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&client) {
            seen.retain(|_, (start, _)| start.elapsed() < WINDOW);
            if seen.len() >= MAX_TRACKED
                && let Some(oldest) = seen
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(ip, _)| *ip)
            {
                tracing::warn!(target: "scriptbox::audit", event = "auth_failures_evicted", "too many addresses failing key checks; forgetting the oldest");
                seen.remove(&oldest);
            }
        }
        let entry = seen.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_limit_and_only_that_address() {
        let window = FailureWindow::new(2);
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        window.record(a);
        assert!(window.locked_out(a).is_none());
        window.record(a);
        assert!(window.locked_out(a).is_some());
        assert!(window.locked_out(b).is_none());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let window = FailureWindow::new(1);
        window.record("2001:db8::1".parse().expect("ip"));
        assert!(
            window
                .locked_out("2001:db8::ffff".parse().expect("ip"))
                .is_some()
        );
        assert!(
            window
                .locked_out("2001:db8:0:1::1".parse().expect("ip"))
                .is_none()
        );
    }
}
