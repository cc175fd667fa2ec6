//! The answers of an authentication service, remembered per key for as long as the
//! route's `cache` says (ingress-nginx's `auth-cache-key` and `auth-cache-duration`): a
//! busy page asks the service once per user and period, not once per request. As nginx's
//! proxy cache, an answer that sets a cookie or says it must not be stored is not.

use std::time::Duration;

use dashmap::DashMap;
use gatehouse_config::AuthCache;
use http::{header, HeaderMap, StatusCode};
use tokio::time::Instant;

/// Most answers remembered per route; past it, expired ones are dropped, and new ones are
/// not remembered until there is room.
const MAX_ANSWERS: usize = 10_000;

/// One route's remembered answers.
#[derive(Default)]
pub(crate) struct AuthAnswers {
    answers: DashMap<String, Remembered>,
}

struct Remembered {
    until: Instant,
    status: StatusCode,
    headers: HeaderMap,
}

impl AuthAnswers {
    /// The answer remembered under `key`, if still valid.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<(StatusCode, HeaderMap)> {
        let found = self.answers.get(key)?;
        if found.until > now {
            return Some((found.status, found.headers.clone()));
        }
        drop(found);
        self.answers.remove_if(key, |_, r| r.until <= now);
        None
    }

    /// Remembers an answer when `cache` lists its status and the answer allows it.
    pub(crate) fn remember(
        &self,
        cache: &AuthCache,
        key: String,
        status: StatusCode,
        headers: &HeaderMap,
        now: Instant,
    ) {
        let Some(ttl) = validity(cache, status, headers) else {
            return;
        };
        if self.answers.len() >= MAX_ANSWERS {
            self.answers.retain(|_, r| r.until > now);
            if self.answers.len() >= MAX_ANSWERS {
                return;
            }
        }
        self.answers.insert(
            key,
            Remembered {
                until: now + ttl,
                status,
                headers: headers.clone(),
            },
        );
    }
}

/// How long an answer may be remembered: the route's period for its status, unless it sets
/// a cookie, or its Cache-Control forbids storing it or gives its own max-age.
fn validity(cache: &AuthCache, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let ttl = cache.validity(status.as_u16())?;
    if headers.contains_key(header::SET_COOKIE) {
        return None;
    }
    let mut max_age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or("no-store").split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if matches!(directive.as_str(), "no-store" | "no-cache" | "private") {
                return None;
            }
            if let Some(secs) = directive.strip_prefix("max-age=") {
                max_age = Some(Duration::from_secs(secs.trim().parse().ok()?));
            }
        }
    }
    match max_age {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => Some(ttl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> AuthCache {
        AuthCache::parse("$http_authorization", "200 5m, 401 30s").unwrap()
    }

    #[test]
    fn listed_statuses_are_remembered_for_their_period() {
        let answers = AuthAnswers::default();
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("x-auth-request-user", "alice".parse().unwrap());
        answers.remember(&cache(), "A".into(), StatusCode::OK, &h, now);
        answers.remember(
            &cache(),
            "B".into(),
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            now,
        );
        answers.remember(
            &cache(),
            "C".into(),
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            now,
        );
        let later = now + Duration::from_secs(60);
        let (status, headers) = answers.get("A", later).unwrap();
        assert_eq!(
            (status, &headers["x-auth-request-user"]),
            (StatusCode::OK, &"alice".parse().unwrap())
        );
        assert!(answers.get("B", now).is_some());
        assert!(
            answers.get("B", later).is_none(),
            "401 was valid for 30 s only"
        );
        assert!(answers.get("C", now).is_none(), "403 is not listed");
        assert!(answers.get("A", now + Duration::from_secs(301)).is_none());
    }

    #[test]
    fn cookies_and_cache_control_are_honoured() {
        let c = cache();
        let with = |name: &'static str, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            validity(&c, StatusCode::OK, &h)
        };
        assert_eq!(with("set-cookie", "s=1"), None);
        assert_eq!(with("cache-control", "private"), None);
        assert_eq!(with("cache-control", "no-store, max-age=60"), None);
        assert_eq!(with("cache-control", "max-age=0"), None);
        assert_eq!(
            with("cache-control", "public, max-age=60"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(with("x-other", "1"), Some(Duration::from_secs(300)));
    }
}
