//! The fate of every ingress-nginx annotation, in one table: built, ignored (with what an
//! operator loses), or refused (the Ingress answers 503 rather than be served without a
//! policy that decides who may reach what, or where a request goes). A name that is not in
//! the table is refused too: a typo such as `whitelist-soruce-range` must not quietly drop
//! an allow-list. The table in docs/kubernetes.md is checked against this one by a test.

/// What Gatehouse does with one annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Read and applied.
    Built,
    /// Served without it; the text says what that changes, for the log line.
    Ignored(&'static str),
    /// The Ingress fails closed until it is built; the text says what it would decide.
    Refused(&'static str),
}

use Fate::*;

const BUFFERING: Fate = Ignored("buffer sizes: Gatehouse streams bodies");
const TRACING: Fate = Ignored("logging and tracing switches: Gatehouse logs every request as JSON");
const AUTH: Fate = Refused("authentication decides who may reach the paths");
const AUTH_POOL: Fate =
    Ignored("keep-alive to the authentication service: Gatehouse pools those connections itself");
const RATE: Fate = Refused("a limit decides how much each client may ask");
const AFFINITY: Fate = Refused("affinity decides which pod answers a client");
const SNIPPET: Fate = Refused("raw nginx configuration has no meaning here");
const WAF: Fate = Refused("the web application firewall decides which requests pass");
const UPSTREAM_CIPHERS: Fate = Ignored(
    "TLS to the pods offers TLS 1.2 and 1.3 with rustls's cipher suites, whatever OpenSSL names say",
);

/// Every annotation ingress-nginx reads (under its prefix or `gatehouse.io/`), by name.
pub const FATES: &[(&str, Fate)] = &[
    ("affinity", Built),
    ("affinity-canary-behavior", Built),
    ("affinity-mode", Built),
    ("allowlist-source-range", Built),
    ("app-root", Built),
    ("auth-always-set-cookie", AUTH),
    ("auth-cache-duration", Built),
    ("auth-cache-key", Built),
    ("auth-keepalive", AUTH_POOL),
    ("auth-keepalive-requests", AUTH_POOL),
    ("auth-keepalive-share-vars", AUTH_POOL),
    ("auth-keepalive-timeout", AUTH_POOL),
    ("auth-method", Built),
    ("auth-proxy-set-headers", AUTH),
    ("auth-realm", Built),
    ("auth-request-redirect", Built),
    ("auth-response-headers", Built),
    ("auth-secret", Built),
    ("auth-secret-type", Built),
    ("auth-signin", Built),
    ("auth-signin-redirect-param", Built),
    ("auth-snippet", SNIPPET),
    ("auth-tls-error-page", Built),
    ("auth-tls-match-cn", Built),
    ("auth-tls-pass-certificate-to-upstream", Built),
    ("auth-tls-secret", Built),
    ("auth-tls-verify-client", Built),
    ("auth-tls-verify-depth", Built),
    ("auth-type", Built),
    ("auth-url", Built),
    ("backend-protocol", Built),
    ("canary", Built),
    ("canary-by-cookie", Built),
    ("canary-by-header", Built),
    ("canary-by-header-pattern", Built),
    ("canary-by-header-value", Built),
    ("canary-weight", Built),
    ("canary-weight-total", Built),
    ("client-body-buffer-size", BUFFERING),
    ("configuration-snippet", Built),
    (
        "connection-proxy-header",
        Ignored(
            "the Connection header to the upstream: Gatehouse keeps upstream connections alive",
        ),
    ),
    ("cors-allow-credentials", Built),
    ("cors-allow-headers", Built),
    ("cors-allow-methods", Built),
    ("cors-allow-origin", Built),
    ("cors-expose-headers", Built),
    ("cors-max-age", Built),
    (
        "custom-headers",
        Ignored("extra response headers from a ConfigMap: use gatehouse.io/response-headers"),
    ),
    ("custom-http-errors", Built),
    ("default-backend", Built),
    ("denylist-source-range", Built),
    ("disable-proxy-intercept-errors", Built),
    ("enable-access-log", TRACING),
    ("enable-cors", Built),
    (
        "enable-global-auth",
        Ignored("there is no global external authentication to switch off"),
    ),
    ("enable-influxdb", TRACING),
    ("enable-modsecurity", WAF),
    ("enable-opentelemetry", TRACING),
    ("enable-opentracing", TRACING),
    ("enable-owasp-core-rules", WAF),
    ("enable-rewrite-log", TRACING),
    ("force-ssl-redirect", Built),
    ("from-to-www-redirect", Built),
    ("global-rate-limit", RATE),
    ("global-rate-limit-ignored-cidrs", RATE),
    ("global-rate-limit-key", RATE),
    ("global-rate-limit-window", RATE),
    (
        "http2-push-preload",
        Ignored("HTTP/2 server push: browsers dropped it"),
    ),
    ("influxdb-host", TRACING),
    ("influxdb-measurement", TRACING),
    ("influxdb-port", TRACING),
    ("influxdb-server-name", TRACING),
    ("limit-allowlist", Built),
    ("limit-burst-multiplier", Built),
    ("limit-connections", Built),
    ("limit-rate", RATE),
    ("limit-rate-after", RATE),
    ("limit-rpm", Built),
    ("limit-rps", Built),
    ("limit-whitelist", Built),
    ("load-balance", Built),
    (
        "mirror-host",
        Refused("copies of requests would go to another host"),
    ),
    (
        "mirror-request-body",
        Refused("copies of requests would go to another host"),
    ),
    (
        "mirror-target",
        Refused("copies of requests would go to another host"),
    ),
    ("modsecurity-snippet", SNIPPET),
    ("modsecurity-transaction-id", WAF),
    ("opentelemetry-operation-name", TRACING),
    ("opentelemetry-trust-incoming-span", TRACING),
    ("opentracing-trust-incoming-span", TRACING),
    ("permanent-redirect", Built),
    ("permanent-redirect-code", Built),
    ("preserve-trailing-slash", Built),
    ("proxy-body-size", Built),
    ("proxy-buffer-size", BUFFERING),
    ("proxy-buffering", BUFFERING),
    ("proxy-buffers-number", BUFFERING),
    ("proxy-connect-timeout", Built),
    (
        "proxy-cookie-domain",
        Ignored("Set-Cookie domains pass as the upstream wrote them"),
    ),
    (
        "proxy-cookie-path",
        Ignored("Set-Cookie paths pass as the upstream wrote them"),
    ),
    (
        "proxy-http-version",
        Ignored("the upstream HTTP version: always 1.1 with keep-alive"),
    ),
    ("proxy-max-temp-file-size", BUFFERING),
    ("proxy-next-upstream", Built),
    ("proxy-next-upstream-timeout", Built),
    ("proxy-next-upstream-tries", Built),
    ("proxy-read-timeout", Built),
    (
        "proxy-redirect-from",
        Ignored("Location headers pass as the upstream wrote them"),
    ),
    (
        "proxy-redirect-to",
        Ignored("Location headers pass as the upstream wrote them"),
    ),
    ("proxy-request-buffering", BUFFERING),
    ("proxy-send-timeout", Built),
    ("proxy-ssl-ciphers", UPSTREAM_CIPHERS),
    ("proxy-ssl-name", Built),
    ("proxy-ssl-protocols", UPSTREAM_CIPHERS),
    ("proxy-ssl-secret", Built),
    ("proxy-ssl-server-name", Built),
    ("proxy-ssl-verify", Built),
    ("proxy-ssl-verify-depth", Built),
    ("response-headers", Built),
    ("rewrite-target", Built),
    ("satisfy", AUTH),
    ("server-alias", Built),
    ("server-snippet", Built),
    (
        "service-upstream",
        Ignored("requests go to the ready pods of the Service, not its cluster IP"),
    ),
    ("session-cookie-change-on-failure", Built),
    ("session-cookie-conditional-samesite-none", Built),
    ("session-cookie-domain", Built),
    ("session-cookie-expires", Built),
    ("session-cookie-max-age", Built),
    ("session-cookie-name", Built),
    ("session-cookie-path", Built),
    ("session-cookie-samesite", Built),
    ("session-cookie-secure", Built),
    (
        "ssl-ciphers",
        Ignored("TLS ciphers: rustls's safe defaults, TLS 1.2 and 1.3"),
    ),
    ("ssl-passthrough", Built),
    (
        "ssl-prefer-server-ciphers",
        Ignored("TLS ciphers: rustls's safe defaults, TLS 1.2 and 1.3"),
    ),
    ("ssl-redirect", Built),
    ("stream-snippet", SNIPPET),
    ("temporal-redirect", Built),
    ("temporal-redirect-code", Built),
    ("upstream-hash-by", Built),
    ("upstream-hash-by-subset", AFFINITY),
    ("upstream-hash-by-subset-size", AFFINITY),
    ("upstream-vhost", Built),
    ("use-regex", Built),
    ("whitelist-source-range", Built),
    ("x-forwarded-prefix", Built),
];

/// The fate of an annotation, by name (without its prefix); `None` for a name no
/// ingress-nginx version reads.
pub fn fate(name: &str) -> Option<Fate> {
    FATES
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| FATES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_without_duplicates_so_lookups_find_every_name() {
        for pair in FATES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (name, want) in FATES {
            assert_eq!(fate(name), Some(*want), "{name}");
        }
        assert_eq!(fate("whitelist-soruce-range"), None);
    }

    #[test]
    fn every_family_that_decides_access_or_routing_is_refused_or_built() {
        let decides = |name: &str| {
            [
                "auth-",
                "canary",
                "limit-",
                "global-rate-limit",
                "session-cookie-",
                "affinity",
            ]
            .iter()
            .any(|p| name.starts_with(p))
                || name.ends_with("-snippet")
                || name.ends_with("-source-range")
                || name.ends_with("redirect")
                || name.contains("modsecurity")
                || name.starts_with("mirror-")
                || name.starts_with("upstream-hash-by")
        };
        // Caching and pooling toward the authentication service: without them every
        // request is asked of it, which is stricter, never looser.
        let only_cost =
            |name: &str| name.starts_with("auth-cache-") || name.starts_with("auth-keepalive");
        for (name, fate) in FATES {
            if decides(name) && !only_cost(name) {
                assert!(
                    !matches!(fate, Ignored(_)),
                    "{name} decides who may reach what or where requests go: it may not be ignored"
                );
            }
        }
    }
}
