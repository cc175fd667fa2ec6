use super::*;

fn slice(ns: &str, name: &str, service: &str, json: serde_json::Value) -> EndpointSlice {
    let mut v = json;
    v["metadata"] = serde_json::json!({
        "namespace": ns, "name": name,
        "labels": { SERVICE_NAME_LABEL: service },
    });
    if v.get("addressType").is_none() {
        v["addressType"] = "IPv4".into();
    }
    serde_json::from_value(v).expect("a valid EndpointSlice")
}

fn endpoint(
    ip: &str,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> serde_json::Value {
    let mut conditions = serde_json::Map::new();
    for (k, v) in [
        ("ready", ready),
        ("serving", serving),
        ("terminating", terminating),
    ] {
        if let Some(v) = v {
            conditions.insert(k.into(), v.into());
        }
    }
    serde_json::json!({ "addresses": [ip], "conditions": conditions })
}

fn web() -> ServiceKey {
    ServiceKey {
        namespace: "default".into(),
        name: "web".into(),
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn only_ready_endpoints_serve_and_terminating_ones_are_the_fallback() {
    let mut store = SliceStore::default();
    let changed = store.apply(Event::Apply(slice(
        "default",
        "web-a",
        "web",
        serde_json::json!({
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": [
                endpoint("10.0.0.1", None, None, None),
                endpoint("10.0.0.2", Some(true), Some(true), Some(false)),
                endpoint("10.0.0.3", Some(false), Some(false), Some(false)),
                endpoint("10.0.0.4", Some(false), Some(true), Some(true)),
            ],
        }),
    )));
    assert_eq!(changed, BTreeSet::from([web()]));
    let set = store.endpoints(&web(), &PortRef::Name("http".into()), None);
    assert_eq!(set.ready, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
    assert_eq!(set.terminating, addrs(&["10.0.0.4:8080"]));
    assert_eq!(
        set.serving(),
        &addrs(&["10.0.0.1:8080", "10.0.0.2:8080"])[..]
    );

    // Rolling update's end: only terminating pods left, so they keep draining traffic.
    store.apply(Event::Apply(slice(
        "default",
        "web-a",
        "web",
        serde_json::json!({
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": [endpoint("10.0.0.4", Some(false), Some(true), Some(true))],
        }),
    )));
    let set = store.endpoints(&web(), &PortRef::Name("http".into()), None);
    assert!(set.ready.is_empty());
    assert_eq!(set.serving(), &addrs(&["10.0.0.4:8080"])[..]);
}

#[test]
fn slices_of_a_service_merge_and_ports_resolve_by_name_or_number() {
    let mut store = SliceStore::default();
    // 250 endpoints over three slices, as the EndpointSlice controller spreads them.
    for (i, chunk) in (0..250u32).collect::<Vec<_>>().chunks(100).enumerate() {
        let eps: Vec<_> = chunk
            .iter()
            .map(|n| endpoint(&format!("10.1.{}.{}", n / 256, n % 256), None, None, None))
            .collect();
        store.apply(Event::Apply(slice(
            "default",
            &format!("web-{i}"),
            "web",
            serde_json::json!({
                "ports": [{ "name": "http", "port": 8080 }, { "name": "metrics", "port": 9090 }],
                "endpoints": eps,
            }),
        )));
    }
    // An IPv6 slice of the same Service, and an FQDN one that is skipped.
    store.apply(Event::Apply(slice(
        "default",
        "web-v6",
        "web",
        serde_json::json!({
            "addressType": "IPv6",
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": [endpoint("fd00::7", None, None, None)],
        }),
    )));
    store.apply(Event::Apply(slice(
        "default",
        "web-fqdn",
        "web",
        serde_json::json!({
            "addressType": "FQDN",
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": [endpoint("db.example.com", None, None, None)],
        }),
    )));
    let http = store.endpoints(&web(), &PortRef::Name("http".into()), None);
    assert_eq!(http.ready.len(), 251);
    assert!(http.ready.contains(&"[fd00::7]:8080".parse().unwrap()));
    assert!(http.ready.iter().all(|a| a.port() == 8080));
    let metrics = store.endpoints(&web(), &PortRef::Name("metrics".into()), None);
    assert_eq!(
        metrics.ready.len(),
        250,
        "the IPv6 slice has no metrics port"
    );

    // By number: the Service maps its port 80 to the port named "http".
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "namespace": "default", "name": "web" },
        "spec": { "ports": [
            { "name": "http", "port": 80, "targetPort": 8080 },
            { "name": "metrics", "port": 9000, "targetPort": "metrics" },
        ] },
    }))
    .unwrap();
    assert_eq!(
        store
            .endpoints(&web(), &PortRef::Number(80), Some(&service))
            .ready
            .len(),
        251
    );
    assert_eq!(
        store
            .endpoints(&web(), &PortRef::Number(9000), Some(&service))
            .ready[0]
            .port(),
        9090
    );
    assert!(store
        .endpoints(&web(), &PortRef::Number(81), Some(&service))
        .ready
        .is_empty());
    // A number with the Service not known yet is ambiguous across two ports: nothing.
    assert!(store
        .endpoints(&web(), &PortRef::Number(80), None)
        .ready
        .is_empty());
    assert!(store
        .endpoints(&web(), &PortRef::Name("nope".into()), None)
        .ready
        .is_empty());
}

#[test]
fn a_relist_is_swapped_in_whole_at_init_done() {
    let mut store = SliceStore::default();
    let one = |ip: &str| {
        serde_json::json!({
            "ports": [{ "port": 80 }],
            "endpoints": [endpoint(ip, None, None, None)],
        })
    };
    store.apply(Event::Apply(slice(
        "default",
        "web-a",
        "web",
        one("10.0.0.1"),
    )));
    store.apply(Event::Apply(slice(
        "default",
        "old-a",
        "old",
        one("10.0.0.9"),
    )));
    let port = PortRef::Name(String::new());

    // A relist starts (after a 410 Gone, say): until it is done, the old state serves.
    assert!(store.apply(Event::Init).is_empty());
    assert!(store
        .apply(Event::InitApply(slice(
            "default",
            "web-a",
            "web",
            one("10.0.0.2")
        )))
        .is_empty());
    assert_eq!(
        store.endpoints(&web(), &port, None).ready,
        addrs(&["10.0.0.1:80"])
    );

    let changed = store.apply(Event::InitDone);
    let old = ServiceKey {
        namespace: "default".into(),
        name: "old".into(),
    };
    assert_eq!(changed, BTreeSet::from([old.clone(), web()]));
    assert_eq!(
        store.endpoints(&web(), &port, None).ready,
        addrs(&["10.0.0.2:80"])
    );
    assert!(
        store.endpoints(&old, &port, None).ready.is_empty(),
        "gone from the relist"
    );

    // Delete removes a slice.
    let changed = store.apply(Event::Delete(slice(
        "default",
        "web-a",
        "web",
        one("10.0.0.2"),
    )));
    assert_eq!(changed, BTreeSet::from([web()]));
    assert!(store.endpoints(&web(), &port, None).ready.is_empty());
}
