//! Warnings that must not flood the log however often their cause repeats.

use std::{collections::HashSet, sync::Mutex};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_first_once() {
        let once = OncePerKey::default();
        assert!(once.first("a.test"));
        assert!(!once.first("a.test"));
        assert!(once.first("b.test"));
    }
}
