//! Session affinity by cookie (ingress-nginx's `affinity: cookie`). A client's cookie
//! points at an endpoint; a client without one gets one with the answer.
//!
//! In `balanced` mode the cookie holds a random key placed on the service's consistent-hash
//! ring, so when endpoints come and go only the sessions of those that left move, and new
//! endpoints get their share of new keys. In `persistent` mode it holds the endpoint's
//! keyed token, and the session stays while that endpoint exists. Neither value says
//! anything of the endpoint's address.

use std::time::{Duration, SystemTime};

use gatehouse_config::{Affinity, AffinityMode};
use http::{HeaderMap, HeaderValue};

use crate::{
    headers,
    upstream::{key_hash, EndpointSet, Preference, Token},
};

/// Attempts at a random key that lands on a given endpoint (ingress-nginx tries 20).
const KEY_ATTEMPTS: usize = 20;

/// What the request's cookie said, for the answer's cookie.
pub(crate) struct Sticky<'a> {
    affinity: &'a Affinity,
    /// The endpoint the cookie (or the new key) points at.
    preferred: Option<usize>,
    /// The client's cookie points at an endpoint of the set.
    valid: bool,
    /// A new balanced key, for a client that had none.
    fresh: Option<String>,
}

/// The preference of a request with `headers` on `set`, and what the answer will need.
pub(crate) fn choose<'a>(
    affinity: &'a Affinity,
    set: &EndpointSet,
    headers: &HeaderMap,
) -> (Preference, Sticky<'a>) {
    let cookie = headers::cookie(headers, &affinity.cookie).filter(|v| !v.is_empty());
    let mut sticky = Sticky {
        affinity,
        preferred: None,
        valid: false,
        fresh: None,
    };
    let preference = match affinity.mode {
        AffinityMode::Balanced => {
            let key = match cookie {
                Some(key) => {
                    sticky.valid = true;
                    key.to_owned()
                }
                None => random_key(),
            };
            let hash = key_hash(key.as_bytes());
            sticky.preferred = set.ring().and_then(|r| r.find(hash));
            if !sticky.valid {
                sticky.fresh = Some(key);
            }
            Preference::Hash(hash)
        }
        AffinityMode::Persistent => {
            match cookie.and_then(Token::parse).and_then(|t| set.by_token(t)) {
                Some(i) => {
                    sticky.valid = true;
                    sticky.preferred = Some(i);
                    Preference::Endpoint(i)
                }
                None => Preference::None,
            }
        }
    };
    (preference, sticky)
}

/// Where the cookie goes: the rule's path unless the affinity names one.
pub(crate) struct CookieScope<'a> {
    pub(crate) default_path: &'a str,
    /// The request came over TLS (the default for Secure).
    pub(crate) tls: bool,
}

/// The Set-Cookie the answer carries, now that endpoint `answered` of `set` served: for a
/// client without a valid cookie, and for one whose endpoint failed when the affinity
/// says the cookie then moves (`change_on_failure`).
pub(crate) fn set_cookie(
    sticky: Sticky<'_>,
    set: &EndpointSet,
    answered: usize,
    scope: CookieScope<'_>,
) -> Option<HeaderValue> {
    let a = sticky.affinity;
    let moved = sticky.preferred != Some(answered);
    if sticky.valid && !(moved && a.change_on_failure) {
        return None;
    }
    let value = match a.mode {
        AffinityMode::Persistent => set.token(answered)?.to_string(),
        AffinityMode::Balanced => {
            let ring = set.ring()?;
            let lands = |key: &str| ring.find(key_hash(key.as_bytes())) == Some(answered);
            match sticky.fresh {
                Some(key) if lands(&key) => key,
                fresh => std::iter::repeat_with(random_key)
                    .take(KEY_ATTEMPTS)
                    .find(|k| lands(k))
                    .or(fresh)?,
            }
        }
    };
    HeaderValue::from_str(&cookie_text(a, &value, scope)).ok()
}

fn random_key() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn cookie_text(a: &Affinity, value: &str, scope: CookieScope<'_>) -> String {
    let mut text = format!(
        "{}={value}; Path={}",
        a.cookie,
        a.path.as_deref().unwrap_or(scope.default_path)
    );
    if let Some(domain) = &a.domain {
        text.push_str("; Domain=");
        text.push_str(domain);
    }
    if let Some(secs) = a.expires {
        let at = SystemTime::now() + Duration::from_secs(secs);
        text.push_str("; Expires=");
        text.push_str(&httpdate::fmt_http_date(at));
    }
    if let Some(secs) = a.max_age {
        text.push_str(&format!("; Max-Age={secs}"));
    }
    if a.secure.unwrap_or(scope.tls) {
        text.push_str("; Secure");
    }
    // As ingress-nginx: scripts of the page have no business with the routing cookie.
    text.push_str("; HttpOnly");
    if let Some(samesite) = a.samesite {
        text.push_str("; SameSite=");
        text.push_str(samesite.as_str());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Endpoint;
    use gatehouse_config::SameSite;
    use std::sync::Arc;

    fn set(n: u8, affinity: &Affinity) -> EndpointSet {
        let list = (0..n)
            .map(|i| Arc::new(Endpoint::new(([10, 0, 0, i], 80).into())))
            .collect();
        let key = crate::upstream::TokenKey::new(Some("k"));
        let persistent = affinity.mode == AffinityMode::Persistent;
        EndpointSet::new(list, !persistent, persistent.then_some(&key))
    }

    fn with_cookie(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("cookie", format!("a=b; {name}={value}").parse().unwrap());
        h
    }

    const SCOPE: CookieScope<'static> = CookieScope {
        default_path: "/app",
        tls: false,
    };

    fn value_of(cookie: &HeaderValue) -> String {
        let text = cookie.to_str().unwrap();
        text.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    }

    #[test]
    fn a_new_client_gets_a_balanced_key_that_leads_back_to_its_endpoint() {
        let a = Affinity::new();
        let s = set(5, &a);
        let (pref, sticky) = choose(&a, &s, &HeaderMap::new());
        let Preference::Hash(hash) = pref else {
            panic!("{pref:?}")
        };
        let answered = s.ring().unwrap().find(hash).unwrap();
        let cookie = set_cookie(sticky, &s, answered, SCOPE).expect("a cookie for a new client");
        assert!(cookie.to_str().unwrap().starts_with("INGRESSCOOKIE="));
        assert!(cookie.to_str().unwrap().contains("; Path=/app; HttpOnly"));
        let back = with_cookie("INGRESSCOOKIE", &value_of(&cookie));
        let (again, sticky) = choose(&a, &s, &back);
        assert_eq!(again, Preference::Hash(hash));
        assert!(set_cookie(sticky, &s, answered, SCOPE).is_none(), "kept");
    }

    #[test]
    fn a_failed_endpoint_moves_the_cookie_only_with_change_on_failure() {
        let mut a = Affinity::new();
        let s = set(5, &a);
        let cookie = with_cookie("INGRESSCOOKIE", "0123456789abcdef");
        let (_, sticky) = choose(&a, &s, &cookie);
        let other = (sticky.preferred.unwrap() + 1) % 5;
        assert!(set_cookie(sticky, &s, other, SCOPE).is_none());
        a.change_on_failure = true;
        let (_, sticky) = choose(&a, &s, &cookie);
        let moved = set_cookie(sticky, &s, other, SCOPE).expect("moved");
        let hash = key_hash(value_of(&moved).as_bytes());
        assert_eq!(s.ring().unwrap().find(hash), Some(other));
    }

    #[test]
    fn persistent_cookies_name_their_endpoint_until_it_is_gone() {
        let mut a = Affinity::new();
        a.mode = AffinityMode::Persistent;
        a.samesite = Some(SameSite::Lax);
        a.max_age = Some(60);
        a.secure = Some(true);
        let s = set(3, &a);
        let (pref, sticky) = choose(&a, &s, &HeaderMap::new());
        assert_eq!(pref, Preference::None);
        let cookie = set_cookie(sticky, &s, 2, SCOPE).unwrap();
        let text = cookie.to_str().unwrap();
        assert!(
            text.ends_with("; Max-Age=60; Secure; HttpOnly; SameSite=Lax"),
            "{text}"
        );
        assert!(!text.contains("10.0.0"));
        let back = with_cookie("INGRESSCOOKIE", &value_of(&cookie));
        assert_eq!(choose(&a, &s, &back).0, Preference::Endpoint(2));
        // Endpoint 2 leaves: the cookie points nowhere, and a new one is handed out.
        let smaller = set(2, &a);
        let (pref, sticky) = choose(&a, &smaller, &back);
        assert_eq!(pref, Preference::None);
        assert!(set_cookie(sticky, &smaller, 0, SCOPE).is_some());
    }
}
