//! The ingress-nginx controller ConfigMap (`--configmap NS/NAME`): the global keys that
//! migrating clusters set, applied over the configuration and as the Ingresses' defaults.
//! A key that decides who may reach what and cannot be read makes every Ingress route
//! answer 503 (fail closed); any other key Gatehouse does not apply is reported, once per
//! change, never ignored.

use std::{collections::BTreeMap, time::Duration};

use gatehouse_config::{
    cidr::{parse_cidr, CidrSet},
    units::parse_size,
    Config, TlsVersions,
};
use http::HeaderName;

use super::ingress::go_bool;

/// What applying the ConfigMap did beside changing `config`.
#[derive(Debug, Default)]
pub struct Applied {
    /// Lines for the operator's log: keys not applied, values not read.
    pub problems: Vec<String>,
    /// Why every Ingress route must answer 503, if a key calls for it.
    pub fail_closed: Option<String>,
    /// What the keys set for every Ingress.
    pub defaults: IngressDefaults,
}

/// What the ConfigMap sets for the Ingresses: the global side of annotations.
#[derive(Clone, Debug)]
pub struct IngressDefaults {
    /// `whitelist-source-range`: the allow-list of Ingresses without the annotation.
    pub allow: CidrSet,
    /// `denylist-source-range`: the deny list of Ingresses without the annotation.
    pub deny: CidrSet,
    /// `block-cidrs`: refused by every Ingress, whatever its annotations say.
    pub block: CidrSet,
    /// `ssl-redirect`: whether hosts with a certificate redirect to HTTPS unless their
    /// Ingress says otherwise.
    pub ssl_redirect: bool,
    /// `proxy-body-size`: the body limit of Ingresses without the annotation.
    pub max_body: Option<u64>,
    /// `custom-http-errors`: upstream statuses replaced by the default backend's answer on
    /// Ingresses without their own list.
    pub error_codes: Vec<u16>,
}

impl Default for IngressDefaults {
    fn default() -> Self {
        IngressDefaults {
            allow: CidrSet::default(),
            deny: CidrSet::default(),
            block: CidrSet::default(),
            ssl_redirect: true,
            max_body: None,
            error_codes: Vec::new(),
        }
    }
}

/// Keys read and applied nowhere but harmless to leave: they tune nginx itself.
const NGINX_TUNING: [&str; 8] = [
    "worker-processes",
    "worker-shutdown-timeout",
    "max-worker-connections",
    "max-worker-open-files",
    "proxy-buffer-size",
    "proxy-buffers-number",
    "client-header-buffer-size",
    "large-client-header-buffers",
];

/// Applies `data` (the ConfigMap's) over `config`; `source` names it for the log.
pub fn apply(data: &BTreeMap<String, String>, config: &mut Config, source: &str) -> Applied {
    let mut out = Applied::default();
    let mut problem = |key: &str, what: String| {
        out.problems
            .push(format!("ConfigMap {source}: key {key}: {what}"));
    };
    let seconds = |v: &str| v.trim().parse::<u64>().ok().map(Duration::from_secs);
    let mut use_forwarded = false;
    let mut real_ip_cidrs: Option<&str> = None;
    let mut closed = Vec::new();
    for (key, value) in data {
        let key = key.as_str();
        let bad = |what: &str| format!("`{value}` is not {what}; the default applies");
        match key {
            "hsts" => match go_bool(value) {
                Some(b) => config.hsts.enabled = b,
                None => problem(key, bad("true or false")),
            },
            "ssl-redirect" => match go_bool(value) {
                Some(b) => out.defaults.ssl_redirect = b,
                None => problem(key, bad("true or false")),
            },
            "proxy-body-size" => match parse_size(value) {
                // nginx: 0 turns the limit off.
                Ok(size) => out.defaults.max_body = Some(if size == 0 { u64::MAX } else { size }),
                Err(e) => problem(key, format!("{e}; the default applies")),
            },
            "custom-http-errors" => match error_codes(value) {
                Ok(codes) => out.defaults.error_codes = codes,
                Err(e) => problem(key, format!("{e}; no error pages from it")),
            },
            "ssl-protocols" => match tls_versions(value) {
                Ok((versions, dropped)) => {
                    config.tls_versions = versions;
                    if !dropped.is_empty() {
                        problem(key, format!("{} not offered: Gatehouse speaks TLS 1.2 and 1.3 only", dropped.join(", ")));
                    }
                }
                Err(e) => problem(key, format!("{e}; TLS 1.2 and 1.3 are offered")),
            },
            "compute-full-forwarded-for" => match go_bool(value) {
                Some(b) => config.forwarded.full_chain = b,
                None => problem(key, bad("true or false")),
            },
            "forwarded-for-header" => match HeaderName::from_bytes(value.trim().as_bytes()) {
                Ok(name) => config.forwarded.client_header = name,
                Err(_) => problem(key, bad("a header name")),
            },
            "hsts-max-age" => match seconds(value) {
                Some(d) => config.hsts.max_age = d,
                None => problem(key, bad("a number of seconds")),
            },
            "hsts-include-subdomains" => match go_bool(value) {
                Some(b) => config.hsts.include_subdomains = b,
                None => problem(key, bad("true or false")),
            },
            "hsts-preload" => match go_bool(value) {
                Some(b) => config.hsts.preload = b,
                None => problem(key, bad("true or false")),
            },
            "proxy-connect-timeout" => match seconds(value) {
                Some(d) => config.timeouts.connect = d,
                None => problem(key, bad("a number of seconds")),
            },
            // nginx's proxy_read_timeout bounds the wait for the answer and between reads.
            "proxy-read-timeout" => match seconds(value) {
                Some(d) => {
                    config.timeouts.upstream_response = d;
                    config.timeouts.upstream_read = d;
                }
                None => problem(key, bad("a number of seconds")),
            },
            "proxy-send-timeout" => match seconds(value) {
                Some(d) => config.timeouts.upstream_send = d,
                None => problem(key, bad("a number of seconds")),
            },
            "keep-alive" => match seconds(value) {
                Some(d) => config.timeouts.idle = d,
                None => problem(key, bad("a number of seconds")),
            },
            "upstream-keepalive-connections" => match value.trim().parse() {
                Ok(n) => config.upstream_keepalive.connections = n,
                Err(_) => problem(key, bad("a number")),
            },
            "upstream-keepalive-timeout" => match seconds(value) {
                Some(d) => config.upstream_keepalive.timeout = d,
                None => problem(key, bad("a number of seconds")),
            },
            "upstream-keepalive-requests" => match value.trim().parse() {
                Ok(n) => config.upstream_keepalive.requests = n,
                Err(_) => problem(key, bad("a number")),
            },
            "limit-req-status-code" | "limit-conn-status-code" => match value.trim() {
                "429" => config.limits.status = 429,
                "503" => config.limits.status = 503,
                _ => problem(key, format!("`{value}`: Gatehouse answers a limited client with 429 or 503 only; the default applies")),
            },
            "use-forwarded-headers" => match go_bool(value) {
                Some(b) => use_forwarded = b,
                None => problem(key, bad("true or false")),
            },
            "proxy-real-ip-cidr" => real_ip_cidrs = Some(value),
            // Gatehouse accepts only the header subset of snippets, whatever this says.
            "allow-snippet-annotations" => {}
            "whitelist-source-range" | "denylist-source-range" | "block-cidrs" => {
                match cidr_list(value) {
                    Ok(set) => match key {
                        "whitelist-source-range" => out.defaults.allow = set,
                        "denylist-source-range" => out.defaults.deny = set,
                        _ => out.defaults.block = set,
                    },
                    // A list that cannot be read must not open what it meant to close.
                    Err(e) => closed.push(format!("{key} ({e})")),
                }
            }
            k if NGINX_TUNING.contains(&k) => problem(k, "tunes nginx itself; nothing to apply".to_owned()),
            k => problem(k, "is not applied by Gatehouse".to_owned()),
        }
    }
    if use_forwarded {
        // As ingress-nginx: believed from proxy-real-ip-cidr, by default everyone.
        let list = real_ip_cidrs.unwrap_or("0.0.0.0/0");
        let nets: Result<Vec<_>, _> = list
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(parse_cidr)
            .collect();
        match nets {
            Ok(nets) => {
                if nets.iter().any(|n| n.prefix_len() == 0) {
                    problem("use-forwarded-headers", "X-Forwarded-For and -Proto are believed from every client (proxy-real-ip-cidr covers all addresses), as ingress-nginx does; list your load balancers in proxy-real-ip-cidr".to_owned());
                }
                config.trusted_proxies = CidrSet::new(nets);
            }
            Err(e) => problem(
                "proxy-real-ip-cidr",
                format!("{e}; forwarded headers are not believed"),
            ),
        }
    }
    if !closed.is_empty() {
        out.fail_closed = Some(format!(
            "ConfigMap {source}: {} decides who may reach every Ingress and cannot be read; Ingress paths answer 503 until it is fixed",
            closed.join(", ")
        ));
    }
    out
}

/// A comma-separated list of addresses and ranges; empty means none.
fn cidr_list(value: &str) -> Result<CidrSet, String> {
    let nets: Result<Vec<_>, _> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(parse_cidr)
        .collect();
    nets.map(CidrSet::new).map_err(|e| e.to_string())
}

/// `custom-http-errors`: statuses 400-599, comma-separated.
fn error_codes(value: &str) -> Result<Vec<u16>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match c.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => Ok(code),
            _ => Err(format!("`{c}` is not an error status (400-599)")),
        })
        .collect()
}

/// `ssl-protocols` (nginx's list, e.g. `TLSv1.2 TLSv1.3`): the versions offered, and the
/// listed ones that are not.
fn tls_versions(value: &str) -> Result<(TlsVersions, Vec<String>), String> {
    let (mut tls12, mut tls13, mut dropped) = (false, false, Vec::new());
    for name in value.split_whitespace() {
        match name {
            "TLSv1.2" => tls12 = true,
            "TLSv1.3" => tls13 = true,
            other => dropped.push(other.to_owned()),
        }
    }
    match (tls12, tls13) {
        (true, true) => Ok((TlsVersions::Tls12And13, dropped)),
        (true, false) => Ok((TlsVersions::Tls12Only, dropped)),
        (false, true) => Ok((TlsVersions::Tls13Only, dropped)),
        (false, false) => Err(format!("`{value}` lists neither TLSv1.2 nor TLSv1.3")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        gatehouse_config::parse("listen: { http: \"127.0.0.1:0\" }\n", "gatehouse.yaml").unwrap()
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn global_keys_apply_over_the_configuration() {
        let mut config = base();
        let applied = apply(
            &data(&[
                ("hsts-max-age", "600"),
                ("hsts-include-subdomains", "true"),
                ("proxy-read-timeout", "120"),
                ("proxy-connect-timeout", "3"),
                ("keep-alive", "30"),
                ("upstream-keepalive-requests", "1000"),
                ("limit-req-status-code", "503"),
                ("use-forwarded-headers", "true"),
                ("proxy-real-ip-cidr", "10.0.0.0/8"),
                ("allow-snippet-annotations", "false"),
            ]),
            &mut config,
            "ingress-nginx/controller",
        );
        assert_eq!((applied.problems, applied.fail_closed), (vec![], None));
        assert_eq!(config.hsts.max_age, Duration::from_secs(600));
        assert!(config.hsts.include_subdomains);
        assert_eq!(config.timeouts.upstream_response, Duration::from_secs(120));
        assert_eq!(config.timeouts.upstream_read, Duration::from_secs(120));
        assert_eq!(config.timeouts.connect, Duration::from_secs(3));
        assert_eq!(config.timeouts.idle, Duration::from_secs(30));
        assert_eq!(config.upstream_keepalive.requests, 1000);
        assert_eq!(config.limits.status, 503);
        assert!(config.trusted_proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(!config
            .trusted_proxies
            .contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn access_keys_become_ingress_defaults_and_an_unreadable_one_fails_closed() {
        let mut config = base();
        let applied = apply(
            &data(&[
                ("whitelist-source-range", "10.0.0.0/8, 192.168.1.1"),
                ("denylist-source-range", "10.9.0.0/16"),
                ("block-cidrs", "192.0.2.0/24"),
            ]),
            &mut config,
            "ns/c",
        );
        assert_eq!((applied.problems, applied.fail_closed), (vec![], None));
        let d = applied.defaults;
        assert!(d.allow.contains("10.1.2.3".parse().unwrap()));
        assert!(d.allow.contains("192.168.1.1".parse().unwrap()));
        assert!(!d.allow.contains("192.168.1.2".parse().unwrap()));
        assert!(d.deny.contains("10.9.1.1".parse().unwrap()));
        assert!(d.block.contains("192.0.2.7".parse().unwrap()));
        // A list that cannot be read must not open what it meant to close.
        let applied = apply(
            &data(&[("whitelist-source-range", "10.0.0.0/8,10.0.0.300")]),
            &mut config,
            "ns/c",
        );
        let why = applied.fail_closed.expect("fails closed");
        assert!(why.contains("whitelist-source-range"), "{why}");
        // An empty access key decides nothing.
        let applied = apply(
            &data(&[("whitelist-source-range", "")]),
            &mut config,
            "ns/c",
        );
        assert_eq!(applied.fail_closed, None);
        assert!(applied.defaults.allow.is_empty());
    }

    #[test]
    fn the_other_global_keys_apply_and_what_is_not_applied_is_reported() {
        let mut config = base();
        let applied = apply(
            &data(&[
                ("hsts", "false"),
                ("ssl-redirect", "false"),
                ("proxy-body-size", "8m"),
                ("custom-http-errors", "502, 503"),
                ("ssl-protocols", "TLSv1 TLSv1.1 TLSv1.3"),
                ("compute-full-forwarded-for", "false"),
                ("forwarded-for-header", "CF-Connecting-IP"),
                ("enable-brotli", "true"),
                ("proxy-read-timeout", "soon"),
                ("use-forwarded-headers", "true"),
            ]),
            &mut config,
            "ns/c",
        );
        assert_eq!(applied.fail_closed, None);
        assert!(!config.hsts.enabled);
        assert_eq!(config.tls_versions, TlsVersions::Tls13Only);
        assert!(!config.forwarded.full_chain);
        assert_eq!(config.forwarded.client_header, "cf-connecting-ip");
        let d = applied.defaults;
        assert!(!d.ssl_redirect);
        assert_eq!(d.max_body, Some(8 * 1024 * 1024));
        assert_eq!(d.error_codes, vec![502, 503]);
        let all = applied.problems.join("\n");
        assert!(
            all.contains("key ssl-protocols: TLSv1, TLSv1.1 not offered"),
            "{all}"
        );
        assert!(all.contains("key enable-brotli: is not applied"), "{all}");
        assert!(
            all.contains("key proxy-read-timeout: `soon` is not a number of seconds"),
            "{all}"
        );
        assert!(all.contains("believed from every client"), "{all}");
        assert_eq!(
            config.timeouts.upstream_response,
            base().timeouts.upstream_response
        );
        // Values that cannot be read leave the defaults.
        let applied = apply(
            &data(&[
                ("ssl-protocols", "SSLv3"),
                ("custom-http-errors", "200"),
                ("proxy-body-size", "big"),
            ]),
            &mut base(),
            "ns/c",
        );
        assert_eq!(applied.problems.len(), 3, "{:?}", applied.problems);
        assert_eq!(applied.defaults.max_body, None);
        assert!(applied.defaults.error_codes.is_empty());
    }
}
