//! Bodies stream through the proxy: a large upload and download do not grow memory.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

const SIZE: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_each_way_streams_in_bounded_memory() {
    let up = TestUpstream::start("up").await;
    let proxy = Proxy::start(&format!(
        "listen: {{ http: \"127.0.0.1:0\" }}\naccess_log: off\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: big.example.com, max_body: 2g, paths: [{{ path: /, service: a }}] }}]\n",
        up.addr
    ))
    .await;
    let before = rss_kib();

    // Upload: a chunked body produced on the fly; the upstream counts what arrives.
    let chunk = Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = (SIZE / chunk.len() as u64) as usize;
    let stream = futures_iter(std::iter::repeat_n(chunk, chunks));
    let req = Request::post(proxy.url("/upload"))
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
    let after_upload = rss_kib();

    // Download: the upstream streams SIZE bytes; count them without keeping them.
    let req = Request::get(proxy.url(&format!("/bytes/{SIZE}")))
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
    let after_download = rss_kib();

    // Buffering either body would add 1 GiB; streaming stays within a few buffers.
    let grew = after_upload.max(after_download).saturating_sub(before);
    assert!(
        grew < 64 * 1024,
        "RSS grew by {grew} KiB moving {} MiB each way",
        SIZE >> 20
    );
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
