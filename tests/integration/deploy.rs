//! The manifests in deploy/ against the real thing: the RBAC rules grant exactly the
//! requests the binary's watchers make, the configuration files they ship are valid for
//! `run --kubernetes`, and the pod outlives Gatehouse's own shutdown.

use std::{collections::BTreeSet, path::Path, time::Duration};

use crate::support::{binary::*, eventually, kube_api::*};
use saphyr::{LoadableYamlNode, Yaml};
use serde_json::json;

fn docs(path: &str) -> Vec<Yaml<'static>> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    // Leaked so the parsed documents may borrow it for the test's lifetime.
    Yaml::load_from_str(Box::leak(text.into_boxed_str())).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strs<'a>(node: &'a Yaml<'_>) -> Vec<&'a str> {
    node.as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_exactly_what_the_watchers_request() {
    // The binary as the DaemonSet runs it: every watch, both L4 ConfigMaps.
    let api = KubeApi::start().await;
    api.apply(
        INGRESS_CLASSES,
        json!({ "metadata": { "name": "gatehouse" }, "spec": { "controller": "gatehouse.io/ingress" } }),
    );
    api.apply(
        INGRESSES,
        json!({ "metadata": { "namespace": "shop", "name": "web" }, "spec": { "ingressClassName": "gatehouse" } }),
    );
    api.apply(
        PODS,
        json!({ "metadata": { "namespace": "gatehouse", "name": "gatehouse-x1", "labels": { "app.kubernetes.io/name": "gatehouse" } }, "spec": { "nodeName": "edge-1" }, "status": { "phase": "Running" } }),
    );
    api.apply(
        NODES,
        json!({ "metadata": { "name": "edge-1" }, "status": { "addresses": [{ "type": "ExternalIP", "address": "203.0.113.1" }] } }),
    );
    // A refused one, for its Event.
    api.apply(
        INGRESSES,
        json!({ "metadata": { "namespace": "shop", "name": "typo", "annotations": { "nginx.ingress.kubernetes.io/whitelist-soruce-range": "10.0.0.0/8" } }, "spec": { "ingressClassName": "gatehouse" } }),
    );
    let dir = std::env::temp_dir().join(format!("gatehouse-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gatehouse.yaml");
    std::fs::write(
        &config,
        "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\naccess_log: off\nshutdown: { drain_delay: 0s }\n",
    )
    .unwrap();
    let kubeconfig = api.kubeconfig(&dir);
    let running = run_with_env(
        &config,
        &[
            "--kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--tcp-services-configmap=gatehouse/tcp-services",
            "--udp-services-configmap=gatehouse/udp-services",
            "--election-ttl=1s",
        ],
        // As the DaemonSet's downward API sets them: status shows our pods' nodes.
        &[("POD_NAME", "gatehouse-x1"), ("POD_NAMESPACE", "gatehouse")],
        std::process::Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    // Leading (a Lease created, then renewed) and writing an Ingress's status.
    eventually(
        "the Lease renewed and a status written",
        Duration::from_secs(20),
        || api.count("update", "leases") >= 1 && api.count("patch", "ingresses/status") >= 1,
    )
    .await;
    // Every request the binary made, with its method: a get, a write or an Event would show.
    assert_eq!(running.terminate().await, Some(0));
    let requested: BTreeSet<(&str, String, String)> = api
        .seen()
        .into_iter()
        .map(|s| (s.group, s.resource, s.verb.to_owned()))
        .collect();

    // What deploy/base/rbac.yaml grants: (group, resource, verb), and where.
    let mut cluster_wide = BTreeSet::new();
    let mut in_namespace = BTreeSet::new();
    let rbac = docs("deploy/base/rbac.yaml");
    for doc in &rbac {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let target = match kind {
            "ClusterRole" => &mut cluster_wide,
            "Role" => {
                assert_eq!(doc["metadata"]["namespace"].as_str(), Some("gatehouse"));
                &mut in_namespace
            }
            _ => continue,
        };
        for rule in doc["rules"].as_vec().expect("rules") {
            for group in strs(&rule["apiGroups"]) {
                for resource in strs(&rule["resources"]) {
                    for verb in strs(&rule["verbs"]) {
                        target.insert((group, resource.to_owned(), verb.to_owned()));
                    }
                }
            }
        }
    }
    let granted: BTreeSet<_> = cluster_wide.union(&in_namespace).cloned().collect();
    assert_eq!(
        granted, requested,
        "RBAC must grant what the watchers request, nothing more"
    );
    let own = |r: &str| ["configmaps", "leases", "pods"].contains(&r);
    assert!(
        in_namespace.iter().all(|(_, r, _)| own(r)) && cluster_wide.iter().all(|(_, r, _)| !own(r)),
        "ConfigMaps, the Lease and pods only in Gatehouse's own namespace"
    );
    // Every Lease request went to that namespace.
    assert!(api
        .seen()
        .iter()
        .filter(|s| s.resource == "leases" || s.resource == "pods")
        .all(|s| s.namespace.as_deref() == Some("gatehouse")));
    // The DaemonSet names ConfigMaps in that namespace.
    let daemonset = &docs("deploy/base/daemonset.yaml")[0];
    let args = strs(&daemonset["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(
        args.contains(&"--tcp-services-configmap=gatehouse/tcp-services"),
        "{args:?}"
    );
}

#[tokio::test]
async fn shipped_configurations_are_valid_and_the_pod_outlives_the_drain() {
    let grace_pod = docs("deploy/base/daemonset.yaml")[0]["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_integer()
        .expect("terminationGracePeriodSeconds") as u64;
    for file in [
        "deploy/base/configmap.yaml",
        "deploy/overlays/hostnetwork/config.yaml",
    ] {
        let text = docs(file)
            .iter()
            .find_map(|d| d["data"]["gatehouse.yaml"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{file} has gatehouse.yaml"));
        let path = std::env::temp_dir().join(format!(
            "gatehouse-shipped-{}-{}.yaml",
            std::process::id(),
            file.replace('/', "-")
        ));
        std::fs::write(&path, &text).unwrap();
        let out = run_to_end(&["check", "--kubernetes"], &path).await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = gatehouse_config::parse(&text, file).unwrap();
        let needed = config.shutdown.drain_delay + config.shutdown.grace_period;
        assert!(
            Duration::from_secs(grace_pod) > needed,
            "{file}: terminationGracePeriodSeconds {grace_pod} must exceed drain_delay + grace_period ({needed:?})"
        );
    }
}

#[test]
fn the_dashboard_only_charts_metrics_gatehouse_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/gatehouse-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let registered = std::fs::read_to_string(root.join("proxy/src/metrics.rs")).unwrap();
    let names = regex::Regex::new(r"gatehouse_([a-z0-9_]+)").unwrap();
    let mut charted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for m in names.captures_iter(expr) {
                // Histograms are exported as _bucket/_sum/_count of the registered name.
                let name = m[1].trim_end_matches("_bucket").to_owned();
                assert!(
                    registered.contains(&format!("\"{name}\"")),
                    "panel {} charts gatehouse_{name}, which Gatehouse does not export",
                    panel["title"]
                );
                charted.insert(name);
            }
        }
    }
    // Every SPEC §5 metric has a panel.
    for name in [
        "http_requests_total",
        "http_request_duration_seconds",
        "upstream_connect_errors_total",
        "endpoints",
        "tls_handshakes_total",
        "denied_total",
        "l4_connections_total",
        "l4_bytes_total",
        "config_reloads_total",
        "kubernetes_events_total",
    ] {
        assert!(charted.contains(name), "no panel for gatehouse_{name}");
    }
}

/// The objects an overlay renders to (`kubectl kustomize`, as `kubectl apply -k` sees them).
fn rendered(overlay: &str) -> Vec<Yaml<'static>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(overlay);
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl kustomize {overlay}: {e} (.ci/run installs kubectl)"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Yaml::load_from_str(Box::leak(text.into_boxed_str())).unwrap()
}

fn of_kind<'a>(objects: &'a [Yaml<'static>], kind: &str) -> Vec<&'a Yaml<'static>> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some(kind))
        .collect()
}

/// The Deployment overlay: a Deployment (no DaemonSet) with the base's pod, behind a
/// LoadBalancer Service whose address goes into Ingress status, in a namespace enforcing
/// the restricted Pod Security level, which its pod meets.
#[test]
fn the_loadbalancer_overlay_runs_the_base_pod_as_a_restricted_deployment() {
    let objects = rendered("deploy/overlays/loadbalancer");
    assert!(of_kind(&objects, "DaemonSet").is_empty());
    let deployment = of_kind(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let base = &docs("deploy/base/daemonset.yaml")[0]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        strs(&container["args"]),
        strs(&base["containers"][0]["args"]),
        "the base's pod, copied"
    );
    assert_eq!(pod["priorityClassName"].as_str(), Some("gatehouse-edge"));
    let env: Vec<(&str, &str)> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e.as_mapping_get("value")?.as_str()?)))
        .collect();
    assert!(
        env.contains(&("GATEHOUSE_PUBLISH_SERVICE", "gatehouse/gatehouse")),
        "{env:?}"
    );
    let service = of_kind(&objects, "Service")[0];
    assert_eq!(service["spec"]["type"].as_str(), Some("LoadBalancer"));
    assert_eq!(service["metadata"]["name"].as_str(), Some("gatehouse"));
    let namespace = of_kind(&objects, "Namespace")[0];
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str(),
        Some("restricted")
    );
    // What the restricted level checks.
    assert!(!pod.contains_mapping_key("hostNetwork") && !pod.contains_mapping_key("hostPID"));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strs(&security["capabilities"]["drop"]), ["ALL"]);
    assert!(strs(&security["capabilities"]["add"])
        .iter()
        .all(|c| *c == "NET_BIND_SERVICE"));
    for port in container["ports"].as_vec().unwrap() {
        assert!(
            !port.contains_mapping_key("hostPort"),
            "no host ports: {port:?}"
        );
    }
    for volume in pod["volumes"].as_vec().unwrap() {
        assert!(!volume.contains_mapping_key("hostPath"), "no host paths");
    }
}

/// In the host network the admin listener (status page, metrics) takes the pod's address,
/// not every address of the node.
#[test]
fn the_hostnetwork_overlay_keeps_the_admin_listener_off_the_nodes_other_addresses() {
    let objects = rendered("deploy/overlays/hostnetwork");
    let daemonset = of_kind(&objects, "DaemonSet")[0];
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    let env: Vec<(&str, Option<&str>)> = pod["containers"][0]["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e.as_mapping_get("value").and_then(Yaml::as_str),
            ))
        })
        .collect();
    let at = |name: &str| env.iter().position(|(n, _)| *n == name);
    assert_eq!(
        env[at("GATEHOUSE_ADMIN_LISTEN").expect("set")].1,
        Some("$(POD_IP):9901")
    );
    assert!(
        at("POD_IP") < at("GATEHOUSE_ADMIN_LISTEN"),
        "defined before it is used"
    );
    let config = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find_map(|c| c["data"]["gatehouse.yaml"].as_str())
        .unwrap();
    let config = gatehouse_config::parse(config, "hostnetwork").unwrap();
    assert!(
        config.listen.admin.is_some_and(|a| a.ip().is_loopback()),
        "without the variable: loopback, never 0.0.0.0"
    );
}

/// The Prometheus Operator's alerts: the ones an edge team is paged for, over metrics
/// Gatehouse exports.
#[test]
fn the_alerts_cover_errors_refusals_expiry_and_reloads_with_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rule = &docs("deploy/monitoring/prometheusrule.yaml")[0];
    let registered = std::fs::read_to_string(root.join("proxy/src/metrics.rs")).unwrap();
    let names = regex::Regex::new(r"gatehouse_([a-z0-9_]+)").unwrap();
    let mut alerts = Vec::new();
    for rule in rule["spec"]["groups"][0]["rules"].as_vec().unwrap() {
        let expr = rule["expr"].as_str().expect("expr");
        for m in names.captures_iter(expr) {
            assert!(
                registered.contains(&format!("\"{}\"", &m[1])),
                "alert {:?} uses gatehouse_{}, which Gatehouse does not export",
                rule["alert"],
                &m[1]
            );
        }
        alerts.push((rule["alert"].as_str().unwrap().to_owned(), expr.to_owned()));
    }
    for (what, metric) in [
        (
            "5xx ratio",
            "gatehouse_service_requests_total{code_class=\"5xx\"}",
        ),
        (
            "refused Ingresses",
            "gatehouse_ingresses{verdict=\"refused\"}",
        ),
        ("certificates within 14 days", "14 * 86400"),
        (
            "failed reloads",
            "gatehouse_config_reloads_total{result=\"error\"}",
        ),
    ] {
        assert!(
            alerts.iter().any(|(_, e)| e.contains(metric)),
            "no alert on {what}: {alerts:?}"
        );
    }
    let podmonitor = &docs("deploy/monitoring/podmonitor.yaml")[0];
    assert_eq!(
        podmonitor["spec"]["podMetricsEndpoints"][0]["port"].as_str(),
        Some("admin"),
        "the port the pod names admin"
    );
}

/// The admin port answers only chosen namespaces; every other port, TCP/UDP services
/// ports included whatever they become, stays open to all.
#[test]
fn the_network_policy_closes_only_the_admin_port() {
    let objects = rendered("deploy/overlays/hostport");
    let policy = of_kind(&objects, "NetworkPolicy")[0];
    let selector = &policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"];
    assert_eq!(selector.as_str(), Some("gatehouse"));
    let rules = policy["spec"]["ingress"].as_vec().unwrap();
    // (protocol, port) → open to all, or only to some sources.
    let reach = |protocol: &str, port: i64| -> Option<bool> {
        rules.iter().find_map(|rule| {
            let covers = rule["ports"].as_vec()?.iter().any(|p| {
                let from = p["port"].as_integer().unwrap_or(0);
                let to = p
                    .as_mapping_get("endPort")
                    .and_then(Yaml::as_integer)
                    .unwrap_or(from);
                p["protocol"].as_str() == Some(protocol) && (from..=to).contains(&port)
            });
            covers.then(|| !rule.contains_mapping_key("from"))
        })
    };
    for port in [80, 443, 8080, 8443, 5432, 9900, 9902, 65535] {
        assert_eq!(reach("TCP", port), Some(true), "TCP {port} open to all");
    }
    assert_eq!(reach("UDP", 53), Some(true));
    assert_eq!(reach("UDP", 9901), Some(true));
    assert_eq!(
        reach("TCP", 9901),
        Some(false),
        "the admin port, from chosen namespaces only"
    );
}
