//! Endpoint sets published by discovery take effect for the next request, lock-free, and
//! lose no request while at least one endpoint is ready.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::support::*;

const ZERO: u8 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_one_ten_zero_three_under_load() {
    let mut ups = Vec::new();
    for i in 0..10 {
        ups.push(TestUpstream::start(&format!("pod{i}")).await);
    }
    let proxy = Arc::new(
        Proxy::start(
            "listen: { http: \"127.0.0.1:0\" }\naccess_log: off\nservices: { web: { endpoints: [] } }\nroutes: [{ host: k.example.com, paths: [{ path: /, service: web }] }]\n",
        )
        .await,
    );
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let phase = Arc::new(AtomicU8::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (proxy, phase, running, failures, seen) = (
            proxy.clone(),
            phase.clone(),
            running.clone(),
            failures.clone(),
            seen.clone(),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            while running.load(Ordering::Relaxed) {
                let started = phase.load(Ordering::SeqCst);
                let got = get(&c, &proxy, "k.example.com", "/").await;
                let ended = phase.load(Ordering::SeqCst);
                if got.status == 200 {
                    let who = got.json()["upstream"].as_str().unwrap().to_owned();
                    *seen.lock().unwrap().entry(who).or_default() += 1;
                } else if started != 0 && !(started <= ZERO && ended >= ZERO) {
                    // Phases only go forward: a request that started before or in the empty
                    // phase and ended in or after it overlapped it, and may have seen it.
                    failures.lock().unwrap().push((started, got.status));
                }
            }
        }));
    }
    let served_by = |names: &[usize]| {
        let seen = seen.clone();
        let names: Vec<String> = names.iter().map(|i| format!("pod{i}")).collect();
        move || {
            let s = seen.lock().unwrap();
            names.iter().all(|n| s.get(n).copied().unwrap_or(0) > 0)
        }
    };
    let g = &proxy.gatehouse;

    // 1 endpoint.
    g.publish_endpoints("web", addrs[..1].to_vec()).await;
    phase.store(1, Ordering::SeqCst);
    eventually("pod0 serves", Duration::from_secs(10), served_by(&[0])).await;
    // 10 endpoints: every one gets traffic.
    g.publish_endpoints("web", addrs.clone()).await;
    phase.store(2, Ordering::SeqCst);
    eventually(
        "all ten serve",
        Duration::from_secs(10),
        served_by(&(0..10).collect::<Vec<_>>()),
    )
    .await;
    // 0 endpoints: 503 (the only phase where failures are expected).
    // Phase first: a request that sees the empty set must count as started in it.
    phase.store(ZERO, Ordering::SeqCst);
    g.publish_endpoints("web", Vec::new()).await;
    let got = get(&client(), &proxy, "k.example.com", "/").await;
    assert_eq!(got.status, 503);
    // 3 endpoints: traffic resumes, and only on them.
    // Endpoints first: a request started in phase 4 must find them.
    g.publish_endpoints("web", addrs[3..6].to_vec()).await;
    phase.store(4, Ordering::SeqCst);
    let before: Vec<usize> = ups
        .iter()
        .map(|u| u.requests.load(Ordering::Relaxed))
        .collect();
    seen.lock().unwrap().clear();
    eventually(
        "pods 3-5 serve",
        Duration::from_secs(10),
        served_by(&[3, 4, 5]),
    )
    .await;
    running.store(false, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let after: Vec<usize> = ups
        .iter()
        .map(|u| u.requests.load(Ordering::Relaxed))
        .collect();
    for i in (0..10).filter(|i| !(3..6).contains(i)) {
        assert_eq!(before[i], after[i], "pod{i} was removed and got a request");
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "requests failed while endpoints were ready: {failures:?}"
    );
    assert_eq!(proxy.metric(r#"gatehouse_endpoints{service="web"}"#), 3.0);
}

#[tokio::test]
async fn fixed_endpoints_stay_beside_discovered_ones_and_survive_reloads() {
    let vm = TestUpstream::start("vm").await;
    let pod = TestUpstream::start("pod").await;
    let yaml = |header: &str| {
        format!(
            "listen: {{ http: \"127.0.0.1:0\" }}\naccess_log: off\nservices: {{ web: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: m.example.com, response_headers: {{ X-Gen: \"{header}\" }}, paths: [{{ path: /, service: web }}] }}]\n",
            vm.addr
        )
    };
    let proxy = Proxy::start(&yaml("1")).await;
    proxy
        .gatehouse
        .publish_endpoints("web", vec![pod.addr])
        .await;
    let c = client();
    let mut who = std::collections::BTreeSet::new();
    for _ in 0..10 {
        who.insert(
            get(&c, &proxy, "m.example.com", "/").await.json()["upstream"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(who, ["pod".to_owned(), "vm".to_owned()].into());
    // A configuration reload keeps the discovered endpoints.
    proxy
        .gatehouse
        .apply(gatehouse_config::parse(&yaml("2"), "t.yaml").unwrap())
        .await
        .unwrap();
    let mut who = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let got = get(&c, &proxy, "m.example.com", "/").await;
        assert_eq!(got.headers["x-gen"], "2");
        who.insert(got.json()["upstream"].as_str().unwrap().to_owned());
    }
    assert_eq!(who, ["pod".to_owned(), "vm".to_owned()].into());
}
