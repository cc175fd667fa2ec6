//! Kubernetes objects for unit tests, written the way the API server sends them.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use super::ingress::{ClassSelection, CONTROLLER, DEFAULT_CLASS};

pub(crate) fn ingress(
    ns: &str,
    name: &str,
    created: &str,
    annotations: serde_json::Value,
    spec: serde_json::Value,
) -> Ingress {
    serde_json::from_value(serde_json::json!({
        "metadata": { "namespace": ns, "name": name, "creationTimestamp": created, "annotations": annotations },
        "spec": spec,
    }))
    .expect("a valid Ingress")
}

pub(crate) fn rule(host: &str, paths: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "host": host, "http": { "paths": paths } })
}

pub(crate) fn path(
    p: &str,
    kind: &str,
    service: &str,
    port: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({ "path": p, "pathType": kind, "backend": { "service": { "name": service, "port": port } } })
}

pub(crate) fn ours() -> ClassSelection {
    let class: IngressClass = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "gatehouse", "annotations": { DEFAULT_CLASS: "true" } },
        "spec": { "controller": CONTROLLER },
    }))
    .unwrap();
    let other: IngressClass = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "nginx" }, "spec": { "controller": "k8s.io/ingress-nginx" },
    }))
    .unwrap();
    ClassSelection::from_classes([&class, &other], None)
}
