//! Which prompt prefixes are hot: seen again within the provider's cache lifetime, so that an
//! explicit cache write (Anthropic `cache_control`, billed at a premium) is read back before it
//! expires and pays for itself.
//!
//! In memory per replica (a cold replica simply says "not hot" for a while).

use std::collections::HashMap;
use std::sync::Mutex;

/// Anthropic's default cache lifetime.
pub const DEFAULT_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Keys remembered at most (oldest forgotten first).
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug)]
pub struct PrefixTracker {
    window_ms: u64,
    capacity: usize,
    seen: Mutex<HashMap<String, u64>>,
}

impl Default for PrefixTracker {
    fn default() -> Self {
        PrefixTracker::new(DEFAULT_WINDOW_MS, DEFAULT_CAPACITY)
    }
}

impl PrefixTracker {
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        PrefixTracker {
            window_ms,
            capacity: capacity.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records a request with `key` at `now_ms`; true when the key was seen within the window
    /// before (the prefix is hot).
    pub fn observe(&self, key: &str, now_ms: u64) -> bool {
        if key.is_empty() || key.len() > 128 {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let hot = seen
            .get(key)
            .is_some_and(|t| now_ms.saturating_sub(*t) <= self.window_ms);
        if seen.len() >= self.capacity && !seen.contains_key(key) {
            let window = self.window_ms;
            seen.retain(|_, t| now_ms.saturating_sub(*t) <= window);
            if seen.len() >= self.capacity {
                // Still full of live keys: forget the oldest half.
                let mut times: Vec<u64> = seen.values().copied().collect();
                times.sort_unstable();
                let cut = times.get(times.len() / 2).copied().unwrap_or(0);
                seen.retain(|_, t| *t > cut);
            }
        }
        seen.insert(key.to_string(), now_ms);
        hot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_hot_when_seen_again_within_the_window() {
        let p = PrefixTracker::new(1000, 10);
        assert!(!p.observe("a", 0));
        assert!(p.observe("a", 500));
        assert!(p.observe("a", 1400), "the window slides with each sighting");
        assert!(!p.observe("a", 3000));
        assert!(!p.observe("b", 3000));
        assert!(!p.observe("", 3000));
    }

    #[test]
    fn memory_stays_bounded() {
        let p = PrefixTracker::new(1_000_000, 100);
        for i in 0..1000u64 {
            p.observe(&format!("k{i}"), i);
        }
        let n = p.seen.lock().map(|s| s.len()).unwrap_or(0);
        assert!(n <= 100, "{n}");
        assert!(p.observe("k999", 1000), "recent keys are kept");
    }
}
