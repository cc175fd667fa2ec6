//! The ingress-nginx controller ConfigMap (`--configmap NS/NAME`): the global keys that
//! migrating clusters set, applied over the configuration. A key that decides who may
//! reach what and is not built yet makes every Ingress route answer 503 (fail closed);
//! any other key Gatehouse does not apply is reported, once per change, never ignored.

use std::{collections::BTreeMap, time::Duration};

use gatehouse_config::{
    cidr::{parse_cidr, CidrSet},
    Config,
};

use super::ingress::go_bool;

/// What applying the ConfigMap did beside changing `config`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Lines for the operator's log: keys not applied, values not read.
    pub problems: Vec<String>,
    /// Why every Ingress route must answer 503, if a key calls for it.
    pub fail_closed: Option<String>,
}

/// Keys that change who may reach what, not built yet.
const ACCESS_KEYS: [&str; 3] = [
    "whitelist-source-range",
    "block-cidrs",
    "denylist-source-range",
];

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
                Some(true) => {}
                Some(false) => problem(key, "`false` is not built: Gatehouse sends Strict-Transport-Security on the HTTPS answers of redirected hosts; remove the key or accept the header".to_owned()),
                None => problem(key, bad("true or false")),
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
            k if ACCESS_KEYS.contains(&k) => {
                if !value.trim().is_empty() {
                    closed.push(k.to_owned());
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
            "ConfigMap {source}: {} decides who may reach every Ingress and is not built yet; Ingress paths answer 503 until it is removed",
            closed.join(", ")
        ));
    }
    out
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
        assert_eq!(applied, Applied::default());
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
    fn access_keys_fail_closed_and_other_keys_are_reported() {
        let mut config = base();
        let applied = apply(
            &data(&[
                ("block-cidrs", "192.0.2.0/24"),
                ("enable-brotli", "true"),
                ("hsts", "false"),
                ("proxy-read-timeout", "soon"),
                ("use-forwarded-headers", "true"),
            ]),
            &mut config,
            "ns/c",
        );
        assert!(applied.fail_closed.unwrap().contains("block-cidrs"));
        let all = applied.problems.join("\n");
        assert!(all.contains("key enable-brotli: is not applied"), "{all}");
        assert!(all.contains("key hsts: `false` is not built"), "{all}");
        assert!(
            all.contains("key proxy-read-timeout: `soon` is not a number of seconds"),
            "{all}"
        );
        assert!(all.contains("believed from every client"), "{all}");
        assert_eq!(
            config.timeouts.upstream_response,
            base().timeouts.upstream_response
        );
        // An empty access key decides nothing.
        let applied = apply(
            &data(&[("whitelist-source-range", "")]),
            &mut config,
            "ns/c",
        );
        assert_eq!(applied.fail_closed, None);
    }
}
