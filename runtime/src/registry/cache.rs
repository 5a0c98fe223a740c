//! Result caching for an owner's calls (`configurePerformance {enable_caching}`): off by
//! default, and meant for pure functions.
//!
//! The key is a BLAKE3 hash of the alias and its load (a random id per load, so nothing
//! cached for an earlier load of the alias can answer a later one), the function, the
//! arguments' canonical text (the
//! JSON without insignificant whitespace: equal text means equal values, so a hit is always
//! right; the same value written differently, say with keys in another order, only misses)
//! and the hash of the tool's script as loaded. Only successful calls are kept, with their
//! output. A tool's entries are dropped when it is reloaded, unloaded or replaced, and on
//! any request into it other than a call or a read (`setVariable`, `inject`, `eval`, object
//! requests, ...). Entries expire after the TTL; the cache holds at most
//! [`MAX_ENTRIES`] entries and [`MAX_BYTES`] bytes, dropping the oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;

use super::lock;

pub const MAX_ENTRIES: usize = 1024;
pub const MAX_BYTES: usize = 16 << 20;
/// The largest result (with its output) worth keeping.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

pub type Key = [u8; 32];

/// A kept answer.
#[derive(Clone)]
pub struct Hit {
    pub result: Box<RawValue>,
    pub stdout: String,
    pub stderr: String,
}

struct Entry {
    alias: String,
    hit: Hit,
    expires: Instant,
    bytes: usize,
}

#[derive(Default)]
struct State {
    enabled: bool,
    ttl: Option<Duration>,
    entries: HashMap<Key, Entry>,
    /// Insertion order, oldest first (may name keys already removed).
    order: VecDeque<Key>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

/// What `statistics` and `configurePerformance` show.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    pub enabled: bool,
    pub ttl_s: u64,
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Default)]
pub struct ResultCache {
    state: Mutex<State>,
}

/// The key of a call to the load `load_id` of `alias`.
pub fn key(
    alias: &str,
    load_id: u64,
    function: &str,
    args: &RawValue,
    kwargs: &RawValue,
    script: &Key,
) -> Key {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&load_id.to_le_bytes());
    for part in [alias, function] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    for raw in [args, kwargs] {
        let text = canonical(raw.get());
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(script);
    *hasher.finalize().as_bytes()
}

/// JSON text without whitespace outside strings.
fn canonical(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !c.is_ascii_whitespace() {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

impl ResultCache {
    /// Turns caching on or off (off drops every entry) and sets the TTL.
    pub fn configure(&self, enabled: bool, ttl: Option<Duration>) {
        let mut state = lock(&self.state);
        state.enabled = enabled;
        state.ttl = ttl.map(|t| t.min(MAX_TTL));
        if !enabled {
            state.entries.clear();
            state.order.clear();
            state.bytes = 0;
        }
    }

    pub fn enabled(&self) -> bool {
        lock(&self.state).enabled
    }

    /// A live entry for `key`, counting the hit or miss.
    pub fn get(&self, key: &Key) -> Option<Hit> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let found = match state.entries.get(key) {
            Some(entry) if entry.expires > now => Some(entry.hit.clone()),
            Some(_) => {
                if let Some(entry) = state.entries.remove(key) {
                    state.bytes -= entry.bytes;
                }
                None
            }
            None => None,
        };
        if found.is_some() {
            state.hits += 1;
        } else {
            state.misses += 1;
        }
        found
    }

    /// Keeps a successful call's answer (if caching is on and it is small enough).
    pub fn put(&self, key: Key, alias: &str, hit: Hit) {
        let bytes = hit.result.get().len() + hit.stdout.len() + hit.stderr.len() + alias.len();
        let mut state = lock(&self.state);
        if !state.enabled || bytes > MAX_ENTRY_BYTES {
            return;
        }
        let expires = Instant::now() + state.ttl.unwrap_or(DEFAULT_TTL);
        if let Some(old) = state.entries.remove(&key) {
            state.bytes -= old.bytes;
        }
        while state.entries.len() >= MAX_ENTRIES || state.bytes + bytes > MAX_BYTES {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some(entry) = state.entries.remove(&oldest) {
                state.bytes -= entry.bytes;
            }
        }
        state.entries.insert(
            key,
            Entry {
                alias: alias.to_owned(),
                hit,
                expires,
                bytes,
            },
        );
        state.order.push_back(key);
        state.bytes += bytes;
        if state.order.len() > 4 * MAX_ENTRIES {
            let State { order, entries, .. } = &mut *state;
            order.retain(|k| entries.contains_key(k));
        }
    }

    /// Drops every entry of `alias`.
    pub fn invalidate(&self, alias: &str) {
        let mut state = lock(&self.state);
        let mut freed = 0;
        state.entries.retain(|_, entry| {
            let keep = entry.alias != alias;
            if !keep {
                freed += entry.bytes;
            }
            keep
        });
        state.bytes -= freed;
    }

    pub fn stats(&self) -> CacheStats {
        let state = lock(&self.state);
        CacheStats {
            enabled: state.enabled,
            ttl_s: state.ttl.unwrap_or(DEFAULT_TTL).as_secs(),
            entries: state.entries.len(),
            bytes: state.bytes,
            hits: state.hits,
            misses: state.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("json")
    }

    fn hit(text: &str) -> Hit {
        Hit {
            result: raw(text),
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    #[test]
    fn keys_tell_arguments_apart_and_ignore_whitespace() {
        let script = [0u8; 32];
        let k = |args: &str| key("a", 1, "f", &raw(args), &raw("{}"), &script);
        assert_eq!(k("[1, 2]"), k("[1,2]"));
        assert_ne!(k("[1,2]"), k("[2,1]"));
        assert_ne!(k(r#"["a b"]"#), k(r#"["ab"]"#));
        assert_ne!(
            k("[123456789012345678901234567890]"),
            k("[123456789012345678901234567891]")
        );
        assert_ne!(
            key("a", 1, "f", &raw("[]"), &raw("{}"), &script),
            key("a", 1, "f", &raw("[]"), &raw("{}"), &[1u8; 32])
        );
        assert_ne!(
            key("a", 1, "f", &raw("[]"), &raw("{}"), &script),
            key("a", 2, "f", &raw("[]"), &raw("{}"), &script)
        );
        // no ambiguity between the parts
        assert_ne!(
            key("ab", 1, "c", &raw("[]"), &raw("{}"), &script),
            key("a", 1, "bc", &raw("[]"), &raw("{}"), &script)
        );
    }

    #[test]
    fn entries_expire_are_invalidated_and_are_bounded() {
        let cache = ResultCache::default();
        let k = [7u8; 32];
        cache.put(k, "a", hit("1"));
        assert!(cache.get(&k).is_none(), "off by default");
        cache.configure(true, Some(Duration::from_millis(30)));
        cache.put(k, "a", hit("1"));
        assert_eq!(
            cache.get(&k).map(|h| h.result.get().to_owned()),
            Some("1".into())
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&k).is_none(), "expired");
        cache.configure(true, None);
        cache.put(k, "a", hit("1"));
        cache.invalidate("b");
        assert!(cache.get(&k).is_some());
        cache.invalidate("a");
        assert!(cache.get(&k).is_none());
        for i in 0..(MAX_ENTRIES + 10) {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.put(k, "a", hit("2"));
        }
        assert_eq!(cache.stats().entries, MAX_ENTRIES);
        let big = format!("\"{}\"", "x".repeat(MAX_ENTRY_BYTES));
        cache.put([9u8; 32], "a", hit(&big));
        assert!(cache.get(&[9u8; 32]).is_none(), "too large to keep");
    }
}
