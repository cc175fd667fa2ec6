//! Bodies stream through the proxy: a large upload and download do not grow memory.

use std::time::Duration;

use crate::support::{binary, *};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

const SIZE: u64 = 1 << 30;

// The proxy is the binary, so its memory is its own, not shared with the tests running
// beside this one; and it is watched during the transfers (sampled every 5 ms, and the
// kernel's high-water mark), not read once after them, when a buffer may be freed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_each_way_streams_in_bounded_memory() {
    let up = TestUpstream::start("up").await;
    let dir = temp_dir("streaming");
    let config = dir.join("gatehouse.yaml");
    std::fs::write(&config, format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s }}\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: big.example.com, max_body: 2g, paths: [{{ path: /, service: a }}] }}]\n",
        up.addr
    )).unwrap();
    let running = binary::run(&config).await;
    let pid = running.child.id().unwrap();
    let url = |path: &str| format!("http://{}{path}", running.http);
    // One small request first, so connection pools and buffers exist before the baseline.
    let c = client();
    let warm = Request::get(url("/"))
        .header("host", "big.example.com")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&c, warm).await.status, 200);
    let before = rss_kib(pid).0;
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).0);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        })
    };

    // Upload: a chunked body produced on the fly; the upstream counts what arrives.
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let stream = futures_iter(std::iter::repeat_n(chunk, chunks));
    let req = Request::post(url("/upload"))
        .header("host", "big.example.com")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let client: hyper_util::client::legacy::Client<
        _,
        http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>,
    > = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let got = collect(resp).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["body_bytes"].as_u64(), Some(SIZE));

    // Download: the upstream streams SIZE bytes; count them without keeping them.
    let req = Request::get(url(&format!("/bytes/{SIZE}")))
        .header("host", "big.example.com")
        .body(
            http_body_util::Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(total, SIZE);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap().max(rss_kib(pid).1);

    // Buffering either body would add 1 GiB; streaming stays within a few buffers.
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 64 * 1024,
        "RSS grew by {grew} KiB moving {} MiB each way",
        SIZE >> 20
    );
    assert_eq!(running.terminate().await, Some(0));
}

fn futures_iter(
    it: impl Iterator<Item = Bytes> + Send + Unpin + 'static,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>> + Send {
    struct Iter<I>(I);
    impl<I: Iterator<Item = Bytes> + Unpin> futures_core::Stream for Iter<I> {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
        }
    }
    Iter(it)
}
