use serde_json::json;

use super::*;
use crate::kubernetes::{fixtures::*, ingress::translate};

const FILE: &str = r#"
listen: { http: "127.0.0.1:0" }
services:
  legacy: { endpoints: ["127.0.0.1:9"] }
routes:
  - host: shared.example.com
    paths: [{ path: /legacy, match: prefix, service: legacy }]
"#;

fn file() -> Config {
    gatehouse_config::parse(FILE, "gatehouse.yaml").expect("valid test config")
}

fn port(n: i32) -> serde_json::Value {
    json!({ "number": n })
}

fn no_secrets(_: &str, _: &str) -> Option<SecretPem> {
    None
}

fn no_auth(_: &str, _: &str) -> Option<SecretData> {
    None
}

fn no_external(_: &str, _: &str) -> Option<ExternalName> {
    None
}

/// The test file and `t`, without Secrets, ExternalNames, ports or a controller ConfigMap.
fn merge_alone(t: &Translation) -> (Config, Vec<String>) {
    merge(
        &file(),
        t,
        &[],
        &no_secrets,
        &no_auth,
        &no_external,
        &IngressDefaults::default(),
    )
}

fn route<'a>(config: &'a Config, source: &str, host: &str) -> &'a Route {
    config
        .routes
        .iter()
        .find(|r| r.location.file == format!("Ingress {source}") && r.host.to_string() == host)
        .unwrap_or_else(|| panic!("no route of {source} for {host}"))
}

#[test]
fn ingresses_sharing_a_host_keep_their_own_policy_and_the_file_wins_its_paths() {
    let open = ingress(
        "a",
        "open",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({ "rules": [rule("shared.example.com", json!([
            path("/public", "Prefix", "web", port(80)),
            path("/legacy/", "Prefix", "web", port(80)),
        ]))] }),
    );
    let closed = ingress(
        "b",
        "closed",
        "2026-01-02T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8", "gatehouse.io/proxy-body-size": "8m" }),
        json!({ "rules": [rule("shared.example.com", json!([path("/admin", "Exact", "admin", json!({ "name": "http" }))]))] }),
    );
    let t = translate([&open, &closed], &ours());
    let (config, problems) = merge_alone(&t);
    let table = gatehouse_config::RoutingTable::compile(&config.routes).expect("compiles");

    let public = table
        .find("shared.example.com", "/public/x")
        .expect("routed");
    assert_eq!(config.routes[public.route].location.file, "Ingress a/open");
    assert!(config.routes[public.route].allow.is_empty());
    let admin = table.find("shared.example.com", "/admin").expect("routed");
    let admin_route = &config.routes[admin.route];
    assert!(
        !admin_route.allow.is_empty(),
        "b/closed keeps its allow-list"
    );
    assert_eq!(admin_route.max_body, 8 << 20);
    let service = &config.services[admin_route.paths[admin.rule].service.0];
    assert_eq!(service.name, "b/admin:http");
    assert_eq!(
        service.kubernetes.as_ref().map(|k| k.port.clone()),
        Some(ServicePort::Name("http".into()))
    );
    // `/legacy/` is the file's `/legacy` prefix: the file wins, the Ingress path is reported.
    let legacy = table
        .find("shared.example.com", "/legacy/x")
        .expect("routed");
    assert_eq!(
        config.services[config.routes[legacy.route].paths[legacy.rule].service.0].name,
        "legacy"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("a/open") && p.contains("configuration file")),
        "{problems:?}"
    );
}

#[test]
fn regex_paths_are_case_insensitive_and_a_bad_one_is_skipped_alone() {
    let i = ingress(
        "a",
        "re",
        "2026-01-01T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/rewrite-target": "/$2" }),
        json!({ "rules": [rule("re.example.com", json!([
            path("/app(/|$)(.*)", "ImplementationSpecific", "web", port(80)),
            path("/broken(", "ImplementationSpecific", "web", port(80)),
        ]))] }),
    );
    let (config, problems) = merge_alone(&translate([&i], &ours()));
    let table = gatehouse_config::RoutingTable::compile(&config.routes).expect("compiles");
    let m = table
        .find("re.example.com", "/APP/users")
        .expect("case-insensitive");
    let rule = &config.routes[m.route].paths[m.rule];
    assert_eq!(
        table.rewrite(&m, rule.rewrite.as_deref().unwrap(), "/APP/users"),
        "/users"
    );
    assert_eq!(route(&config, "a/re", "re.example.com").paths.len(), 1);
    assert!(
        problems.iter().any(|p| p.contains("/broken(")),
        "{problems:?}"
    );
}

#[test]
fn hostless_rules_catch_other_hosts_and_the_default_backend_is_the_default_service() {
    let i = ingress(
        "a",
        "any",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({
            "defaultBackend": { "service": { "name": "fallback", "port": port(80) } },
            "rules": [{ "http": { "paths": [path("/", "Prefix", "catchall", port(80))] } }],
        }),
    );
    let (config, _) = merge_alone(&translate([&i], &ours()));
    let table = gatehouse_config::RoutingTable::compile(&config.routes).expect("compiles");
    let m = table.find("whatever.test", "/x").expect("any host");
    assert_eq!(config.routes[m.route].host, HostPattern::Any);
    assert!(
        table.find("shared.example.com", "/nothing").is_none(),
        "a named host does not fall back to the any-host rules"
    );
    let default = config.default_service.expect("defaultBackend");
    assert_eq!(config.services[default.0].name, "a/fallback:80");
}

#[test]
fn tls_secrets_become_certificates_and_turn_the_redirect_on_by_default() {
    let tls = |name: &str, created: &str, secret: &str, annotations: serde_json::Value| {
        ingress(
            "a",
            name,
            created,
            annotations,
            json!({
                "tls": [{ "hosts": [format!("{name}.example.com")], "secretName": secret }],
                "rules": [rule(&format!("{name}.example.com"), json!([path("/", "Prefix", "web", port(80))]))],
            }),
        )
    };
    let secure = tls("secure", "2026-01-01T00:00:00Z", "good", json!({}));
    let optout = tls(
        "optout",
        "2026-01-02T00:00:00Z",
        "good",
        json!({ "gatehouse.io/ssl-redirect": "false" }),
    );
    let missing = tls("missing", "2026-01-03T00:00:00Z", "absent", json!({}));
    let forced = ingress(
        "a",
        "forced",
        "2026-01-04T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/force-ssl-redirect": "true" }),
        json!({ "rules": [rule("forced.example.com", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let secrets = |ns: &str, name: &str| {
        (ns == "a" && name == "good").then(|| Ok(("CERT".to_owned(), "KEY".to_owned())))
    };
    let t = translate([&secure, &optout, &missing, &forced], &ours());
    let (config, problems) = merge(
        &file(),
        &t,
        &[],
        &secrets,
        &no_auth,
        &no_external,
        &IngressDefaults::default(),
    );

    assert!(route(&config, "a/secure", "secure.example.com").https_redirect);
    assert!(!route(&config, "a/optout", "optout.example.com").https_redirect);
    assert!(
        route(&config, "a/missing", "missing.example.com").https_redirect,
        "on, so the data plane warns that the certificate is missing"
    );
    let forced = route(&config, "a/forced", "forced.example.com");
    assert!(forced.force_https_redirect && !forced.https_redirect);

    assert_eq!(
        config.tls.len(),
        2,
        "one entry per Ingress using Secret a/good"
    );
    for entry in &config.tls {
        assert!(
            !entry.strict,
            "a broken Secret must not fail the whole configuration"
        );
        assert_eq!(entry.label(), "Secret a/good");
    }
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Secret a/absent does not exist")
                && p.contains("missing.example.com")),
        "{problems:?}"
    );
}

#[test]
fn a_broken_annotation_makes_only_its_own_routes_unavailable() {
    let good = ingress(
        "a",
        "good",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({ "rules": [rule("good.example.com", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let bad = ingress(
        "a",
        "bad",
        "2026-01-02T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/33" }),
        json!({ "rules": [rule("bad.example.com", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let (config, _) = merge_alone(&translate([&good, &bad], &ours()));
    assert!(route(&config, "a/good", "good.example.com")
        .unavailable
        .is_none());
    let why = route(&config, "a/bad", "bad.example.com")
        .unavailable
        .clone()
        .expect("fails closed");
    assert!(why.contains("whitelist-source-range"), "{why}");
}

#[test]
fn configmap_ports_listen_on_the_proxy_ip_and_the_file_keeps_its_ports() {
    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "metadata": { "namespace": "edge", "name": "tcp-services" },
        "data": { "5432": "db/postgres:5432::PROXY", "9000": "web/app:http", "0": "x/y:1" },
    }))
    .unwrap();
    let mut problems = Vec::new();
    let mappings = crate::kubernetes::l4::mappings(&cm, L4Protocol::Tcp, &mut problems);
    let mut file = file();
    file.listen.http = Some("10.0.0.5:80".parse().unwrap());
    file.l4.push(L4Listener {
        listen: "10.0.0.5:9000".parse().unwrap(),
        protocol: L4Protocol::Tcp,
        service: ServiceId(0),
        allow: CidrSet::default(),
        proxy_protocol: false,
        proxy_protocol_upstream: false,
        max: 1,
        idle: std::time::Duration::from_secs(1),
        location: file.routes[0].location.clone(),
    });
    let (config, merged_problems) = merge(
        &file,
        &Translation::default(),
        &mappings,
        &no_secrets,
        &no_auth,
        &no_external,
        &IngressDefaults::default(),
    );
    let pg = config
        .l4
        .iter()
        .find(|l| l.listen.port() == 5432)
        .expect("added");
    assert_eq!(pg.listen, "10.0.0.5:5432".parse().unwrap());
    assert!(pg.proxy_protocol_upstream && !pg.proxy_protocol);
    assert_eq!(config.services[pg.service.0].name, "db/postgres:5432");
    assert_eq!(config.l4.len(), 2, "9000 stays the file's");
    assert!(
        merged_problems.iter().any(|p| p.contains("tcp/9000")),
        "{merged_problems:?}"
    );
    assert_eq!(problems.len(), 1, "port 0 is not a port: {problems:?}");
}

#[test]
fn ingresses_balancing_one_service_differently_get_an_upstream_each() {
    let sticky = ingress(
        "a",
        "sticky",
        "2026-01-01T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/affinity": "cookie" }),
        json!({ "rules": [rule("a.example.com", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let plain = ingress(
        "a",
        "plain",
        "2026-01-02T00:00:00Z",
        json!({}),
        json!({ "rules": [rule("b.example.com", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let hashed = ingress(
        "a",
        "hashed",
        "2026-01-03T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/upstream-hash-by": "$arg_user" }),
        json!({ "rules": [rule("c.example.com", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let t = translate([&sticky, &plain, &hashed], &ours());
    let (config, _) = merge_alone(&t);
    let service_of = |source: &str, host: &str| {
        &config.services[route(&config, source, host).paths[0].service.0]
    };
    let (s, p, h) = (
        service_of("a/sticky", "a.example.com"),
        service_of("a/plain", "b.example.com"),
        service_of("a/hashed", "c.example.com"),
    );
    assert_eq!(s.name, "a/web:80 (affinity INGRESSCOOKIE)");
    assert!(s.affinity.is_some());
    assert_eq!((p.name.as_str(), p.affinity.is_none()), ("a/web:80", true));
    assert_eq!(h.name, "a/web:80 (hash $arg_user)");
    assert_eq!(
        s.kubernetes, p.kubernetes,
        "one Service's endpoints feed both"
    );
}

#[test]
fn an_external_name_backend_is_its_name_at_the_ingress_port() {
    let i = ingress(
        "shop",
        "legacy",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({ "rules": [rule("legacy.example.com", json!([
            path("/by-name", "Prefix", "legacy", json!({ "name": "web" })),
            path("/by-number", "Prefix", "legacy", port(8443)),
        ]))] }),
    );
    let external = |ns: &str, name: &str| {
        (ns == "shop" && name == "legacy").then(|| ExternalName {
            host: "Legacy.Example.Internal.".into(),
            ports: vec![(Some("web".into()), 8080)],
        })
    };
    let (config, problems) = merge(
        &file(),
        &translate([&i], &ours()),
        &[],
        &no_secrets,
        &no_auth,
        &external,
        &IngressDefaults::default(),
    );
    assert!(problems.is_empty(), "{problems:?}");
    let names: Vec<String> = config
        .services
        .iter()
        .filter(|s| s.name.starts_with("shop/legacy"))
        .map(|s| {
            assert!(
                s.kubernetes.is_none(),
                "no EndpointSlices for an ExternalName"
            );
            s.names
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(
        names,
        [
            "legacy.example.internal:8080",
            "legacy.example.internal:8443"
        ]
    );
}

#[test]
fn the_config_maps_defaults_apply_where_an_ingress_says_nothing() {
    let plain = ingress(
        "a",
        "plain",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({ "rules": [rule("plain.test", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let own = ingress(
        "b",
        "own",
        "2026-01-01T00:00:00Z",
        json!({
            "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8",
            "nginx.ingress.kubernetes.io/proxy-body-size": "1k",
            "nginx.ingress.kubernetes.io/disable-proxy-intercept-errors": "true",
        }),
        json!({ "rules": [rule("own.test", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let cidrs = |list: &[&str]| CidrSet::new(list.iter().map(|c| c.parse().unwrap()));
    let defaults = IngressDefaults {
        allow: cidrs(&["192.168.0.0/16"]),
        deny: cidrs(&["192.168.9.0/24"]),
        block: cidrs(&["203.0.113.0/24"]),
        ssl_redirect: false,
        max_body: Some(8 << 20),
        error_codes: vec![503],
    };
    let mut file = file();
    file.default_service = Some(ServiceId(0));
    let t = translate([&plain, &own], &ours());
    let (config, _) = merge(
        &file,
        &t,
        &[],
        &no_secrets,
        &no_auth,
        &no_external,
        &defaults,
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();

    let plain = route(&config, "a/plain", "plain.test");
    assert!(plain.allow.contains(ip("192.168.1.1")) && !plain.allow.contains(ip("10.1.1.1")));
    assert!(plain.deny.contains(ip("192.168.9.1")));
    assert!(plain.deny.contains(ip("203.0.113.9")), "block-cidrs");
    assert_eq!(plain.max_body, 8 << 20);
    assert_eq!(
        plain.error_pages.as_ref().map(|e| e.codes.clone()),
        Some(vec![503])
    );
    assert!(!plain.https_redirect);

    // The Ingress's own annotations win, except over block-cidrs, which holds everywhere.
    let own = route(&config, "b/own", "own.test");
    assert!(own.allow.contains(ip("10.1.1.1")) && !own.allow.contains(ip("192.168.1.1")));
    assert!(own.deny.contains(ip("203.0.113.9")), "block-cidrs");
    assert!(
        own.deny.contains(ip("192.168.9.1")),
        "its own allow-list leaves the global deny list, as in ingress-nginx"
    );
    assert_eq!(own.max_body, 1024);
    assert!(own.error_pages.is_none(), "it disables intercepting errors");
}

#[test]
fn error_pages_are_answered_by_another_ingresses_default_backend() {
    let fallback = ingress(
        "a",
        "fallback",
        "2026-01-01T00:00:00Z",
        json!({}),
        json!({ "defaultBackend": { "service": { "name": "errors", "port": { "number": 80 } } } }),
    );
    let pages = ingress(
        "b",
        "pages",
        "2026-01-02T00:00:00Z",
        json!({ "nginx.ingress.kubernetes.io/custom-http-errors": "503" }),
        json!({ "rules": [rule("pages.test", json!([path("/", "Prefix", "web", port(80))]))] }),
    );
    let t = translate([&fallback, &pages], &ours());
    let (config, problems) = merge_alone(&t);
    let route = route(&config, "b/pages", "pages.test");
    assert_eq!(route.unavailable, None, "{problems:?}");
    let pages = route.error_pages.as_ref().expect("error pages");
    assert_eq!(Some(pages.service), config.default_service);
    assert_eq!(pages.codes, [503]);
}
