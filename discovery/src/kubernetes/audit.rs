//! `gatehouse audit`'s reading and judging: Ingresses from `kubectl get ingress -o json`
//! output, YAML documents or a live cluster, judged by the translation `run` uses.

use k8s_openapi::api::networking::v1::Ingress;
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::{Map, Value};

use std::collections::{BTreeMap, BTreeSet};

use super::{
    controller_config::{self, Applied},
    ingress::{legacy, translate, ClassSelection, Translation, Verdict, VerdictKind},
};

/// Without `--enable-ssl-passthrough`, why an Ingress asking for passthrough is refused
/// (the run glue refuses its routes with the same words).
pub const PASSTHROUGH_NEEDS_FLAG: &str =
    "ssl-passthrough needs --enable-ssl-passthrough; its paths answer 503 until it is set";

/// What an audit input held: its Ingresses, and what was skipped or unreadable in it.
#[derive(Debug, Default)]
pub struct Input {
    pub ingresses: Vec<Ingress>,
    /// One line per object that is not an Ingress or could not be read as one.
    pub skipped: Vec<String>,
}

/// Reads a JSON document (one object, a `List` or an array) or YAML documents.
pub fn read(text: &str) -> Result<Input, String> {
    let documents = documents(text)?;
    let mut input = Input::default();
    for object in documents.into_iter().flat_map(items) {
        let kind = object["kind"].as_str().unwrap_or("").to_owned();
        let name = format!(
            "{}/{}",
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default"),
            object["metadata"]["name"].as_str().unwrap_or("?")
        );
        if kind != "Ingress" {
            if !object.is_null() {
                input.skipped.push(format!("{kind} {name}: not an Ingress"));
            }
            continue;
        }
        match legacy::to_v1(object).and_then(|v| {
            serde_json::from_value::<Ingress>(v).map_err(|e| format!("not an Ingress: {e}"))
        }) {
            Ok(mut ingress) => {
                // As the API server defaults it.
                ingress
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".to_owned());
                input.ingresses.push(ingress)
            }
            Err(why) => input.skipped.push(format!("Ingress {name}: {why}")),
        }
    }
    Ok(input)
}

/// A JSON document, or YAML documents, as JSON values.
fn documents(text: &str) -> Result<Vec<Value>, String> {
    Ok(match text.trim_start().chars().next() {
        Some('{') | Some('[') => vec![serde_json::from_str::<Value>(text)
            .map_err(|e| format!("not JSON: {e} (line {}, column {})", e.line(), e.column()))?],
        _ => Yaml::load_from_str(text)
            .map_err(|e| format!("not YAML: {e}"))?
            .iter()
            .map(to_json)
            .collect(),
    })
}

/// The controller ConfigMap's data (`kubectl get configmap -o yaml` or JSON), and its
/// `namespace/name`.
pub fn read_config_map(text: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let object = documents(text)?
        .into_iter()
        .flat_map(items)
        .find(|o| o["kind"] == "ConfigMap")
        .ok_or("no ConfigMap in it")?;
    let name = format!(
        "{}/{}",
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    );
    let data = object["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect();
    Ok((name, data))
}

/// What the controller ConfigMap means for an audit: its keys Gatehouse does not apply
/// (returned), and what it changes in the verdicts ([`judge_applied`]).
pub fn judge_config_map(
    name: &str,
    data: &BTreeMap<String, String>,
    translation: &Translation,
    verdicts: &mut [Verdict],
) -> Vec<String> {
    // Only what the keys say matters here, not what they change.
    let Ok(mut scratch) = gatehouse_config::parse("listen: { http: \"127.0.0.1:0\" }\n", "audit")
    else {
        return Vec::new();
    };
    let applied = controller_config::apply(data, &mut scratch, name);
    judge_applied(&applied, translation, verdicts);
    applied.problems
}

/// Where block-cidrs holds and ingress-nginx would drop it: an Ingress with its own allow or
/// deny list replaces the http-level `deny` in nginx.
pub const BLOCK_HOLDS: &str = "the ConfigMap's block-cidrs refuses its clients here too; ingress-nginx drops it where an Ingress has its own allow or deny list (Gatehouse keeps it: a blocked address stays blocked)";

/// What an applied controller ConfigMap changes in the verdicts, as `run` serves it: a key
/// that makes every Ingress path fail closed refuses them all; block-cidrs over an Ingress
/// with its own allow or deny list is a difference.
pub fn judge_applied(applied: &Applied, translation: &Translation, verdicts: &mut [Verdict]) {
    if let Some(why) = &applied.fail_closed {
        for v in verdicts.iter_mut() {
            v.kind = VerdictKind::Refused;
            v.notes.insert(0, why.clone());
        }
        return;
    }
    if applied.defaults.block.is_empty() {
        return;
    }
    let own_lists: BTreeSet<&str> = translation
        .paths
        .iter()
        .filter(|p| !p.policy.allow.is_empty() || !p.policy.deny.is_empty())
        .map(|p| p.source.as_str())
        .collect();
    for v in verdicts.iter_mut() {
        if own_lists.contains(format!("{}/{}", v.namespace, v.name).as_str()) {
            v.notes.push(BLOCK_HOLDS.to_owned());
            if v.kind == VerdictKind::Ok {
                v.kind = VerdictKind::Differs;
            }
        }
    }
}

/// The objects of a document: a List's (or an array's) items, or the object itself.
fn items(document: Value) -> Vec<Value> {
    match document {
        Value::Array(all) => all.into_iter().flat_map(items).collect(),
        Value::Object(mut o)
            if o.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List")) =>
        {
            match o.remove("items") {
                Some(Value::Array(all)) => all,
                _ => Vec::new(),
            }
        }
        other => vec![other],
    }
}

/// A YAML node as JSON (what the API server would have read).
fn to_json(node: &Yaml<'_>) -> Value {
    match node {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        Yaml::Value(Scalar::Integer(i)) => Value::from(*i),
        Yaml::Value(Scalar::FloatingPoint(f)) => Value::from(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => Value::String(s.to_string()),
        Yaml::Sequence(all) => Value::Array(all.iter().map(to_json).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect::<Map<String, Value>>(),
        ),
        Yaml::Tagged(_, inner) => to_json(inner),
        Yaml::Representation(text, _, _) => Value::String(text.to_string()),
        _ => Value::Null,
    }
}

/// Judges `ingresses`: those of `class` (`None`: all of them), with passthrough allowed or
/// not, as `run --kubernetes` with the same flags would serve them.
pub fn judge(ingresses: &[Ingress], class: Option<&str>, ssl_passthrough: bool) -> Vec<Verdict> {
    verdicts(&translation(ingresses, class), ssl_passthrough)
}

/// The translation `run` would make of `ingresses`, those of `class` (`None`: all).
pub fn translation(ingresses: &[Ingress], class: Option<&str>) -> Translation {
    let selection = match class {
        Some(c) => ClassSelection::from_classes([], Some(c)),
        None => ClassSelection {
            names: ingresses.iter().filter_map(class_of).collect(),
            default: true,
        },
    };
    translate(ingresses, &selection)
}

/// The verdicts of a translation as `run` serves it: an Ingress asking for passthrough is
/// refused without `--enable-ssl-passthrough`.
pub fn verdicts(translation: &Translation, ssl_passthrough: bool) -> Vec<Verdict> {
    let mut verdicts = translation.verdicts.clone();
    if !ssl_passthrough {
        for path in translation.paths.iter().filter(|p| p.policy.passthrough) {
            let Some(v) = verdicts
                .iter_mut()
                .find(|v| path.source == format!("{}/{}", v.namespace, v.name))
            else {
                continue;
            };
            if v.kind != VerdictKind::Refused {
                v.kind = VerdictKind::Refused;
                v.notes.insert(0, PASSTHROUGH_NEEDS_FLAG.to_owned());
            }
        }
    }
    verdicts
}

fn class_of(ingress: &Ingress) -> Option<String> {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()?
                .get("kubernetes.io/ingress.class")
                .cloned()
        })
}

/// The Ingresses of a live cluster, all namespaces.
pub async fn live(client: kube::Client) -> Result<Vec<Ingress>, kube::Error> {
    let api: kube::Api<Ingress> = kube::Api::all(client);
    let mut all = Vec::new();
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        all.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(all),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
apiVersion: networking.k8s.io/v1beta1
kind: Ingress
metadata:
  name: old
  namespace: shop
  annotations:
    kubernetes.io/ingress.class: nginx
spec:
  rules:
  - host: old.example.com
    http:
      paths:
      - path: /
        backend: { serviceName: web, servicePort: 80 }
---
apiVersion: v1
kind: Service
metadata: { name: web }
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: snippet
  annotations:
    nginx.ingress.kubernetes.io/server-snippet: "location /x { deny all; }"
    nginx.ingress.kubernetes.io/ssl-passthrough: "true"
spec:
  ingressClassName: nginx
  rules:
  - host: s.example.com
    http:
      paths:
      - { path: /, pathType: Prefix, backend: { service: { name: web, port: { number: 80 } } } }
"#;

    #[test]
    fn yaml_documents_of_any_version_are_read_and_judged() {
        let input = read(YAML).unwrap();
        assert_eq!(input.ingresses.len(), 2);
        assert_eq!(input.skipped, ["Service default/web: not an Ingress"]);
        let verdicts = judge(&input.ingresses, Some("nginx"), false);
        let kinds: Vec<_> = verdicts
            .iter()
            .map(|v| (v.namespace.as_str(), v.name.as_str(), v.kind))
            .collect();
        assert!(
            kinds.contains(&("shop", "old", VerdictKind::Ok)),
            "{verdicts:?}"
        );
        assert!(
            kinds.contains(&("default", "snippet", VerdictKind::Refused)),
            "{verdicts:?}"
        );
    }

    #[test]
    fn a_config_map_reports_its_keys_and_an_unreadable_access_key_refuses_every_ingress() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: controller, namespace: ingress-nginx }\ndata:\n  hsts-max-age: \"600\"\n  enable-brotli: \"true\"\n";
        let (name, data) = read_config_map(text).unwrap();
        assert_eq!(name, "ingress-nginx/controller");
        let input = read(YAML).unwrap();
        let t = translation(&input.ingresses, Some("nginx"));
        let mut verdicts = super::verdicts(&t, true);
        let problems = judge_config_map(&name, &data, &t, &mut verdicts);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("enable-brotli"));
        let ok = verdicts
            .iter()
            .filter(|v| v.kind == VerdictKind::Ok)
            .count();
        let mut data = data;
        data.insert("block-cidrs".into(), "192.0.2.0/24".into());
        judge_config_map(&name, &data, &t, &mut verdicts);
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| v.kind == VerdictKind::Ok)
                .count(),
            ok,
            "a readable block list is applied, not refused"
        );
        data.insert("block-cidrs".into(), "192.0.2.0/33".into());
        judge_config_map(&name, &data, &t, &mut verdicts);
        assert!(ok > 0 && verdicts.iter().all(|v| v.kind == VerdictKind::Refused));
        assert!(verdicts[0].notes[0].contains("block-cidrs"));
    }

    #[test]
    fn block_cidrs_over_an_ingress_with_its_own_list_is_a_difference() {
        let text = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: listed
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8
spec:
  ingressClassName: nginx
  rules:
  - host: l.example.com
    http:
      paths:
      - { path: /, pathType: Prefix, backend: { service: { name: web, port: { number: 80 } } } }
"#;
        let input = read(&format!("{YAML}---{text}")).unwrap();
        let t = translation(&input.ingresses, Some("nginx"));
        let mut verdicts = super::verdicts(&t, true);
        let data = BTreeMap::from([("block-cidrs".to_owned(), "192.0.2.0/24".to_owned())]);
        assert!(judge_config_map("ns/c", &data, &t, &mut verdicts).is_empty());
        let of = |name: &str| verdicts.iter().find(|v| v.name == name).unwrap().clone();
        assert_eq!(of("listed").kind, VerdictKind::Differs);
        assert_eq!(of("listed").notes, [BLOCK_HOLDS]);
        assert_eq!(
            of("old").kind,
            VerdictKind::Ok,
            "no list of its own: as ingress-nginx"
        );
    }

    #[test]
    fn a_kubectl_list_is_read_and_other_classes_are_left_out_when_one_is_named() {
        let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": [
            { "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
              "metadata": { "name": "a", "namespace": "x" },
              "spec": { "ingressClassName": "nginx" } },
            { "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
              "metadata": { "name": "b", "namespace": "x" },
              "spec": { "ingressClassName": "traefik" } }
        ]});
        let input = read(&list.to_string()).unwrap();
        assert_eq!(input.ingresses.len(), 2);
        assert_eq!(judge(&input.ingresses, Some("nginx"), false).len(), 1);
        assert_eq!(judge(&input.ingresses, None, false).len(), 2);
        assert!(read("{ not json").unwrap_err().contains("line 1"));
    }
}
