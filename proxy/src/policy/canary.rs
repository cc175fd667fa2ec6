//! Canary (gray release): whether a request of a path goes to its canary service, as
//! ingress-nginx decides. The header first (`always`, `never`, or the configured value or
//! pattern), then the cookie (`always`, `never`), then the weight; a header or cookie
//! value that decides nothing falls through to the next.

use gatehouse_config::Canary;
use http::HeaderMap;

/// Whether this request goes to the canary.
pub(crate) fn chooses_canary(canary: &Canary, headers: &HeaderMap) -> bool {
    if let Some(h) = &canary.header {
        if let Some(value) = headers.get(&h.name).and_then(|v| v.to_str().ok()) {
            let decided = match (&h.value, &h.pattern) {
                (Some(wanted), _) if value == wanted => Some(true),
                (_, Some(pattern)) if pattern.is_match(value) => Some(true),
                (None, None) => by_keyword(value),
                // A value other than the configured one is ignored, as in ingress-nginx.
                _ => None,
            };
            if let Some(decided) = decided {
                return decided;
            }
        }
    }
    if let Some(name) = &canary.cookie {
        if let Some(decided) = crate::headers::cookie(headers, name).and_then(by_keyword) {
            return decided;
        }
    }
    canary.weight > 0 && fastrand::u32(..canary.weight_total) < canary.weight
}

fn by_keyword(value: &str) -> Option<bool> {
    match value {
        "always" => Some(true),
        "never" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::{CanaryHeader, ServiceId};

    fn canary(weight: u32) -> Canary {
        Canary {
            service: ServiceId(1),
            header: Some(CanaryHeader {
                name: http::HeaderName::from_static("x-canary"),
                value: None,
                pattern: None,
            }),
            cookie: Some("canary".to_owned()),
            weight,
            weight_total: 100,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let c = canary(0);
        assert!(chooses_canary(&c, &headers(&[("x-canary", "always")])));
        assert!(!chooses_canary(
            &canary(100),
            &headers(&[("x-canary", "never"), ("cookie", "canary=always")])
        ));
        // An unknown header value falls through to the cookie, then the weight.
        assert!(chooses_canary(
            &c,
            &headers(&[("x-canary", "maybe"), ("cookie", "a=1; canary=always")])
        ));
        assert!(!chooses_canary(
            &canary(100),
            &headers(&[("cookie", "canary=never")])
        ));
        assert!(!chooses_canary(&c, &headers(&[])));
        assert!(chooses_canary(&canary(100), &headers(&[])));
    }

    #[test]
    fn a_configured_value_or_pattern_decides_and_other_values_fall_through() {
        let mut c = canary(0);
        c.header.as_mut().unwrap().value = Some("v2".to_owned());
        assert!(chooses_canary(&c, &headers(&[("x-canary", "v2")])));
        assert!(!chooses_canary(&c, &headers(&[("x-canary", "always")])));
        let mut c = canary(100);
        c.header.as_mut().unwrap().pattern = Some(regex::Regex::new("^(?:beta-.*)$").unwrap());
        assert!(chooses_canary(&c, &headers(&[("x-canary", "beta-7")])));
        c.weight = 0;
        assert!(!chooses_canary(&c, &headers(&[("x-canary", "gamma")])));
    }

    #[test]
    fn the_weight_splits_within_two_percent_over_ten_thousand() {
        let c = canary(20);
        let to_canary = (0..10_000)
            .filter(|_| chooses_canary(&c, &HeaderMap::new()))
            .count();
        assert!(
            (1_800..=2_200).contains(&to_canary),
            "{to_canary} of 10,000 at 20 %"
        );
    }
}
