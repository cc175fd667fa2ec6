//! The admin listener's JSON views through the binary: routes with their endpoints and
//! whether each is in rotation, and certificates soonest-expiring first.

use serde_json::Value;

use crate::support::{binary::*, tls::*, *};

async fn view(running: &Running, path: &str) -> Value {
    let got = admin_get(&client(), running.admin, path).await;
    assert_eq!(got.status, 200, "{path}");
    assert_eq!(got.headers["content-type"], "application/json");
    serde_json::from_slice(&got.body).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_certificates_are_shown_as_served() {
    let up = TestUpstream::start("web").await;
    let dead = dead_addr().await;
    let ca = TestCa::new();
    let dir = temp_dir("admin-views-certs");
    let (soon, soon_key) = ca.leaf(&["soon.test"], (-1, 10));
    let (later, later_key) = ca.leaf(&["later.test"], (-1, 300));
    for (name, text) in [
        ("soon.pem", &soon),
        ("soon.key", &soon_key),
        ("later.pem", &later),
        ("later.key", &later_key),
    ] {
        write(&dir, name, text);
    }
    let p = |f: &str| dir.join(f).display().to_string();
    let yaml = format!(
        "listen: {{ http: \"127.0.0.1:0\", https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\naccess_log: off\ntls:\n  - {{ cert: \"{}\", key: \"{}\" }}\n  - {{ cert: \"{}\", key: \"{}\" }}\nservices: {{ web: {{ endpoints: [\"{}\", \"{dead}\"] }} }}\nroutes:\n  - {{ host: later.test, paths: [{{ path: /api, service: web }}] }}\n",
        p("later.pem"),
        p("later.key"),
        p("soon.pem"),
        p("soon.key"),
        up.addr,
    );
    let running = start_ready("admin-views", &yaml).await;
    // Requests find the dead endpoint and take it out of rotation.
    for _ in 0..6 {
        send(
            &client(),
            get_req_at(running.http, "later.test", "/api", &[]),
        )
        .await;
    }
    let routes = view(&running, "/routes").await;
    let route = &routes["routes"][0];
    assert_eq!(route["host"], "later.test");
    let path = &route["paths"][0];
    assert_eq!(
        (path["path"].as_str(), path["service"]["name"].as_str()),
        (Some("/api"), Some("web"))
    );
    let endpoints = path["service"]["endpoints"].as_array().unwrap();
    let rotation = |addr: String| {
        endpoints
            .iter()
            .find(|e| e["address"] == addr.as_str())
            .map(|e| e["in_rotation"].as_bool().unwrap())
    };
    assert_eq!(rotation(up.addr.to_string()), Some(true), "{routes}");
    assert_eq!(rotation(dead.to_string()), Some(false), "{routes}");

    let certs = view(&running, "/certificates").await;
    let certs = certs.as_array().unwrap();
    assert_eq!(certs.len(), 2);
    assert!(
        certs[0]["certificate"]
            .as_str()
            .unwrap()
            .ends_with("soon.pem"),
        "soonest first: {certs:?}"
    );
    let days = certs[0]["expires_in_days"].as_i64().unwrap();
    assert!((9..=10).contains(&days), "{days}");
    assert_eq!(certs[0]["expired"], false);
    assert!(certs[1]["expires_in_days"].as_i64().unwrap() >= 299);

    // Without Kubernetes there are no Ingresses to show.
    let got = admin_get(&client(), running.admin, "/ingresses").await;
    assert_eq!(got.status, 404);
    assert_eq!(running.terminate().await, Some(0));
}
