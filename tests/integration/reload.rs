//! Configuration reloads under load: valid files replace the configuration, invalid ones
//! change nothing, and no request fails either way.

use std::{path::Path, sync::Arc, time::Duration};

use crate::support::*;
use gatehouse_discovery::{load_file, FileWatcher};
use gatehouse_proxy::{Gatehouse, Metrics};
use tokio_util::sync::CancellationToken;

fn valid(version: usize, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    // Alternate the endpoint set too, so reloads also swap upstreams under load.
    let endpoints = if version % 4 == 1 {
        format!("\"{a}\"")
    } else {
        format!("\"{a}\", \"{b}\"")
    };
    format!(
        r#"listen: {{ http: "127.0.0.1:0" }}
access_log: off
services: {{ web: {{ endpoints: [{endpoints}] }} }}
routes:
  - host: r.example.com
    response_headers: {{ X-Version: "{version}" }}
    paths: [{{ path: /, service: web }}]
"#
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_valid_and_invalid_under_load_lose_no_request() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let dir = std::env::temp_dir().join(format!("gatehouse-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gatehouse.yaml");
    write_atomically(&file, &valid(0, a.addr, b.addr));

    let gatehouse = Arc::new(
        Gatehouse::start(load_file(&file).unwrap(), Metrics::new())
            .await
            .unwrap(),
    );
    let addr = gatehouse.http_addr().await.unwrap();
    let stop = CancellationToken::new();
    let mut updates = FileWatcher::new(&file)
        .interval(Duration::from_millis(5))
        .spawn(stop.clone());
    let follower = gatehouse.clone();
    tokio::spawn(async move { follower.follow(&mut updates).await });

    // Steady load: four clients sending requests back to back.
    let load = SteadyLoad::start(4, addr, "r.example.com");

    let reloads = |result: &str| {
        let (_, text) = gatehouse.metrics().encode();
        let line = format!("gatehouse_config_reloads_total{{result=\"{result}\"}} ");
        String::from_utf8(text)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(line.as_str())
                    .map(|v| v.parse::<u64>().unwrap())
            })
            .unwrap_or(0)
    };
    let mut last_valid = 0;
    for i in 1..=100usize {
        if i % 2 == 1 {
            write_atomically(&file, &valid(i, a.addr, b.addr));
            last_valid = i;
        } else {
            write_atomically(
                &file,
                &format!("{}\nroutez: [] # broken {i}\n", valid(i, a.addr, b.addr)),
            );
        }
        let (want_ok, want_err) = (i.div_ceil(2) as u64, (i / 2) as u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reloads("success") < want_ok || reloads("error") < want_err {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reload {i} not observed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (ok, failed) = load.stop().await;
    stop.cancel();
    assert_eq!(reloads("success"), 50);
    assert_eq!(reloads("error"), 50);
    assert_eq!(failed, 0, "no request may fail across reloads");
    assert!(ok > 100, "load actually ran: {ok}");
    // The last valid file is what serves, the invalid one after it changed nothing.
    let req = http::Request::get(format!("http://{addr}/"))
        .header("host", "r.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.headers["x-version"], last_valid.to_string());
    let _ = std::fs::remove_dir_all(&dir);
}
