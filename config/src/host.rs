//! Host names: the patterns routes are written with, and the normal form of a request's
//! Host that they are matched against.

use std::borrow::Cow;

/// A route's host: an exact name, `*.parent` covering exactly one more label, or `*` for
/// any host no other route names (an Ingress rule without a host; nginx's `server_name _`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// Holds the parent domain (`mydomain.com` for `*.mydomain.com`).
    Wildcard(String),
    Any,
}

impl HostPattern {
    /// Parses a route host as written in a configuration.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if name.is_empty() || name.contains('*') {
            return Err(format!(
                "`{text}` is not a host; write `app.example.com` or `*.example.com` (one label)"
            ));
        }
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!("`{text}` is not a valid DNS name"));
        }
        Ok(if wild {
            HostPattern::Wildcard(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }
}

impl HostPattern {
    /// Whether a normalised host is covered: equal, or one label below a wildcard's parent.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            HostPattern::Any => true,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(p) => write!(f, "*.{p}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// Lower-cases a request's Host and strips the port and a trailing dot, allocating only when
/// the client sent upper-case letters.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop ":port".
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(i) => &host[..i],
            None => host,
        }
    };
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}
