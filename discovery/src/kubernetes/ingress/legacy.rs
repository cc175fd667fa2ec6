//! Ingresses in the forms before networking.k8s.io/v1 (extensions/v1beta1 and
//! networking.k8s.io/v1beta1, removed in Kubernetes 1.22 but still in many repositories),
//! converted to v1 as the API server converted them: `spec.backend` is `defaultBackend`,
//! `serviceName`/`servicePort` are `service.name`/`service.port.number` (or `.name`),
//! and a path without `pathType` is `ImplementationSpecific`.

use serde_json::{json, Map, Value};

const V1: &str = "networking.k8s.io/v1";
const LEGACY: [&str; 2] = ["extensions/v1beta1", "networking.k8s.io/v1beta1"];

/// An Ingress object (JSON) in the v1 form; v1 objects come back as they are.
pub fn to_v1(mut ingress: Value) -> Result<Value, String> {
    let version = ingress["apiVersion"].as_str().unwrap_or("").to_owned();
    if version == V1 {
        return Ok(ingress);
    }
    if !LEGACY.contains(&version.as_str()) {
        return Err(format!(
            "apiVersion `{version}` is not an Ingress version Gatehouse reads ({V1}, {})",
            LEGACY.join(", ")
        ));
    }
    ingress["apiVersion"] = V1.into();
    let Some(spec) = ingress.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(ingress);
    };
    if let Some(backend) = spec.remove("backend") {
        spec.insert("defaultBackend".to_owned(), backend_v1(backend)?);
    }
    for rule in spec
        .get_mut("rules")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for path in rule["http"]["paths"].as_array_mut().into_iter().flatten() {
            let Some(path) = path.as_object_mut() else {
                continue;
            };
            if let Some(backend) = path.remove("backend") {
                path.insert("backend".to_owned(), backend_v1(backend)?);
            }
            path.entry("pathType")
                .or_insert_with(|| "ImplementationSpecific".into());
        }
    }
    Ok(ingress)
}

/// `{serviceName, servicePort}` as `{service: {name, port: {number | name}}}`; a
/// `resource` backend is the same in both forms.
fn backend_v1(backend: Value) -> Result<Value, String> {
    let Value::Object(mut fields) = backend else {
        return Err("a backend is not an object".to_owned());
    };
    let Some(name) = fields.remove("serviceName") else {
        return Ok(Value::Object(fields));
    };
    let port = match fields.remove("servicePort") {
        Some(Value::Number(n)) => json!({ "number": n }),
        // An IntOrString: digits are a number.
        Some(Value::String(s)) => match s.parse::<i32>() {
            Ok(n) => json!({ "number": n }),
            Err(_) => json!({ "name": s }),
        },
        _ => return Err(format!("backend {name} has no servicePort")),
    };
    let mut v1 = Map::new();
    v1.insert("service".to_owned(), json!({ "name": name, "port": port }));
    Ok(Value::Object(v1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1beta1_ingress_reads_as_the_api_server_converts_it() {
        let old = json!({
            "apiVersion": "extensions/v1beta1",
            "kind": "Ingress",
            "metadata": { "name": "web", "namespace": "shop" },
            "spec": {
                "backend": { "serviceName": "fallback", "servicePort": 80 },
                "rules": [{ "host": "shop.example.com", "http": { "paths": [
                    { "path": "/", "backend": { "serviceName": "web", "servicePort": "http" } },
                    { "path": "/api", "pathType": "Prefix", "backend": { "serviceName": "api", "servicePort": "8080" } }
                ] } }]
            }
        });
        let new = to_v1(old).unwrap();
        assert_eq!(new["apiVersion"], V1);
        assert_eq!(
            new["spec"]["defaultBackend"],
            json!({ "service": { "name": "fallback", "port": { "number": 80 } } })
        );
        let paths = &new["spec"]["rules"][0]["http"]["paths"];
        assert_eq!(paths[0]["pathType"], "ImplementationSpecific");
        assert_eq!(
            paths[0]["backend"],
            json!({ "service": { "name": "web", "port": { "name": "http" } } })
        );
        assert_eq!(paths[1]["pathType"], "Prefix");
        assert_eq!(
            paths[1]["backend"]["service"]["port"],
            json!({ "number": 8080 })
        );
        let parsed: k8s_openapi::api::networking::v1::Ingress =
            serde_json::from_value(new).expect("a v1 Ingress");
        assert!(parsed.spec.unwrap().default_backend.is_some());
    }

    #[test]
    fn other_versions_are_refused_and_v1_is_kept() {
        let v1 = json!({ "apiVersion": V1, "kind": "Ingress", "spec": { "backend": 1 } });
        assert_eq!(to_v1(v1.clone()).unwrap(), v1);
        assert!(to_v1(json!({ "apiVersion": "v2", "kind": "Ingress" }))
            .unwrap_err()
            .contains("v2"));
    }
}
