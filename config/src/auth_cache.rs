//! Caching an authentication service's answers (ingress-nginx's `auth-cache-key` and
//! `auth-cache-duration`, nginx's `proxy_cache_valid` for the `auth_request` location).

use std::time::Duration;

use crate::{template::Template, units::parse_duration};

/// How long answers of an authentication service are remembered, and under which key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthCache {
    /// The request variables that say who is asking (`$http_authorization`,
    /// `$cookie__oauth2_proxy`...): requests with the same value share the answer.
    pub key: Template,
    /// Per status, how long its answers are valid; a status not listed is not remembered.
    pub valid: Vec<(u16, Duration)>,
}

/// ingress-nginx's default `auth-cache-duration`.
pub const DEFAULT_AUTH_CACHE_DURATION: &str = "200 202 401 5m";

impl AuthCache {
    /// Reads a key template and a duration list as ingress-nginx writes them: entries
    /// separated by commas, each status codes then one duration (`200 202 401 5m, 404 1m`);
    /// an entry of a duration alone means 200, 301 and 302, as in nginx.
    pub fn parse(key: &str, durations: &str) -> Result<AuthCache, String> {
        let key = Template::parse(key)?;
        let mut valid = Vec::new();
        for entry in durations
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let words: Vec<&str> = entry.split_whitespace().collect();
            let Some((last, codes)) = words.split_last() else {
                continue;
            };
            let ttl = parse_duration(last).map_err(|e| format!("`{entry}`: {e}"))?;
            let codes: Vec<u16> = match codes {
                [] => vec![200, 301, 302],
                codes => codes
                    .iter()
                    .map(|c| match c.parse::<u16>() {
                        Ok(code @ 100..=599) => Ok(code),
                        _ => Err(format!("`{entry}`: `{c}` is not a status code")),
                    })
                    .collect::<Result<_, _>>()?,
            };
            valid.extend(codes.into_iter().map(|code| (code, ttl)));
        }
        if valid.is_empty() {
            return AuthCache::parse(&key.to_string(), DEFAULT_AUTH_CACHE_DURATION);
        }
        Ok(AuthCache { key, valid })
    }

    /// How long an answer with `status` is valid (`None`: not remembered). The first entry
    /// naming the status wins, as nginx reads `proxy_cache_valid`.
    pub fn validity(&self, status: u16) -> Option<Duration> {
        self.valid
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_ingress_nginx_writes_them() {
        let c = AuthCache::parse("$http_authorization", "200 202 5m, 401 30s").unwrap();
        assert_eq!(c.validity(200), Some(Duration::from_secs(300)));
        assert_eq!(c.validity(202), Some(Duration::from_secs(300)));
        assert_eq!(c.validity(401), Some(Duration::from_secs(30)));
        assert_eq!(c.validity(403), None);
        let default = AuthCache::parse("$remote_addr", "").unwrap();
        assert_eq!(default.validity(401), Some(Duration::from_secs(300)));
        assert_eq!(default.validity(500), None);
        let bare = AuthCache::parse("x", "1h").unwrap();
        assert_eq!(bare.validity(302), Some(Duration::from_secs(3600)));
        assert!(AuthCache::parse("x", "20x 5m").is_err());
        assert!(AuthCache::parse("x", "200 soon").is_err());
    }
}
