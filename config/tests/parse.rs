use gatehouse_config::{parse, Balance, PathMatch, RoutingTable};

const FULL: &str = r#"
listen:
  http: "127.0.0.1:8080"
  admin: "127.0.0.1:9901"
timeouts: { connect: 250ms, request_header: 5s, upstream_response: 30s, idle: 1m }
shutdown: { drain_delay: 0s, grace_period: 10s }
access_log: off
workers: 1
services:
  web: { endpoints: ["10.1.2.3:8080", "[::1]:9000"], balance: least_request }
  api: { endpoints: ["10.1.2.5:8080"] }
default_service: web
routes:
  - host: App1.Example.com
    max_body: 8m
    response_headers: { X-Frame-Options: SAMEORIGIN }
    paths:
      - { path: /api, match: prefix, service: api, rewrite: /v1 }
      - { path: /, service: web }
"#;

#[test]
fn full_config_parses() {
    let c = parse(FULL, "gh.yaml").expect("valid");
    assert_eq!(c.listen.http.unwrap().port(), 8080);
    assert_eq!(c.timeouts.connect.as_millis(), 250);
    assert_eq!(c.services.len(), 2);
    assert_eq!(c.services[0].balance, Balance::LeastRequest);
    assert_eq!(c.routes[0].max_body, 8 << 20);
    assert_eq!(c.routes[0].host.to_string(), "app1.example.com");
    assert_eq!(c.routes[0].paths[0].kind, PathMatch::Prefix);
    assert_eq!(c.default_service.map(|s| s.0), Some(0));
}

fn errors(yaml: &str) -> Vec<String> {
    parse(yaml, "bad.yaml")
        .expect_err("must be rejected")
        .0
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn every_error_is_reported_with_its_location() {
    let yaml = r#"listen:
  http: "127.0.0.1:8080"
timeouts:
  conect: 3s
  idle: forever
services:
  web: { endpoints: ["10.0.0.1:80", "nonsense"] }
routes:
  - host: a.example.com
    alow: "10.0.0.0/8"
    paths:
      - { path: /, service: wbe }
"#;
    let errs = errors(yaml);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0]
            .starts_with("bad.yaml:4:3: unknown key `conect` in timeouts; did you mean `connect`?"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("bad.yaml:5:9: timeouts.idle:"),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("bad.yaml:7:37: service `web` endpoint:"),
        "{errs:#?}"
    );
    assert!(
        errs[3].starts_with("bad.yaml:10:5: unknown key `alow` in a route; did you mean `allow`?"),
        "{errs:#?}"
    );
    assert!(errs[4].contains("`wbe`, which is not defined"), "{errs:#?}");
}

#[test]
fn features_not_built_yet_are_refused_not_ignored() {
    let yaml = r#"listen: { http: "127.0.0.1:80" }
services: { web: { endpoints: ["10.0.0.1:80"], protocol: h2 } }
routes:
  - host: a.example.com
    limit_rps: 10
    paths: [{ path: /, service: web }]
"#;
    let errs = errors(yaml);
    // `protocol: h2` is built now; the old key is still refused, not ignored.
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs.iter().all(|e| e.contains("not supported yet")),
        "{errs:#?}"
    );
}

#[test]
fn l4_entries_are_validated_with_their_locations() {
    let yaml = r#"services: { db: { endpoints: ["10.0.0.1:5432"] } }
l4:
  - { listen: "0.0.0.0:5432", protocol: tcp, service: db, allow: "10.0.0.0/8", max_connections: 100, idle: 1h }
  - { listen: "0.0.0.0:5353", protocol: udp, service: db, max_sessions: 50 }
  - { listen: "0.0.0.0:5432", protocol: tcp, service: db }
  - { listen: "0.0.0.0:53", protocol: udp, service: db, max_connections: 5, proxy_protocol_upstream: true }
  - { listen: "0.0.0.0:6000", protocol: sctp, service: nope }
"#;
    let errs = errors(yaml);
    let all = errs.join("\n");
    assert!(
        all.contains("bad.yaml:5:5: tcp/0.0.0.0:5432 is already a listener"),
        "{all}"
    );
    assert!(
        all.contains("`max_connections` does not apply to this protocol; use `max_sessions`"),
        "{all}"
    );
    assert!(
        all.contains("proxy_protocol and proxy_protocol_upstream are for TCP"),
        "{all}"
    );
    assert!(all.contains("`sctp` is not one of `tcp`, `udp`"), "{all}");
    assert!(
        all.contains("service `nope`, which is not defined"),
        "{all}"
    );
    assert_eq!(errs.len(), 5, "{all}");

    // An L4-only configuration needs no HTTP listener.
    let ok = gatehouse_config::parse(
        "services: { db: { endpoints: [\"10.0.0.1:5432\"] } }\nl4: [{ listen: \"0.0.0.0:5432\", service: db, idle: 1h }]\n",
        "ok.yaml",
    )
    .expect("valid");
    assert_eq!(
        ok.l4[0].protocol,
        gatehouse_config::L4Protocol::Tcp,
        "tcp by default"
    );
    assert_eq!(ok.l4[0].idle, std::time::Duration::from_secs(3600));
    assert_eq!(ok.l4[0].max, gatehouse_config::DEFAULT_L4_MAX);
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let errs = errors("listen:\n  http: [unclosed\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("bad.yaml:"), "{errs:?}");
    assert!(errs[0].contains("YAML syntax error"), "{errs:?}");
}

#[test]
fn conflicts_and_missing_pieces() {
    let yaml = r#"listen: { admin: "127.0.0.1:9901" }
services: { web: { endpoints: ["10.0.0.1:80"] } }
routes:
  - host: a.example.com
    paths: [{ path: /x, service: web }, { path: /x/, service: web }]
  - host: A.example.com
    paths: [{ path: "(", match: regex, service: web }]
  - host: "*.*.example.com"
    paths: []
"#;
    let errs = errors(yaml);
    let all = errs.join("\n");
    assert!(all.contains("no listener"), "{all}");
    assert!(all.contains("lists path `/x/`"), "{all}");
    assert!(all.contains("is not a valid regex"), "{all}");
    assert!(all.contains("is not a host"), "{all}");
    assert!(
        all.contains("needs at least one entry under `paths`"),
        "{all}"
    );
}

#[test]
fn duplicate_hosts_point_at_the_first() {
    let yaml = r#"listen: { http: "127.0.0.1:80" }
services: { web: { endpoints: ["10.0.0.1:80"] } }
routes:
  - host: a.example.com
    paths: [{ path: /, service: web }]
  - host: a.example.com
    paths: [{ path: /, service: web }]
"#;
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("already routed at bad.yaml:4:5"),
        "{errs:?}"
    );
}

#[test]
fn duplicate_yaml_keys_are_errors() {
    let errs = errors("listen: { http: \"127.0.0.1:80\" }\nlisten: { http: \"127.0.0.1:81\" }\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
}

fn table(yaml_routes: &str) -> (gatehouse_config::Config, RoutingTable) {
    let yaml = format!(
        "listen: {{ http: \"127.0.0.1:80\" }}\nservices: {{ a: {{ endpoints: [\"10.0.0.1:80\"] }}, b: {{ endpoints: [\"10.0.0.2:80\"] }} }}\nroutes:\n{yaml_routes}"
    );
    let c = parse(&yaml, "t.yaml").expect("valid");
    let t = RoutingTable::compile(&c.routes).expect("compiles");
    (c, t)
}

#[test]
fn routing_matrix() {
    let (c, t) = table(
        r#"  - host: www.example.com
    paths:
      - { path: /, service: a }
      - { path: /foo, service: b }
      - { path: /foo/bar/, service: a }
      - { path: /exact, match: exact, service: b }
      - { path: "/re/([0-9]+)", match: regex, service: b, rewrite: "/num/$1" }
      - { path: /re, match: regex, service: a }
  - host: "*.example.com"
    paths: [{ path: /, service: b }]
"#,
    );
    let find = |host: &str, path: &str| {
        let h = gatehouse_config::routing::normalize_host(host);
        t.find(&h, path)
            .map(|m| (m.route, c.routes[m.route].paths[m.rule].path.clone()))
    };
    // Hosts: case-insensitive, port stripped; exact beats wildcard; a wildcard covers one label.
    assert_eq!(find("WWW.example.com:8080", "/"), Some((0, "/".into())));
    assert_eq!(find("api.example.com", "/x"), Some((1, "/".into())));
    assert_eq!(find("a.b.example.com", "/x"), None);
    assert_eq!(find("example.com", "/x"), None);
    assert_eq!(find("www.example.com.", "/"), Some((0, "/".into())));
    // Prefix by element: /foo matches /foo and /foo/x but not /foobar.
    assert_eq!(find("www.example.com", "/foo"), Some((0, "/foo".into())));
    assert_eq!(find("www.example.com", "/foo/"), Some((0, "/foo".into())));
    assert_eq!(find("www.example.com", "/foo/x"), Some((0, "/foo".into())));
    assert_eq!(find("www.example.com", "/foobar"), Some((0, "/".into())));
    // Longest prefix wins; a trailing slash in the rule does not matter.
    assert_eq!(
        find("www.example.com", "/foo/bar"),
        Some((0, "/foo/bar/".into()))
    );
    assert_eq!(
        find("www.example.com", "/foo/bar/baz"),
        Some((0, "/foo/bar/".into()))
    );
    // Exact beats prefix; only the exact path.
    assert_eq!(
        find("www.example.com", "/exact"),
        Some((0, "/exact".into()))
    );
    assert_eq!(find("www.example.com", "/exact/x"), Some((0, "/".into())));
    // Regex comes after prefixes: "/" catches everything here, so check a host without "/".
}

#[test]
fn regex_longest_first_and_rewrites() {
    let (c, t) = table(
        r#"  - host: r.example.com
    paths:
      - { path: /re, match: regex, service: a }
      - { path: "/re/([0-9]+)/(.*)", match: regex, service: b, rewrite: "/num/$1?$2" }
      - { path: /api, service: a, rewrite: /v1 }
      - { path: /root, service: a, rewrite: / }
      - { path: /same, match: exact, service: a, rewrite: /other }
"#,
    );
    let rw = |path: &str| {
        let m = t.find("r.example.com", path).expect("match");
        let rule = &c.routes[m.route].paths[m.rule];
        (
            rule.path.clone(),
            t.rewrite(&m, rule.rewrite.as_deref().unwrap_or(""), path),
        )
    };
    // The longer pattern is tried first though written second, as ingress-nginx orders them.
    assert_eq!(rw("/re/42/rest").1, "/num/42?rest");
    assert_eq!(rw("/reX").0, "/re");
    assert_eq!(rw("/api/users").1, "/v1/users");
    assert_eq!(rw("/api").1, "/v1");
    assert_eq!(rw("/root/x").1, "/x");
    assert_eq!(rw("/root").1, "/");
    assert_eq!(rw("/same").1, "/other");
    assert!(t.find("r.example.com", "/nothing").is_none());
}

#[test]
fn allow_lists_and_trusted_proxies_as_strings_or_lists() {
    let yaml = r#"listen: { http: "127.0.0.1:80", proxy_protocol: true }
trusted_proxies: ["10.0.0.0/8", "fd00::/8"]
services: { web: { endpoints: ["10.0.0.1:80"] } }
routes:
  - host: a.example.com
    allow: "111.111.111.0/24,222.222.222.222/32, 2001:db8::/32"
    paths: [{ path: /, service: web }]
  - host: b.example.com
    allow: ["192.0.2.7"]
    paths: [{ path: /, service: web }]
  - host: c.example.com
    allow: ""
    paths: [{ path: /, service: web }]
"#;
    let c = parse(yaml, "t.yaml").expect("valid");
    assert!(c.listen.proxy_protocol);
    assert_eq!(c.trusted_proxies.entries().len(), 2);
    assert_eq!(c.routes[0].allow.entries().len(), 3);
    assert!(c.routes[1].allow.contains("192.0.2.7".parse().unwrap()));
    assert!(c.routes[2].allow.is_empty(), "empty means everyone");
}

#[test]
fn malformed_cidrs_are_located_errors_never_ignored() {
    let yaml = r#"listen: { http: "127.0.0.1:80", proxy_protocol: true }
services: { web: { endpoints: ["10.0.0.1:80"] } }
routes:
  - host: a.example.com
    allow: "111.111.111.0/24,222.222.222.2222/32"
    paths: [{ path: /, service: web }]
  - host: b.example.com
    allow: ["10.1.2.3/8", "nonsense"]
    paths: [{ path: /, service: web }]
"#;
    let errs = errors(yaml);
    let all = errs.join("\n");
    assert_eq!(errs.len(), 4, "{all}");
    assert!(
        all.contains("proxy_protocol is on but trusted_proxies is empty"),
        "{all}"
    );
    assert!(
        all.contains("bad.yaml:5:12: route `a.example.com` allow: `222.222.222.2222/32`"),
        "{all}"
    );
    assert!(all.contains("did you mean `10.0.0.0/8`"), "{all}");
    assert!(all.contains("`nonsense` is not an IP address"), "{all}");
}

#[test]
fn tls_entries_resolve_paths_against_the_config_file() {
    let yaml = r#"listen: { https: "127.0.0.1:443" }
tls:
  - { cert: certs/a.crt, key: certs/a.key, default: true }
  - { cert: /abs/b.crt, key: /abs/b.key, hosts: [b.example.com, "*.b.example.com"] }
services: {}
routes: []
"#;
    let c = parse(yaml, "/etc/gatehouse/gatehouse.yaml").expect("valid");
    assert_eq!(c.tls.len(), 2);
    assert!(c.tls[0].default);
    assert_eq!(
        c.tls[0].source,
        gatehouse_config::TlsSource::Files {
            cert: "/etc/gatehouse/certs/a.crt".into(),
            key: "/etc/gatehouse/certs/a.key".into()
        }
    );
    assert_eq!(c.tls[1].hosts.as_ref().map(Vec::len), Some(2));
    assert_eq!(c.referenced_files().len(), 4);
    // Metrics and logs name a certificate by its file.
    assert_eq!(c.tls[0].label(), "/etc/gatehouse/certs/a.crt");
    assert_eq!(c.tls[1].label(), "/abs/b.crt");
    let errs = errors("listen: { https: \"127.0.0.1:443\" }\ntls: [{ cert: a.crt }, { cert: b, key: b, default: true }, { cert: c, key: c, default: true }]\n");
    let all = errs.join("\n");
    assert!(all.contains("needs `key`"), "{all}");
    assert!(
        all.contains("more than one `tls` entry says `default: true`"),
        "{all}"
    );
}

#[test]
fn kubernetes_backed_services() {
    let yaml = r#"listen: { http: "127.0.0.1:80" }
services:
  web: { kubernetes: { namespace: default, name: web, port: http } }
  api: { endpoints: ["10.0.0.9:80"], kubernetes: { namespace: shop, name: api, port: 8080 } }
routes: []
"#;
    let c = parse(yaml, "t.yaml").expect("valid");
    let web = c.services[0].kubernetes.as_ref().unwrap();
    assert_eq!(web.port, gatehouse_config::ServicePort::Name("http".into()));
    let api = c.services[1].kubernetes.as_ref().unwrap();
    assert_eq!(
        (api.namespace.as_str(), &api.port),
        ("shop", &gatehouse_config::ServicePort::Number(8080))
    );
    let errs = errors("listen: { http: \"127.0.0.1:80\" }\nservices: { web: { kubernetes: { name: web, prot: http } } }\n");
    let all = errs.join("\n");
    assert!(all.contains("unknown key `prot`"), "{all}");
    assert!(all.contains("needs `namespace`"), "{all}");
}

/// One route for `a.example.com` to a service `s`, plus `top` lines and `route` keys.
fn with(top: &str, route: &str) -> String {
    format!(
        "listen: {{ http: \"127.0.0.1:8080\" }}\n{top}\nservices: {{ s: {{ endpoints: [\"10.0.0.1:80\"] }} }}\nroutes:\n  - {{ host: a.example.com, {route}paths: [{{ path: /, service: s }}] }}\n"
    )
}

#[test]
fn top_level_values_accepted_and_refused() {
    use gatehouse_config::{AccessLog, Workers};
    // (top-level lines, accepted)
    let cases = [
        ("access_log: stdout", true),
        ("access_log: off", true),
        ("access_log: file", false),
        ("workers: auto", true),
        ("workers: 1", true),
        ("workers: 1024", true),
        ("workers: 0", false),
        ("workers: 1025", false),
        ("workers: many", false),
    ];
    for (top, accepted) in cases {
        assert_eq!(parse(&with(top, ""), "t.yaml").is_ok(), accepted, "{top}");
    }
    let c = parse(&with("access_log: stdout\nworkers: 4", ""), "t.yaml").unwrap();
    assert_eq!(c.access_log, AccessLog::Stdout);
    assert_eq!(c.workers, Workers::Count(4));
    let c = parse(&with("access_log: off", ""), "t.yaml").unwrap();
    assert_eq!(c.access_log, AccessLog::Off);
}

#[test]
fn route_values_booleans_scalars_and_defaults() {
    let c = parse(&with("", "https_redirect: false, "), "t.yaml").unwrap();
    assert!(!c.routes[0].https_redirect);
    let c = parse(&with("", "https_redirect: true, "), "t.yaml").unwrap();
    assert!(c.routes[0].https_redirect);
    assert!(!errors(&with("", "https_redirect: yes please, ")).is_empty());
    // Without max_body: nginx's 1 MiB.
    let c = parse(&with("", ""), "t.yaml").unwrap();
    assert_eq!(c.routes[0].max_body, 1 << 20);
    assert_eq!(gatehouse_config::DEFAULT_MAX_BODY, 1_048_576);
    // YAML booleans and numbers are header values as written.
    let c = parse(
        &with(
            "",
            "response_headers: { X-On: true, X-Version: 1.5, X-Count: 3 }, ",
        ),
        "t.yaml",
    )
    .unwrap();
    let headers: Vec<(String, String)> = c.routes[0]
        .response_headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-on".to_owned(), "true".to_owned()),
            ("x-version".to_owned(), "1.5".to_owned()),
            ("x-count".to_owned(), "3".to_owned())
        ]
    );
}

#[test]
fn l4_limits_defaults_and_port_conflicts() {
    let l4 = |entries: &str| with(&format!("l4:\n{entries}"), "");
    // (entries, accepted)
    let cases = [
        ("  - { listen: \"127.0.0.1:5432\", service: s, max_connections: 1 }", true),
        ("  - { listen: \"127.0.0.1:5432\", service: s, max_connections: 0 }", false),
        ("  - { listen: \"127.0.0.1:5353\", protocol: udp, service: s, max_sessions: 0 }", false),
        // The HTTP listener's TCP port is taken; UDP on the same port is another socket.
        ("  - { listen: \"127.0.0.1:8080\", service: s }", false),
        ("  - { listen: \"127.0.0.1:8080\", protocol: udp, service: s }", true),
        // Port 0 (the kernel picks) never conflicts.
        ("  - { listen: \"127.0.0.1:0\", service: s }\n  - { listen: \"127.0.0.1:0\", service: s }", true),
        ("  - { listen: \"127.0.0.1:6000\", service: s }\n  - { listen: \"127.0.0.1:6000\", service: s }", false),
        ("  - { listen: \"127.0.0.1:6000\", service: s }\n  - { listen: \"127.0.0.1:6000\", protocol: udp, service: s }", true),
    ];
    for (entries, accepted) in cases {
        assert_eq!(parse(&l4(entries), "t.yaml").is_ok(), accepted, "{entries}");
    }
    let c = parse(
        &l4("  - { listen: \"127.0.0.1:5353\", protocol: udp, service: s }\n  - { listen: \"127.0.0.1:5432\", service: s }"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        c.l4[0].idle.as_secs(),
        30,
        "UDP sessions idle out after 30 s"
    );
    assert_eq!(
        c.l4[1].idle.as_secs(),
        600,
        "TCP connections after 10 min, as nginx"
    );
    assert_eq!(c.l4[0].label(), "udp/127.0.0.1:5353");
    assert_eq!(c.l4[1].label(), "tcp/127.0.0.1:5432");
}

#[test]
fn v4_mapped_ranges_are_ipv4_ranges() {
    use gatehouse_config::cidr::parse_cidr;
    // (written, understood as)
    let cases = [
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:10.1.2.3/128", "10.1.2.3/32"),
        ("::ffff:0.0.0.0/96", "0.0.0.0/0"),
        ("::ffff:10.1.2.3", "10.1.2.3/32"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("10.0.0.0/8", "10.0.0.0/8"),
    ];
    for (written, want) in cases {
        assert_eq!(parse_cidr(written).unwrap().to_string(), want, "{written}");
    }
}

#[test]
fn errors_print_one_per_line_and_objects_without_a_line() {
    use gatehouse_config::{ConfigError, ConfigErrors, Location};
    let at = |file: &str, line| Location {
        file: file.into(),
        line,
        column: 3,
    };
    let errors = ConfigErrors(vec![
        ConfigError {
            location: at("a.yaml", 1),
            message: "first".into(),
        },
        ConfigError {
            location: at("Ingress shop/web", 0),
            message: "second".into(),
        },
        ConfigError {
            location: at("a.yaml", 9),
            message: "third".into(),
        },
    ]);
    assert_eq!(
        errors.to_string(),
        "a.yaml:1:3: first\nIngress shop/web: second\na.yaml:9:3: third"
    );
    assert!(at("x", 0).is_object());
    assert!(!at("x", 1).is_object());
    assert_eq!(ConfigErrors(Vec::new()).to_string(), "");
}

#[test]
fn host_patterns_parse_and_match() {
    use gatehouse_config::HostPattern;
    // (written, accepted)
    let long_label = format!("{}.example.com", "a".repeat(64));
    let long_name = format!("{}.com", "abcdefghi.".repeat(26));
    // DNS names are at most 253 characters: four labels of 63, 63, 63 and 61 (or 62).
    let name_of = |last: usize| {
        format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(last)
        )
    };
    let (longest, too_long) = (name_of(61), name_of(62));
    assert_eq!((longest.len(), too_long.len()), (253, 254));
    let parsed = [
        ("app.example.com", true),
        ("App.Example.COM", true),
        ("*.example.com", true),
        ("*", true),
        ("under_score.example.com", true),
        ("with-dash.example.com", true),
        ("", false),
        ("*.", true), // a trailing dot is dropped: `*`
        ("a.*.example.com", false),
        ("**.example.com", false),
        ("a..example.com", false),
        ("sp ace.example.com", false),
        (long_label.as_str(), false),
        (&long_name[..], false),
        (&format!("{}.example.com", "a".repeat(63)), true),
        (&longest, true),
        (&too_long, false),
    ];
    for (text, accepted) in parsed {
        assert_eq!(HostPattern::parse(text).is_ok(), accepted, "{text}");
    }
    // (pattern, host, matches)
    let cases = [
        ("app.example.com", "app.example.com", true),
        ("app.example.com", "other.example.com", false),
        ("app.example.com", "x.app.example.com", false),
        ("*.example.com", "a.example.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "a.b.example.com", false),
        ("*.example.com", ".example.com", false),
        ("*.example.com", "a.example.org", false),
        ("*", "anything.test", true),
    ];
    for (pattern, host, want) in cases {
        let p = HostPattern::parse(pattern).unwrap();
        assert_eq!(p.matches(host), want, "{pattern} ~ {host}");
    }
    assert_eq!(
        HostPattern::parse("App.Example.COM").unwrap().to_string(),
        "app.example.com"
    );
    assert_eq!(
        HostPattern::parse("*.Example.com").unwrap().to_string(),
        "*.example.com"
    );
}

#[test]
fn value_checks_of_listeners_durations_services_and_paths() {
    let file = |top: &str, route: &str, path: &str| {
        format!(
            "listen: {{ http: \"127.0.0.1:8080\"{top} }}\nservices: {{ s: {{ endpoints: [\"10.0.0.1:80\"] }} }}\nroutes:\n  - {{ host: a.example.com, {route}paths: [{{ {path}service: s }}] }}\n"
        )
    };
    // (listen extras, route keys, path keys, accepted)
    let cases = [
        (", admin: \"127.0.0.1:8080\"", "", "path: /, ", false),
        (", admin: \"127.0.0.1:9901\"", "", "path: /, ", true),
        ("", "", "path: api, ", false),
        ("", "", "path: /api, ", true),
        ("", "", "path: \"api(/|$)\", match: regex, ", true),
        (
            "",
            "response_headers: { \"bad name\": x }, ",
            "path: /, ",
            false,
        ),
        (
            "",
            "response_headers: { X-Ok: \"line\\nbreak\" }, ",
            "path: /, ",
            false,
        ),
    ];
    for (top, route, path, accepted) in cases {
        assert_eq!(
            parse(&file(top, route, path), "t.yaml").is_ok(),
            accepted,
            "{top} {route} {path}"
        );
    }
    // Port 0 twice is not a conflict: the kernel picks two ports.
    let both_zero =
        "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\nservices: {}\nroutes: []\n";
    assert!(parse(both_zero, "t.yaml").is_ok());

    let with_top = |top: &str| {
        format!("listen: {{ http: \"127.0.0.1:8080\" }}\n{top}\nservices: {{ s: {{ endpoints: [] }} }}\nroutes: []\n")
    };
    // (top-level lines, accepted)
    let cases = [
        ("timeouts: { connect: 0s }", false),
        ("timeouts: { connect: 1ms }", true),
        ("shutdown: { drain_delay: 0s, grace_period: 3s }", true),
        ("shutdown: { drain_delay: soon }", false),
    ];
    for (top, accepted) in cases {
        assert_eq!(parse(&with_top(top), "t.yaml").is_ok(), accepted, "{top}");
    }
    let c = parse(
        &with_top("shutdown: { drain_delay: 0s, grace_period: 3s }"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(c.shutdown.drain_delay.as_secs(), 0);
    assert_eq!(c.shutdown.grace_period.as_secs(), 3);

    let service = |spec: &str| {
        format!("listen: {{ http: \"127.0.0.1:8080\" }}\nservices: {{ s: {spec} }}\nroutes: []\n")
    };
    // Balancing: SPEC.md's short hash forms, `hash` with a key, ewma, and affinity.
    let balance_of = |spec: &str| {
        parse(&service(spec), "t.yaml").unwrap().services[0]
            .balance
            .clone()
    };
    let key = |text: &str| Balance::Hash(gatehouse_config::Template::parse(text).unwrap());
    assert_eq!(
        balance_of("{ endpoints: [], balance: \"hash(header:X-User)\" }"),
        key("${http_x_user}")
    );
    assert_eq!(
        balance_of("{ endpoints: [], balance: \"hash(client_ip)\" }"),
        key("$remote_addr")
    );
    assert_eq!(
        balance_of("{ endpoints: [], balance: \"hash(cookie:sid)\" }"),
        key("${cookie_sid}")
    );
    assert_eq!(
        balance_of("{ endpoints: [], balance: hash, hash_key: \"$arg_id-$http_x_user\" }"),
        key("$arg_id-$http_x_user")
    );
    assert_eq!(
        balance_of("{ endpoints: [], balance: ewma }"),
        Balance::Ewma
    );
    for (spec, says) in [
        (
            "{ endpoints: [], balance: hash }",
            "`hash` needs `hash_key`",
        ),
        (
            "{ endpoints: [], hash_key: $host }",
            "only used with `balance: hash`",
        ),
        (
            "{ endpoints: [], balance: hash, hash_key: $upstream_addr }",
            "`$upstream_addr` is not a variable",
        ),
        (
            "{ endpoints: [], balance: \"hash(ip)\" }",
            "is not one of `hash(client_ip)`",
        ),
        (
            "{ endpoints: [], affinity: { mode: sticky } }",
            "`sticky` is not one of `balanced`, `persistent`",
        ),
        (
            "{ endpoints: [], affinity: { samesite: lax2 } }",
            "not one of `Strict`, `Lax`, `None`",
        ),
        (
            "{ endpoints: [], affinity: { cookie: \"a b\" } }",
            "is not a cookie name",
        ),
        (
            "{ endpoints: [], affinity: { max_age: 10 } }",
            "has no unit",
        ),
    ] {
        let e = errors(&service(spec)).join("\n");
        assert!(e.contains(says), "{spec}: {e}");
    }
    let c = parse(
        &service("{ endpoints: [], affinity: { cookie: route, mode: persistent, max_age: 2h, samesite: strict, secure: true, change_on_failure: true, key: s3cret } }"),
        "t.yaml",
    )
    .unwrap();
    let a = c.services[0].affinity.clone().expect("affinity");
    assert_eq!(
        (a.cookie.as_str(), a.mode, a.max_age),
        (
            "route",
            gatehouse_config::AffinityMode::Persistent,
            Some(7200)
        )
    );
    assert_eq!(
        (a.samesite, a.secure, a.change_on_failure),
        (Some(gatehouse_config::SameSite::Strict), Some(true), true)
    );
    assert_eq!(a.key.as_deref(), Some("s3cret"));
    let plain = parse(&service("{ endpoints: [], affinity: {} }"), "t.yaml").unwrap();
    assert_eq!(
        plain.services[0]
            .affinity
            .as_ref()
            .map(|a| a.cookie.as_str()),
        Some("INGRESSCOOKIE")
    );
    let c = parse(
        &service("{ kubernetes: { namespace: shop, name: web, port: \"8080\" } }"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        c.services[0].kubernetes.as_ref().unwrap().port,
        gatehouse_config::ServicePort::Number(8080)
    );
    let c = parse(
        &service("{ kubernetes: { namespace: shop, name: web, port: http } }"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        c.services[0].kubernetes.as_ref().unwrap().port,
        gatehouse_config::ServicePort::Name("http".into())
    );
    // An empty port is an error at its place, never a service quietly without endpoints.
    let empty = errors(&service(
        "{ kubernetes: { namespace: shop, name: web, port: \"\" } }",
    ));
    assert_eq!(empty.len(), 1, "{empty:?}");
    assert!(
        empty[0].starts_with("bad.yaml:2:") && empty[0].contains("port is empty"),
        "{empty:?}"
    );
}

#[test]
fn the_routing_table_counts_its_hosts() {
    let (_, t) = table("  - { host: a.example.com, paths: [{ path: /, service: a }] }\n  - { host: \"*.b.example.com\", paths: [{ path: /, service: b }] }");
    assert_eq!(t.len(), 2);
    assert!(!t.is_empty());
    let (_, t) = table("");
    assert_eq!(t.len(), 0);
    assert!(t.is_empty());
}

proptest::proptest! {
    /// Whatever a file holds, reading it ends in a configuration or in located errors.
    #[test]
    fn any_text_reads_without_panicking(text in "\\PC{0,200}") {
        if let Err(errors) = parse(&text, "any.yaml") {
            proptest::prop_assert!(!errors.0.is_empty());
        }
    }

    /// Text shaped like a configuration, with values drawn from what users mistype.
    #[test]
    fn config_shaped_text_reads_without_panicking(
        key in "(listen|timeouts|routes|services|l4|tls|allow|workers|shutdown)",
        value in "[a-z0-9:./*%\\[\\]{}, \"-]{0,40}",
    ) {
        let text = format!("{key}: {value}\nservices: {{ s: {{ endpoints: [\"{value}\"] }} }}\nroutes: [{{ host: \"{value}\", allow: \"{value}\", paths: [{{ path: \"{value}\", service: s }}] }}]\n");
        let _ = parse(&text, "shaped.yaml");
    }

    /// Host normalisation never panics on anything, and on a DNS name with or without a
    /// port and a trailing dot it is idempotent: routing and certificates agree.
    #[test]
    fn host_normalisation_is_idempotent(
        any in "\\PC{0,40}",
        host in "[A-Za-z0-9-]{1,10}(\\.[A-Za-z0-9-]{1,10}){0,3}\\.?(:[0-9]{1,5})?",
    ) {
        let _ = gatehouse_config::routing::normalize_host(&any);
        let once = gatehouse_config::routing::normalize_host(&host).into_owned();
        let twice = gatehouse_config::routing::normalize_host(&once).into_owned();
        proptest::prop_assert_eq!(&twice, &once);
        proptest::prop_assert!(!once.contains(':') && !once.ends_with('.'));
        proptest::prop_assert_eq!(once.to_ascii_lowercase(), once.clone());
    }
}

#[test]
fn rules_that_can_never_match_are_found_and_reachable_ones_are_not() {
    let yaml = r#"
listen: { http: "127.0.0.1:80" }
services: { s: { endpoints: ["10.0.0.1:80"] } }
routes:
  - host: a.test
    paths:
      - { path: /, service: s }
      - { path: "/api/(.*)", match: regex, service: s }
  - host: b.test
    paths: [{ path: "api/(.*)", match: regex, service: s }]
  - host: c.test
    paths:
      - { path: "/.*", match: regex, service: s }
      - { path: "/a", match: regex, service: s }
  - host: d.test
    paths:
      - { path: /web, service: s }
      - { path: "/api(/|$)(.*)", match: regex, service: s }
      - { path: "/web/v[0-9]+", match: regex, service: s }
      - { path: "/webhooks/.*", match: regex, service: s }
"#;
    let c = parse(yaml, "t.yaml").unwrap();
    let table = RoutingTable::compile(&c.routes).unwrap();
    let found: Vec<(String, String, String)> = table
        .unreachable(&c.routes)
        .into_iter()
        .map(|u| {
            let route = &c.routes[u.route];
            (
                route.host.to_string(),
                route.paths[u.rule].path.clone(),
                u.why,
            )
        })
        .collect();
    let paths: Vec<(&str, &str)> = found
        .iter()
        .map(|(h, p, _)| (h.as_str(), p.as_str()))
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("a.test", "/api/(.*)"),
            ("b.test", "api/(.*)"),
            ("c.test", "/a"),
            ("d.test", "/web/v[0-9]+")
        ],
        "{found:#?}"
    );
    let why = |host: &str| &found.iter().find(|(h, _, _)| h == host).unwrap().2;
    assert!(
        why("a.test").contains("the prefix `/` on this host"),
        "{found:#?}"
    );
    assert!(why("b.test").contains("never does"), "{found:#?}");
    assert!(
        why("c.test").contains("`/.*` of route `c.test` is tried first"),
        "{found:#?}"
    );
    assert!(why("d.test").contains("the prefix `/web`"), "{found:#?}");
}

#[test]
fn l4_services_balance_only_on_what_l4_knows() {
    let yaml = |service: &str| {
        format!("listen: {{ http: \"127.0.0.1:80\" }}\nservices: {{ db: {service} }}\nroutes: []\nl4: [{{ listen: \"127.0.0.1:5432\", service: db }}]\n")
    };
    let e = errors(&yaml("{ endpoints: [\"10.0.0.1:5432\"], affinity: {} }")).join("\n");
    assert!(
        e.contains("used by l4 listener tcp/127.0.0.1:5432")
            && e.contains("affinity keeps sessions by an HTTP cookie"),
        "{e}"
    );
    let e = errors(&yaml(
        "{ endpoints: [\"10.0.0.1:5432\"], balance: hash, hash_key: \"$http_x_user\" }",
    ))
    .join("\n");
    assert!(e.contains("only `$remote_addr` is known there"), "{e}");
    parse(
        &yaml("{ endpoints: [\"10.0.0.1:5432\"], balance: \"hash(client_ip)\" }"),
        "t.yaml",
    )
    .expect("the client address is known to L4");
}

#[test]
fn hsts_defaults_to_spec_and_says_what_it_is_told() {
    let base = "listen: { http: \"127.0.0.1:80\" }\nservices: {}\nroutes: []\n";
    let c = parse(base, "t.yaml").unwrap();
    assert_eq!(c.hsts.header_value(), "max-age=31536000");
    let c = parse(
        &format!("{base}hsts: {{ max_age: 1h, include_subdomains: true }}\n"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(c.hsts.header_value(), "max-age=3600; includeSubDomains");
    let e = errors(&format!("{base}hsts: {{ preload: yes }}\n")).join("\n");
    assert!(e.contains("hsts.preload must be `true` or `false`"), "{e}");
}

#[test]
fn tls_versions_and_forwarded_headers_are_read_and_bad_values_named() {
    let base = "listen: { http: \"127.0.0.1:80\" }\nservices: {}\nroutes: []\n";
    let c = parse(base, "t.yaml").unwrap();
    assert_eq!(c.tls_versions, gatehouse_config::TlsVersions::Tls12And13);
    assert!(c.forwarded.full_chain);
    assert_eq!(c.forwarded.client_header, "x-forwarded-for");
    let c = parse(
        &format!("{base}tls_versions: \"1.3\"\nforwarded: {{ client_header: CF-Connecting-IP, full_chain: false }}\n"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(c.tls_versions, gatehouse_config::TlsVersions::Tls13Only);
    assert_eq!(c.forwarded.client_header, "cf-connecting-ip");
    assert!(!c.forwarded.full_chain);
    let e = errors(&format!("{base}tls_versions: \"1.1 1.2\"\n")).join("\n");
    assert!(e.contains("tls_versions: `1.1` is not offered"), "{e}");
    let e = errors(&format!(
        "{base}forwarded: {{ client_header: \"bad header\" }}\n"
    ))
    .join("\n");
    assert!(e.contains("`bad header` is not a header name"), "{e}");
}
