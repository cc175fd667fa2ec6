//! The admin listener's JSON views through the binary: routes with their endpoints and
//! whether each is in rotation, and certificates soonest-expiring first.

use std::time::Duration;

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

/// The page as a real browser leaves it once its script has drawn the views: headless
/// Chromium's DOM after the page's requests are answered.
async fn rendered(admin: std::net::SocketAddr, query: &str, profile: &std::path::Path) -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let out = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            // Root in CI has no user namespace for the sandbox; the page is our own.
            "--no-sandbox",
            "--disable-gpu",
            // Containers often give /dev/shm 64 MiB, too little for Chromium.
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            // Virtual time runs until the page's fetches are answered, then stops.
            "--virtual-time-budget=3000",
            "--dump-dom",
            &format!("http://{admin}/{query}"),
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("chromium answers within a minute")
        .unwrap_or_else(|e| {
            panic!("{chromium} does not start ({e}); .ci/run installs it: apt-get install chromium")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The rows of the table body with this id, as the browser serialised them.
fn rows<'a>(dom: &'a str, tbody: &str) -> Vec<&'a str> {
    let start = dom
        .find(&format!("<tbody id=\"{tbody}\">"))
        .unwrap_or_else(|| panic!("no {tbody} in {dom}"));
    let body = &dom[start..];
    let body = &body[..body.find("</tbody>").unwrap()];
    body.split("<tr").skip(1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_routes_refusals_and_expiry_in_a_real_browser() {
    use crate::ingress::*;
    use crate::support::kube_api::*;
    use serde_json::json;

    let api = KubeApi::start().await;
    classes(&api);
    let web = TestUpstream::start("web").await;
    service(&api, "shop", "web", &web);
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["app.test"], (-1, 5));
    api.apply(SECRETS, tls_secret("shop", "app-tls", &cert, &key));
    api.apply(
        INGRESSES,
        json!({
            "metadata": { "namespace": "shop", "name": "app", "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": {
                "ingressClassName": "gatehouse",
                "tls": [{ "hosts": ["app.test"], "secretName": "app-tls" }],
                "rules": [{ "host": "app.test", "http": { "paths": [path("/", "Prefix", "web")] } }],
            },
        }),
    );
    // A misspelt allow-list: refused, its host answers 503. Its name carries markup, which
    // the page must show as text.
    api.apply(
        INGRESSES,
        ingress(
            "shop",
            "admin",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({ "nginx.ingress.kubernetes.io/whitelist-soruce-range": "10.0.0.0/8<img src=x onerror=alert(1)>" }),
            "admin.test",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    let (running, dir) = run_on("status-page", &[&api], ", https: \"127.0.0.1:0\"", "").await;
    wait_ready(&running).await;
    eventually_async(
        "both Ingresses and the certificate are served",
        Duration::from_secs(15),
        || async {
            let c = client();
            let ingresses = admin_get(&c, running.admin, "/ingresses").await;
            let certs = admin_get(&c, running.admin, "/certificates").await;
            ingresses.status == 200
                && serde_json::from_slice::<Value>(&ingresses.body)
                    .map_or(0, |v| v.as_array().map_or(0, Vec::len))
                    == 2
                && String::from_utf8_lossy(&certs.body).contains("app-tls")
        },
    )
    .await;

    let dom = rendered(running.admin, "", &dir.join("chromium")).await;
    assert!(!dom.contains("could not refresh"), "{dom}");
    // Refused Ingresses first, with the refusal's reason, the markup shown as text.
    let ingresses = rows(&dom, "ingresses-rows");
    assert_eq!(ingresses.len(), 2, "{dom}");
    assert!(
        ingresses[0].contains("shop/admin") && ingresses[0].contains("class=\"refused\""),
        "{}",
        ingresses[0]
    );
    assert!(
        ingresses[0].contains("whitelist-source-range"),
        "the reason: {}",
        ingresses[0]
    );
    assert!(
        ingresses[1].contains("shop/app") && ingresses[1].contains("class=\"ok\""),
        "{}",
        ingresses[1]
    );
    assert!(!dom.contains("<img"), "Ingress text is never markup: {dom}");
    // The certificate with its days left, marked as expiring.
    let certs = rows(&dom, "certificates-rows");
    assert_eq!(certs.len(), 1, "{dom}");
    assert!(certs[0].contains("app-tls"), "{}", certs[0]);
    assert!(
        certs[0].contains("class=\"expiring\">4 days")
            || certs[0].contains("class=\"expiring\">5 days"),
        "{}",
        certs[0]
    );
    // The routes, host → path → service → endpoint in rotation.
    let routes = rows(&dom, "routes-rows");
    let app = routes
        .iter()
        .find(|r| r.contains("<td>app.test</td>"))
        .unwrap_or_else(|| panic!("app.test in {routes:?}"));
    assert!(
        app.contains("<td>/ (prefix)</td>") && app.contains(">shop/web:http<"),
        "{app}"
    );
    assert!(
        app.contains(&format!("127.0.0.1:{} in rotation", web.addr.port())),
        "{app}"
    );
    // Needs attention: the refused Ingress and the expiring certificate, before the tables.
    let attention = &dom[dom.find("attention-list").unwrap()..dom.find("ingresses-rows").unwrap()];
    assert!(
        attention.contains("Ingress shop/admin is refused"),
        "{attention}"
    );
    assert!(
        attention.contains("Certificate") && attention.contains("app-tls"),
        "{attention}"
    );

    // A search from the address bar hides what does not match.
    let dom = rendered(running.admin, "?q=app.test", &dir.join("chromium")).await;
    let ingresses = rows(&dom, "ingresses-rows");
    let admin_row = ingresses.iter().find(|r| r.contains("shop/admin")).unwrap();
    assert!(admin_row.contains("hidden"), "{admin_row}");
    let app_row = ingresses.iter().find(|r| r.contains("shop/app")).unwrap();
    assert!(!app_row.contains("hidden"), "{app_row}");
    assert_eq!(running.terminate().await, Some(0));
}
