use super::*;
use crate::kubernetes::fixtures::*;

#[test]
fn class_selection_field_legacy_annotation_and_default() {
    let s = ours();
    let spec = |class: Option<&str>| {
        let mut v = serde_json::json!({ "rules": [] });
        if let Some(c) = class {
            v["ingressClassName"] = c.into();
        }
        v
    };
    assert!(s.is_ours(&ingress(
        "a",
        "x",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        spec(Some("gatehouse"))
    )));
    assert!(!s.is_ours(&ingress(
        "a",
        "x",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        spec(Some("nginx"))
    )));
    assert!(s.is_ours(&ingress(
        "a",
        "x",
        "2026-01-01T00:00:00Z",
        serde_json::json!({ LEGACY_CLASS: "gatehouse" }),
        spec(None)
    )));
    assert!(
        s.is_ours(&ingress(
            "a",
            "x",
            "2026-01-01T00:00:00Z",
            serde_json::json!({}),
            spec(None)
        )),
        "no class + our default"
    );
    let not_default = ClassSelection {
        names: s.names.clone(),
        default: false,
    };
    assert!(!not_default.is_ours(&ingress(
        "a",
        "x",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        spec(None)
    )));
}

#[test]
fn rules_path_types_backends_and_default_backend() {
    let i = ingress(
        "shop",
        "web",
        "2026-01-01T00:00:00Z",
        serde_json::json!({}),
        serde_json::json!({
            "defaultBackend": { "service": { "name": "fallback", "port": { "number": 80 } } },
            "rules": [rule("Shop.Example.com", serde_json::json!([
                path("/", "Prefix", "web", serde_json::json!({ "name": "http" })),
                path("/health", "Exact", "web", serde_json::json!({ "number": 8080 })),
                path("/api", "ImplementationSpecific", "api", serde_json::json!({ "name": "http" })),
            ]))],
        }),
    );
    let t = translate([&i], &ours());
    assert_eq!(t.paths.len(), 3);
    assert_eq!(t.paths[0].host.as_deref(), Some("shop.example.com"));
    assert_eq!(t.paths[1].kind, PathKind::Exact);
    assert_eq!(t.paths[1].backend.port, PortRef::Number(8080));
    assert_eq!(
        t.paths[2].kind,
        PathKind::Prefix,
        "ImplementationSpecific reads as Prefix"
    );
    assert_eq!(t.paths[2].backend.name, "api");
    assert_eq!(t.paths[2].backend.namespace, "shop");
    let (default, from) = t.default_backend.unwrap();
    assert_eq!(
        (default.name.as_str(), from.as_str()),
        ("fallback", "shop/web")
    );
    assert!(t.problems.is_empty(), "{:?}", t.problems);
}

#[test]
fn the_older_ingress_wins_a_conflict_and_the_loser_is_reported() {
    let spec = |svc: &str| serde_json::json!({ "rules": [rule("a.example.com", serde_json::json!([path("/", "Prefix", svc, serde_json::json!({ "number": 80 }))]))] });
    let newer = ingress(
        "team-b",
        "b",
        "2026-03-01T00:00:00Z",
        serde_json::json!({}),
        spec("b"),
    );
    let older = ingress(
        "team-a",
        "a",
        "2026-02-01T00:00:00Z",
        serde_json::json!({}),
        spec("a"),
    );
    let t = translate([&newer, &older], &ours());
    assert_eq!(t.paths.len(), 1);
    assert_eq!(t.paths[0].source, "team-a/a");
    assert!(
        t.problems
            .iter()
            .any(|p| p.contains("team-b/b") && p.contains("older team-a/a")),
        "{:?}",
        t.problems
    );
}

#[test]
fn annotations_under_both_prefixes_and_failing_closed_per_ingress() {
    let spec = |host: &str| serde_json::json!({ "rules": [rule(host, serde_json::json!([path("/app(/|$)(.*)", "ImplementationSpecific", "web", serde_json::json!({ "number": 80 }))]))] });
    let good = ingress(
        "a",
        "good",
        "2026-01-01T00:00:00Z",
        serde_json::json!({
            "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8, 192.0.2.7",
            "gatehouse.io/proxy-body-size": "8m",
            "nginx.ingress.kubernetes.io/proxy-body-size": "1k",
            "nginx.ingress.kubernetes.io/rewrite-target": "/$2",
            "nginx.ingress.kubernetes.io/ssl-redirect": "false",
            "nginx.ingress.kubernetes.io/proxy-read-timeout": "30",
            "nginx.ingress.kubernetes.io/proxy-send-timeout": "thirty",
            "nginx.ingress.kubernetes.io/proxy-connect-timeout": "5",
        }),
        spec("good.example.com"),
    );
    let bad_cidr = ingress(
        "a",
        "bad",
        "2026-01-02T00:00:00Z",
        serde_json::json!({
            "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8,not-a-cidr",
        }),
        spec("bad.example.com"),
    );
    let refused = ingress(
        "a",
        "limited",
        "2026-01-03T00:00:00Z",
        serde_json::json!({
            "nginx.ingress.kubernetes.io/limit-rate": "100",
        }),
        spec("limited.example.com"),
    );
    let t = translate([&good, &bad_cidr, &refused], &ours());
    assert_eq!(t.paths.len(), 3);
    let good = &t.paths[0];
    assert!(good.broken.is_none());
    assert_eq!(
        good.kind,
        PathKind::Regex,
        "rewrite-target implies regex paths"
    );
    assert_eq!(good.policy.allow.entries().len(), 2);
    assert_eq!(
        good.policy.max_body,
        Some(8 << 20),
        "gatehouse.io/ wins over the nginx prefix"
    );
    assert_eq!(good.policy.rewrite.as_deref(), Some("/$2"));
    assert_eq!(good.policy.ssl_redirect, Some(false));
    // proxy-read-timeout bounds the head, each read of the body and a tunnel's silence, as
    // nginx's proxy_read_timeout does; a value ingress-nginx cannot read leaves the default.
    let thirty = Some(std::time::Duration::from_secs(30));
    let t_of = &good.policy.timeouts;
    assert_eq!(
        (t_of.upstream_response, t_of.upstream_read, t_of.tunnel_idle),
        (thirty, thirty, thirty)
    );
    assert_eq!(t_of.upstream_send, None);
    assert_eq!(t_of.connect, Some(std::time::Duration::from_secs(5)));
    assert!(
        t.problems.iter().any(|p| p.contains("proxy-send-timeout")
            && p.contains("`thirty`")
            && p.contains("default timeout applies")),
        "{:?}",
        t.problems
    );
    // A malformed allow-list fails closed for its own Ingress only, never opens the path.
    let bad = &t.paths[1];
    assert!(
        bad.broken
            .as_deref()
            .is_some_and(|w| w.contains("not-a-cidr")),
        "{:?}",
        bad.broken
    );
    let limited = &t.paths[2];
    assert!(limited
        .broken
        .as_deref()
        .is_some_and(|w| w.contains("limit-rate")));
}

#[test]
fn limit_annotations_read_as_ingress_nginx_reads_them() {
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    let (result, _) = policy_of(serde_json::json!({
        n("limit-rps"): "400",
        n("limit-rpm"): "6000",
        n("limit-connections"): "20",
        n("limit-burst-multiplier"): "3",
        n("limit-whitelist"): "10.0.0.0/8, 192.0.2.7",
    }));
    let limits = result.unwrap().0.limits.expect("limits");
    assert_eq!(
        (
            limits.rps,
            limits.rpm,
            limits.connections,
            limits.burst_multiplier
        ),
        (Some(400), Some(6000), Some(20), 3)
    );
    assert_eq!(limits.whitelist.entries().len(), 2);
    // The multiplier defaults to 5; 0 sets no limit; a whitelist alone limits nothing.
    let (result, _) =
        policy_of(serde_json::json!({ n("limit-rps"): "10", n("limit-connections"): "0" }));
    let limits = result.unwrap().0.limits.expect("limits");
    assert_eq!(
        (limits.rps, limits.connections, limits.burst_multiplier),
        (Some(10), None, 5)
    );
    let (result, _) = policy_of(serde_json::json!({ n("limit-whitelist"): "10.0.0.0/8" }));
    assert!(result.unwrap().0.limits.is_none());
    // A value that is not a number fails closed.
    let (result, _) = policy_of(serde_json::json!({ n("limit-rps"): "lots" }));
    assert!(result.unwrap_err().contains("limit-rps"));
}

#[test]
fn every_annotation_of_the_table_meets_its_fate() {
    for (name, fate) in FATES {
        let value = match *name {
            "whitelist-source-range" | "allowlist-source-range" => "10.0.0.0/8",
            "proxy-body-size" => "8m",
            "backend-protocol" => "HTTP",
            "response-headers" => "X-A: 1",
            "rewrite-target" => "/$1",
            "limit-whitelist" | "limit-allowlist" => "10.0.0.0/8",
            "configuration-snippet" => "add_header X-A b;",
            name if name.starts_with("limit-") => "10",
            "affinity" => "cookie",
            "denylist-source-range" => "10.0.0.0/8",
            "permanent-redirect" | "temporal-redirect" => "https://example.com/",
            "permanent-redirect-code" | "temporal-redirect-code" => "301",
            "app-root" => "/app",
            "custom-http-errors" => "404,503",
            "default-backend" => "errors",
            "auth-url" => "http://oauth2.auth.svc/oauth2/auth",
            "auth-method" => "GET",
            "auth-response-headers" => "X-Auth-Request-User",
            "upstream-vhost" => "internal.example.com",
            "x-forwarded-prefix" => "/shop",
            "cors-allow-origin" => "https://a.example.com",
            "auth-type" => "basic",
            "auth-secret-type" => "auth-map",
            "server-alias" => "alias.example.com",
            "affinity-mode" => "balanced",
            "affinity-canary-behavior" => "legacy",
            "load-balance" => "ewma",
            "upstream-hash-by" => "$request_uri",
            "proxy-next-upstream" => "error timeout http_502",
            "proxy-next-upstream-tries" | "proxy-next-upstream-timeout" => "2",
            "server-snippet" => "add_header X-A b;",
            "session-cookie-max-age" | "session-cookie-expires" => "3600",
            "session-cookie-samesite" => "Lax",
            "session-cookie-name" | "session-cookie-path" | "session-cookie-domain" => "x",
            _ => "true",
        };
        for prefix in ["nginx.ingress.kubernetes.io/", "gatehouse.io/"] {
            let mut annotations = serde_json::json!({ format!("{prefix}{name}"): value });
            if *name == "auth-type" {
                // Basic authentication needs its Secret: alone it fails closed.
                annotations[format!("{prefix}auth-secret")] = "users".into();
            }
            let (result, problems) = policy_of(annotations);
            match fate {
                Fate::Refused(_) => {
                    let why = result.expect_err(name);
                    assert!(
                        why.contains(name) && why.contains("not supported yet"),
                        "{why}"
                    );
                }
                Fate::Ignored(_) => {
                    assert!(result.is_ok(), "{name}: {result:?}");
                    assert!(
                        problems.iter().any(|p| p.contains(&format!("{name} is not supported and is ignored"))),
                        "{name}: {problems:?}"
                    );
                }
                Fate::Built => {
                    // response-headers is ours: under the nginx prefix it is ignored, and said so.
                    assert!(result.is_ok(), "{prefix}{name}: {result:?}");
                }
            }
        }
    }
}

#[test]
fn unknown_names_fail_closed_with_a_suggestion_and_canary_false_is_no_canary() {
    let (result, _) = policy_of(
        serde_json::json!({ "nginx.ingress.kubernetes.io/whitelist-soruce-range": "10.0.0.0/8" }),
    );
    let why = result.unwrap_err();
    assert!(
        why.contains("did you mean whitelist-source-range?"),
        "{why}"
    );
    for value in ["false", "False", "0", "f"] {
        let (result, _) =
            policy_of(serde_json::json!({ "nginx.ingress.kubernetes.io/canary": value }));
        assert!(result.unwrap().0.canary.is_none(), "canary: {value}");
    }
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    let (result, _) = policy_of(serde_json::json!({
        n("canary"): "true",
        n("canary-weight"): "30",
        n("canary-by-header"): "X-Canary",
        n("canary-by-header-pattern"): "beta|gamma",
    }));
    let canary = result.unwrap().0.canary.expect("a canary");
    assert_eq!((canary.weight, canary.weight_total), (30, 100));
    assert!(canary.header_pattern.unwrap().is_match("gamma"));
    // Values ingress-nginx cannot read fail the Ingress closed.
    for (name, value) in [
        ("canary", "yes"),
        ("canary-weight", "150"),
        ("canary-by-header-pattern", "("),
    ] {
        let mut written = serde_json::json!({ n("canary"): "true" });
        written[n(name)] = serde_json::json!(value);
        let (result, _) = policy_of(written);
        assert!(result.is_err(), "{name}: {value}");
    }
}

#[test]
fn values_parse_as_ingress_nginx_parses_them() {
    // Go's ParseBool.
    for (value, redirect) in [
        ("True", true),
        ("1", true),
        ("t", true),
        ("FALSE", false),
        ("0", false),
    ] {
        let (result, _) =
            policy_of(serde_json::json!({ "nginx.ingress.kubernetes.io/ssl-redirect": value }));
        assert_eq!(result.unwrap().0.ssl_redirect, Some(redirect), "{value}");
    }
    let (result, _) =
        policy_of(serde_json::json!({ "nginx.ingress.kubernetes.io/ssl-redirect": "yes" }));
    assert!(result.is_err());
    // A range with host bits set is masked, with a warning, as net.ParseCIDR does.
    let (result, problems) = policy_of(
        serde_json::json!({ "nginx.ingress.kubernetes.io/whitelist-source-range": "10.1.2.3/8, 192.168.1.7" }),
    );
    let allow = result.unwrap().0.allow;
    assert!(allow.contains("10.200.0.1".parse().unwrap()));
    assert!(allow.contains("192.168.1.7".parse().unwrap()));
    assert!(!allow.contains("192.168.1.8".parse().unwrap()));
    assert!(
        problems.iter().any(|p| p.contains("read as `10.0.0.0/8`")),
        "{problems:?}"
    );
    let (result, _) = policy_of(
        serde_json::json!({ "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/33" }),
    );
    assert!(result.is_err());
}

/// The policy one Ingress's annotations make, or why it fails closed, and what was ignored.
fn policy_of(written: serde_json::Value) -> (Result<(Policy, bool), String>, Vec<String>) {
    let i = ingress(
        "shop",
        "web",
        "2026-01-01T00:00:00Z",
        written,
        serde_json::json!({ "rules": [] }),
    );
    let mut problems = Vec::new();
    let result = annotations(&i, &mut problems, "shop/web");
    (result, problems)
}

#[test]
fn annotation_values_and_prefixes() {
    const N: &str = "nginx.ingress.kubernetes.io/";
    const G: &str = "gatehouse.io/";
    let a = |pairs: &[(&str, &str, &str)]| {
        let mut m = serde_json::Map::new();
        for (prefix, name, value) in pairs {
            m.insert(format!("{prefix}{name}"), (*value).into());
        }
        serde_json::Value::Object(m)
    };
    // (annotations, served)
    let cases = [
        (a(&[(N, "backend-protocol", "HTTP")]), true),
        (a(&[(N, "backend-protocol", "http")]), true),
        (a(&[(N, "backend-protocol", "GRPC")]), true),
        (a(&[(G, "backend-protocol", "HTTPS")]), true),
        (a(&[(G, "backend-protocol", "FCGI")]), false),
        (a(&[(N, "ssl-redirect", "maybe")]), false),
        (a(&[(N, "proxy-body-size", "lots")]), false),
        (a(&[(G, "response-headers", "NoColon")]), false),
        (a(&[(G, "response-headers", "bad name: x")]), false),
        (a(&[(G, "response-headers", "X-Bad: line\u{7f}")]), false),
        (a(&[(N, "response-headers", "X-A: 1")]), true),
    ];
    for (annotations, served) in cases {
        let (result, _) = policy_of(annotations.clone());
        assert_eq!(result.is_ok(), served, "{annotations}: {result:?}");
    }

    // gatehouse.io/ wins over the nginx prefix for the same name.
    let (result, _) = policy_of(a(&[
        (N, "proxy-body-size", "1m"),
        (G, "proxy-body-size", "2m"),
    ]));
    assert_eq!(result.unwrap().0.max_body, Some(2 << 20));
    let (result, _) = policy_of(a(&[(N, "proxy-body-size", "0")]));
    assert_eq!(
        result.unwrap().0.max_body,
        Some(u64::MAX),
        "0 turns the limit off"
    );

    // response-headers is ours: under the nginx prefix it is ignored, and said so.
    let (result, problems) = policy_of(a(&[(N, "response-headers", "X-A: 1")]));
    assert!(result.unwrap().0.response_headers.is_empty());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("response-headers is not supported and is ignored")),
        "{problems:?}"
    );
    let (result, problems) = policy_of(a(&[(
        G,
        "response-headers",
        "X-A: 1\n\nX-XSS-Protection: 1; mode=block\r\nX-C: c",
    )]));
    let headers: Vec<(String, String)> = result
        .unwrap()
        .0
        .response_headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-a", "1"),
            ("x-xss-protection", "1; mode=block"),
            ("x-c", "c")
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    assert!(problems.is_empty(), "{problems:?}");

    // Regex paths: with use-regex, or implied by rewrite-target as in ingress-nginx.
    let regex = |annotations| policy_of(annotations).0.unwrap().1;
    assert!(!regex(a(&[])));
    assert!(regex(a(&[(N, "use-regex", "true")])));
    assert!(!regex(a(&[(N, "use-regex", "false")])));
    assert!(regex(a(&[(N, "rewrite-target", "/$1")])));
}

#[test]
fn tls_entries_without_hosts_serve_the_rule_hosts() {
    let spec = |tls_hosts: serde_json::Value| {
        serde_json::json!({
            "tls": [{ "hosts": tls_hosts, "secretName": "cert" }],
            "rules": [
                rule("A.example.com", serde_json::json!([path("/", "Prefix", "web", serde_json::json!({ "name": "http" }))])),
                rule("b.example.com", serde_json::json!([path("/", "Prefix", "web", serde_json::json!({ "name": "http" }))])),
            ],
        })
    };
    // (spec.tls hosts, hosts served)
    let cases = [
        (
            serde_json::json!(["Only.example.com"]),
            vec!["only.example.com"],
        ),
        (
            serde_json::json!([]),
            vec!["a.example.com", "b.example.com"],
        ),
        (
            serde_json::Value::Null,
            vec!["a.example.com", "b.example.com"],
        ),
    ];
    for (hosts, want) in cases {
        let i = ingress(
            "shop",
            "web",
            "2026-01-01T00:00:00Z",
            serde_json::json!({}),
            spec(hosts.clone()),
        );
        let t = translate([&i], &ours());
        assert_eq!(t.tls.len(), 1);
        assert_eq!(t.tls[0].hosts, want, "{hosts}");
        assert_eq!(t.tls[0].secret, "cert");
    }
}

proptest::proptest! {
    /// Any value of any annotation in the table, or any name: an answer, never a panic.
    #[test]
    fn annotation_values_never_panic(
        index in 0..FATES.len(),
        value in "\\PC{0,60}",
        name in "[a-z-]{0,24}",
    ) {
        let (table_name, _) = FATES[index];
        let _ = policy_of(serde_json::json!({ format!("nginx.ingress.kubernetes.io/{table_name}"): value.clone() }));
        let _ = policy_of(serde_json::json!({ format!("gatehouse.io/{name}"): value }));
    }
}
