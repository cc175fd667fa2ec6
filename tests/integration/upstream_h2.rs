//! HTTP/2 to upstreams through the binary: h2c (prior knowledge) and h2 over TLS (ALPN),
//! requests multiplexed on one connection, trailers passed on, and a GOAWAY drained
//! without losing a request.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::{binary::*, tls::*, *};

/// What an HTTP/2 upstream saw.
#[derive(Clone, Default)]
struct Seen {
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

type Frames =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// `h2-up <version> <path>`, then a trailer `x-trailer: done`.
async fn answer(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Frames>, Infallible> {
    let text = format!("h2-up {:?} {}", req.version(), req.uri().path());
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-trailer", "done".parse().unwrap());
    let frames = vec![
        Ok(Frame::data(Bytes::from(text))),
        Ok(Frame::trailers(trailers)),
    ];
    Ok(http::Response::new(StreamBody::new(
        futures_util::stream::iter(frames),
    )))
}

/// Serves one HTTP/2 connection; after `goaway_after` requests it sends GOAWAY and
/// finishes the requests it has.
async fn serve_h2<IO>(io: IO, seen: Seen, goaway_after: Option<usize>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (s, d) = (served.clone(), done.clone());
    let service = hyper::service::service_fn(move |req| {
        seen.requests.fetch_add(1, SeqCst);
        if Some(s.fetch_add(1, SeqCst) + 1) == goaway_after {
            d.notify_one();
        }
        answer(req)
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = done.notified() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Listens on a free local port; each accepted connection is counted in `connections` and
/// served by `serve` on a task of its own.
async fn accept_counting<F, Fut>(connections: Arc<AtomicUsize>, serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            connections.fetch_add(1, SeqCst);
            tokio::spawn(serve(tcp));
        }
    });
    addr
}

/// An HTTP/2-only upstream, over TLS with ALPN h2 when given a certificate.
async fn h2_upstream(tls: Option<(&str, &str)>, goaway_after: Option<usize>) -> (SocketAddr, Seen) {
    let acceptor = tls.map(|(cert, key)| {
        use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let seen = Seen::default();
    let keep = seen.clone();
    let addr = accept_counting(seen.connections.clone(), move |tcp| {
        let (acceptor, seen) = (acceptor.clone(), keep.clone());
        async move {
            match acceptor {
                Some(a) => {
                    if let Ok(stream) = a.accept(tcp).await {
                        serve_h2(stream, seen, goaway_after).await
                    }
                }
                None => serve_h2(tcp, seen, goaway_after).await,
            }
        }
    })
    .await;
    (addr, seen)
}

/// The binary serving `a.test` from service `up` (`up` inside its braces).
async fn proxy_to(name: &str, up: &str) -> Running {
    start_ready(
        name,
        &format!(
            "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\naccess_log: off\nservices: {{ up: {{ {up} }} }}\nroutes:\n  - {{ host: a.test, paths: [{{ path: /, service: up }}] }}\n"
        ),
    )
    .await
}

/// A GET for `a.test` over HTTP/2 (prior knowledge) to the proxy: status, body, trailers.
async fn h2_get(proxy: SocketAddr, path: &str) -> (u16, String, Option<http::HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://a.test{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (
        status,
        String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstreams_multiplex_pass_trailers_and_drain_a_goaway() {
    let (up, seen) = h2_upstream(None, None).await;
    let running = proxy_to(
        "upstream-h2c",
        &format!("endpoints: [\"{up}\"], protocol: h2c"),
    )
    .await;
    let (status, body, trailers) = h2_get(running.http, "/one").await;
    assert_eq!((status, body.as_str()), (200, "h2-up HTTP/2.0 /one"));
    assert_eq!(trailers.expect("trailers")["x-trailer"], "done");
    // Twenty requests at once share the one connection.
    let all = (0..20).map(|i| {
        let http = running.http;
        tokio::spawn(async move {
            send(&client(), get_req_at(http, "a.test", &format!("/{i}"), &[])).await
        })
    });
    for got in futures_util::future::join_all(all).await {
        let got = got.unwrap();
        assert_eq!(got.status, 200);
        assert!(String::from_utf8_lossy(&got.body).starts_with("h2-up HTTP/2.0"));
    }
    assert_eq!(
        seen.connections.load(SeqCst),
        1,
        "one connection, multiplexed"
    );
    assert_eq!(running.terminate().await, Some(0));

    // An upstream that says GOAWAY every 3 requests: every request is still answered.
    let (up, seen) = h2_upstream(None, Some(3)).await;
    let running = proxy_to(
        "upstream-h2c-goaway",
        &format!("endpoints: [\"{up}\"], protocol: grpc"),
    )
    .await;
    for i in 0..12 {
        let got = send(
            &client(),
            get_req_at(running.http, "a.test", &format!("/{i}"), &[]),
        )
        .await;
        assert_eq!(
            got.status,
            200,
            "request {i}: {:?}",
            String::from_utf8_lossy(&got.body)
        );
    }
    assert_eq!(seen.requests.load(SeqCst), 12);
    assert!(
        seen.connections.load(SeqCst) >= 4,
        "a new connection after each GOAWAY"
    );
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_upstreams_negotiate_h2_by_alpn() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["h2.internal"], (-1, 30));
    let (up, seen) = h2_upstream(Some((&cert, &key)), None).await;
    let dir = temp_dir("upstream-h2-tls-ca");
    write(&dir, "ca.pem", &ca.pem);
    let running = proxy_to(
        "upstream-h2-tls",
        &format!(
            "endpoints: [\"{up}\"], protocol: h2, tls: {{ server_name: h2.internal, ca: \"{}\" }}",
            dir.join("ca.pem").display()
        ),
    )
    .await;
    for _ in 0..3 {
        let got = send(&client(), get_req_at(running.http, "a.test", "/x", &[])).await;
        assert_eq!(
            (
                got.status.as_u16(),
                String::from_utf8_lossy(&got.body).into_owned()
            ),
            (200, "h2-up HTTP/2.0 /x".to_owned())
        );
    }
    assert_eq!(seen.connections.load(SeqCst), 1);
    assert_eq!(running.terminate().await, Some(0));
}

/// An HTTP/2 upstream (the h2 crate, to refuse streams at will) that resets every
/// `refuse_every`-th stream with REFUSED_STREAM, unprocessed, and answers the others.
async fn refusing_upstream(refuse_every: usize) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let keep = seen.clone();
    let addr = accept_counting(seen.connections.clone(), move |tcp| {
        let seen = keep.clone();
        async move {
            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                return;
            };
            while let Some(Ok((req, mut respond))) = conn.accept().await {
                let n = seen.requests.fetch_add(1, SeqCst) + 1;
                if n % refuse_every == 0 {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                let body = format!("answered {} {}", req.method(), req.uri().path());
                let resp = http::Response::new(());
                if let Ok(mut stream) = respond.send_response(resp, false) {
                    let _ = stream.send_data(Bytes::from(body), true);
                }
            }
        }
    })
    .await;
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_upstream_refused_is_sent_again_whatever_its_method() {
    let (up, seen) = refusing_upstream(3).await;
    let running = proxy_to(
        "upstream-h2-refused",
        &format!("endpoints: [\"{up}\"], protocol: h2c"),
    )
    .await;
    for (i, method) in ["GET", "POST", "DELETE", "POST", "GET", "POST"]
        .iter()
        .enumerate()
    {
        let req = http::Request::builder()
            .method(*method)
            .uri(format!("http://{}/{i}", running.http))
            .header("host", "a.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = send(&client(), req).await;
        assert_eq!(
            (
                got.status.as_u16(),
                String::from_utf8_lossy(&got.body).into_owned()
            ),
            (200, format!("answered {method} /{i}")),
            "request {i}"
        );
    }
    assert!(
        seen.requests.load(SeqCst) >= 8,
        "refused streams were sent again"
    );
    assert_eq!(running.terminate().await, Some(0));
}

/// What the upstream of the stream tests saw and did.
#[derive(Clone, Default)]
struct Streams {
    connections: Arc<AtomicUsize>,
    /// `/together` requests being answered now.
    together: Arc<AtomicUsize>,
    /// Bytes of `/big` the proxy took (sent within its flow-control windows).
    big_sent: Arc<AtomicUsize>,
}

/// How many `/together` requests must be open at once before any is answered.
const TOGETHER: usize = 6;

/// An HTTP/2 upstream (the h2 crate, for its stream limit and explicit flow control)
/// allowing `max_streams` streams per connection. `/together` answers "together" once
/// `TOGETHER` such requests are open at once (or "alone" after 5 s); `/big` streams 64 MiB
/// as fast as the proxy's windows allow; anything else answers "small".
async fn stream_upstream(max_streams: u32) -> (SocketAddr, Streams) {
    let seen = Streams::default();
    let keep = seen.clone();
    let addr = accept_counting(seen.connections.clone(), move |tcp| {
        let seen = keep.clone();
        async move {
            let Ok(mut conn) = h2::server::Builder::new()
                .max_concurrent_streams(max_streams)
                .handshake::<_, Bytes>(tcp)
                .await
            else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(answer_stream(
                    req.uri().path().to_owned(),
                    respond,
                    seen.clone(),
                ));
            }
        }
    })
    .await;
    (addr, seen)
}

async fn answer_stream(path: String, mut respond: h2::server::SendResponse<Bytes>, seen: Streams) {
    let Ok(mut stream) = respond.send_response(http::Response::new(()), false) else {
        return;
    };
    match path.as_str() {
        "/together" => {
            seen.together.fetch_add(1, SeqCst);
            // Generous: the whole suite shares two cores (Chromium included); a request
            // queued behind the limit would never arrive, however long this waits.
            let end = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut word = "alone";
            while tokio::time::Instant::now() < end {
                if seen.together.load(SeqCst) >= TOGETHER {
                    word = "together";
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let _ = stream.send_data(Bytes::from(word), true);
        }
        "/big" => {
            const CHUNK: usize = 64 * 1024;
            let mut left = 64 * 1024 * 1024;
            while left > 0 {
                stream.reserve_capacity(left.min(CHUNK));
                let granted =
                    match futures_util::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(n)) => n.min(left),
                        _ => return,
                    };
                if granted == 0 {
                    continue;
                }
                if stream
                    .send_data(Bytes::from(vec![b'x'; granted]), false)
                    .is_err()
                {
                    return;
                }
                left -= granted;
                seen.big_sent.fetch_add(granted, SeqCst);
            }
            let _ = stream.send_data(Bytes::new(), true);
        }
        _ => {
            let _ = stream.send_data(Bytes::from("small"), true);
        }
    }
}

/// The binary in front of a [`stream_upstream`] over h2c, one request through already
/// (the connection open, the upstream's SETTINGS read).
async fn proxied_stream_upstream(name: &str, max_streams: u32) -> (Running, Streams) {
    let (up, seen) = stream_upstream(max_streams).await;
    let running = proxy_to(name, &format!("endpoints: [\"{up}\"], protocol: h2c")).await;
    let got = send(&client(), get_req_at(running.http, "a.test", "/", &[])).await;
    assert_eq!(got.status, 200);
    (running, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_upstreams_limit_go_on_another_connection() {
    // The first request opens a connection and learns the upstream's limit of 2 streams.
    let (running, seen) = proxied_stream_upstream("upstream-h2-streams", 2).await;
    // Six requests that the upstream answers only when all six are open at once: queued
    // behind the limit on one connection, they would wait for each other in vain.
    let all = (0..TOGETHER).map(|_| {
        let http = running.http;
        tokio::spawn(
            async move { send(&client(), get_req_at(http, "a.test", "/together", &[])).await },
        )
    });
    for got in futures_util::future::join_all(all).await {
        let got = got.unwrap();
        assert_eq!(
            (
                got.status.as_u16(),
                String::from_utf8_lossy(&got.body).into_owned()
            ),
            (200, "together".to_owned())
        );
    }
    let connections = seen.connections.load(SeqCst);
    assert!(
        (3..=1 + TOGETHER).contains(&connections),
        "2 streams per connection: 6 at once need 3 connections or more, got {connections}"
    );
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_stall_the_other_streams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (running, seen) = proxied_stream_upstream("upstream-h2-slow", 100).await;
    // A client asks for 64 MiB, reads the head and stops reading, with a small receive
    // buffer: its stream on the shared upstream connection stops where the windows stop it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(running.http).await.unwrap();
    slow.write_all(b"GET /big HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = slow.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    // Wait until the upstream can send no more of it.
    let mut last = usize::MAX;
    eventually_async(
        "the slow stream stalls",
        std::time::Duration::from_secs(20),
        || {
            let now = seen.big_sent.load(SeqCst);
            let stalled = now == last && now > 0;
            last = now;
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                stalled
            }
        },
    )
    .await;
    assert!(
        seen.big_sent.load(SeqCst) < 64 * 1024 * 1024,
        "the proxy's windows bound what it takes of a stream nobody reads"
    );
    // Meanwhile the other streams on that connection flow.
    for i in 0..10 {
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            send(
                &client(),
                get_req_at(running.http, "a.test", &format!("/{i}"), &[]),
            ),
        )
        .await
        .expect("another stream answered while one is stalled");
        assert_eq!(String::from_utf8_lossy(&got.body), "small");
    }
    assert_eq!(
        seen.connections.load(SeqCst),
        1,
        "all on the one connection"
    );
    drop(slow);
    assert_eq!(running.terminate().await, Some(0));
}
