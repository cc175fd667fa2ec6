//! Warnings that must not flood the log however often their cause repeats.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

/// Keys already warned about (hosts, endpoints): each is said once for the lifetime of
/// this set, which lives in a snapshot, so a reload may say it again.
#[derive(Default)]
pub(crate) struct OncePerKey(Mutex<HashSet<String>>);

impl OncePerKey {
    /// Whether `key` is new here (and now remembered).
    pub(crate) fn first(&self, key: &str) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        !seen.contains(key) && seen.insert(key.to_owned())
    }
}

/// A warning that an attacker or a failing upstream can trigger at will: written at most
/// once per period, saying how many like it were held back since the last one.
pub(crate) struct RateLimited {
    period_ms: u64,
    /// Milliseconds since [`epoch`] of the last one written, plus one (0: never).
    last: AtomicU64,
    held_back: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl RateLimited {
    pub(crate) const fn per(period: Duration) -> Self {
        RateLimited {
            period_ms: period.as_millis() as u64,
            last: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` when a warning may be written now.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(epoch().elapsed().as_millis() as u64 + 1)
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + self.period_ms;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_warning_is_written_once_per_period_and_counts_the_rest() {
        let w = RateLimited::per(Duration::from_secs(10));
        assert_eq!(w.allow_at(1), Some(0));
        for t in [2, 5_000, 10_000] {
            assert_eq!(w.allow_at(t), None, "at {t} ms");
        }
        assert_eq!(w.allow_at(10_001), Some(3), "three held back");
        assert_eq!(w.allow_at(10_002), None);
    }

    #[test]
    fn a_key_is_first_once() {
        let once = OncePerKey::default();
        assert!(once.first("a.test"));
        assert!(!once.first("a.test"));
        assert!(once.first("b.test"));
    }
}
