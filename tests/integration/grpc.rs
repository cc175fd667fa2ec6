//! gRPC end to end: a tonic server behind Gatehouse (h2c to the pod), called by a tonic
//! client over h2c and over TLS: unary, server, client and bidirectional streaming, a
//! status with details in the trailers, a deadline Gatehouse enforces, and the pod gone.

// tonic's Status is what its API returns; it is not ours to shrink.
#![allow(clippy::result_large_err)]

use std::{convert::Infallible, net::SocketAddr, pin::Pin, sync::Arc, task::Poll, time::Duration};

use http::uri::PathAndQuery;
use tokio_stream::{Stream, StreamExt};
use tonic::{
    body::Body,
    client::Grpc,
    codec::{ProstCodec, Streaming},
    server::NamedService,
    Code, Request, Response, Status,
};
use tower::service_fn;

use crate::support::{binary::*, tls::*, *};

/// The one message of the test service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub delay_ms: u32,
}

fn echo(text: &str) -> Echo {
    Echo {
        text: text.to_owned(),
        delay_ms: 0,
    }
}

type Messages = Pin<Box<dyn Stream<Item = Result<Echo, Status>> + Send>>;

/// `test.Echo`: Say (unary; "fail" answers INVALID_ARGUMENT with details), Count (server
/// streaming: 0..n), Join (client streaming), Chat (bidirectional, echoes each).
#[derive(Clone)]
struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = "test.Echo";
}

impl tower::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Echo, Echo>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Say" => {
                    let say = service_fn(|r: Request<Echo>| async move {
                        let m = r.into_inner();
                        tokio::time::sleep(Duration::from_millis(m.delay_ms.into())).await;
                        if m.text == "fail" {
                            return Err(Status::with_details(
                                Code::InvalidArgument,
                                "bad",
                                bytes::Bytes::from_static(b"detail-bytes"),
                            ));
                        }
                        Ok(Response::new(echo(&format!("said: {}", m.text))))
                    });
                    grpc.unary(say, req).await
                }
                "/test.Echo/Count" => {
                    let count = service_fn(|r: Request<Echo>| async move {
                        let n: usize = r.into_inner().text.parse().unwrap_or(0);
                        let items = (0..n).map(|i| Ok(echo(&i.to_string())));
                        Ok::<_, Status>(Response::new(
                            Box::pin(tokio_stream::iter(items)) as Messages
                        ))
                    });
                    grpc.server_streaming(count, req).await
                }
                "/test.Echo/Join" => {
                    let join = service_fn(|r: Request<Streaming<Echo>>| async move {
                        let mut all = String::new();
                        let mut stream = r.into_inner();
                        while let Some(m) = stream.next().await {
                            all.push_str(&m?.text);
                        }
                        Ok(Response::new(echo(&all)))
                    });
                    grpc.client_streaming(join, req).await
                }
                "/test.Echo/Chat" => {
                    let chat = service_fn(|r: Request<Streaming<Echo>>| async move {
                        let replies = r
                            .into_inner()
                            .map(|m| m.map(|m| echo(&format!("re: {}", m.text))));
                        Ok::<_, Status>(Response::new(Box::pin(replies) as Messages))
                    });
                    grpc.streaming(chat, req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A tonic server on a local port, and what stops it (its connections say GOAWAY and
/// close; the port closes).
async fn grpc_server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(EchoServer)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await;
    });
    (addr, stop)
}

/// An HTTP/2 upstream that takes every call and never answers (nor enforces its
/// deadline, as a tonic server would): only Gatehouse can end the wait.
async fn silent_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(call)) = conn.accept().await {
                    held.push(call);
                }
            });
        }
    });
    addr
}

/// A client to Gatehouse: over h2c to `http`, or over TLS (ALPN h2) to `https`.
async fn client_to(addr: SocketAddr, tls: Option<&TestCa>) -> Grpc<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_static("http://grpc.test");
    let channel = match tls {
        None => endpoint
            .connect_with_connector(service_fn(move |_: http::Uri| async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
            }))
            .await
            .unwrap(),
        Some(ca) => {
            let config = Arc::new(ca.client(&[b"h2"]));
            endpoint
                .connect_with_connector(service_fn(move |_: http::Uri| {
                    let config = config.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        let name = rustls::pki_types::ServerName::try_from("grpc.test").unwrap();
                        let tls = tokio_rustls::TlsConnector::from(config)
                            .connect(name, tcp)
                            .await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                    }
                }))
                .await
                .unwrap()
        }
    };
    Grpc::new(channel)
}

/// A unary Say over plain HTTP/2 with `grpc-timeout: timeout`: the `grpc-status` and
/// `grpc-message` of the answer (headers of a trailers-only answer, else trailers).
async fn raw_call(proxy: SocketAddr, host: &str, timeout: &str, message: Echo) -> (String, String) {
    use http_body_util::BodyExt;
    use prost::Message;
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let encoded = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    framed.extend_from_slice(&encoded);
    let req = http::Request::post(format!("http://{host}/test.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(http_body_util::Full::new(bytes::Bytes::from(framed)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let head = resp.headers().clone();
    let trailers = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .trailers()
        .cloned();
    let all = trailers.unwrap_or(head);
    let get = |name: &str| {
        all.get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

async fn say(
    client: &mut Grpc<tonic::transport::Channel>,
    req: Request<Echo>,
) -> Result<String, Status> {
    client.ready().await.unwrap();
    let path = PathAndQuery::from_static("/test.Echo/Say");
    client
        .unary(req, path, ProstCodec::<Echo, Echo>::default())
        .await
        .map(|r| r.into_inner().text)
}

async fn every_kind_of_call(client: &mut Grpc<tonic::transport::Channel>) {
    assert_eq!(
        say(client, Request::new(echo("hi"))).await.unwrap(),
        "said: hi"
    );

    client.ready().await.unwrap();
    let mut counted = client
        .server_streaming(
            Request::new(echo("4")),
            PathAndQuery::from_static("/test.Echo/Count"),
            ProstCodec::<Echo, Echo>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = counted.message().await.unwrap() {
        got.push(m.text);
    }
    assert_eq!(got, ["0", "1", "2", "3"]);

    client.ready().await.unwrap();
    let joined = client
        .client_streaming(
            Request::new(tokio_stream::iter(["a", "b", "c"].map(echo))),
            PathAndQuery::from_static("/test.Echo/Join"),
            ProstCodec::<Echo, Echo>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.text, "abc");

    client.ready().await.unwrap();
    let mut replies = client
        .streaming(
            Request::new(tokio_stream::iter(["x", "y"].map(echo))),
            PathAndQuery::from_static("/test.Echo/Chat"),
            ProstCodec::<Echo, Echo>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = replies.message().await.unwrap() {
        got.push(m.text);
    }
    assert_eq!(got, ["re: x", "re: y"]);

    // A status with details travels in the trailers.
    let failed = say(client, Request::new(echo("fail"))).await.unwrap_err();
    assert_eq!(
        (failed.code(), failed.message()),
        (Code::InvalidArgument, "bad")
    );
    assert_eq!(failed.details(), b"detail-bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_kind_over_h2c_and_tls_with_gatehouse_statuses() {
    let (pod, server) = grpc_server().await;
    let silent = silent_upstream().await;
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["grpc.test"], (-1, 30));
    let dir = temp_dir("grpc-certs");
    write(&dir, "grpc.crt", &cert);
    write(&dir, "grpc.key", &key);
    let running = start_ready(
        "grpc",
        &format!(
            r#"listen: {{ http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0" }}
shutdown: {{ drain_delay: 0s }}
access_log: off
tls:
  - {{ cert: "{}", key: "{}" }}
services: {{ echo: {{ endpoints: ["{pod}"], protocol: grpc }}, silent: {{ endpoints: ["{silent}"], protocol: grpc }} }}
routes:
  - {{ host: grpc.test, paths: [{{ path: /, service: echo }}] }}
  - {{ host: silent.test, paths: [{{ path: /, service: silent }}] }}
  - {{ host: closed.test, allow: "10.0.0.0/8", paths: [{{ path: /, service: echo }}] }}
"#,
            dir.join("grpc.crt").display(),
            dir.join("grpc.key").display()
        ),
    )
    .await;
    let mut h2c = client_to(running.http, None).await;
    every_kind_of_call(&mut h2c).await;
    let mut tls = client_to(running.https.unwrap(), Some(&ca)).await;
    every_kind_of_call(&mut tls).await;

    // A deadline the upstream never meets: Gatehouse answers DEADLINE_EXCEEDED when it
    // runs out (a raw HTTP/2 call, so no client-side timer races it, to an upstream that
    // does not enforce deadlines, so only Gatehouse can).
    let started = std::time::Instant::now();
    let (status, message) = raw_call(running.http, "silent.test", "200m", echo("late")).await;
    assert_eq!(status, "4", "{message}");
    assert!(
        message.contains("sent%20no%20response%20head%20within")
            || message.contains("sent no response head within"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // The pod gone: UNAVAILABLE, said by Gatehouse.
    let _ = server.send(());
    eventually_async("the pod is gone", Duration::from_secs(10), || async {
        let mut fresh = client_to(running.http, None).await;
        matches!(say(&mut fresh, Request::new(echo("hi"))).await, Err(s) if s.code() == Code::Unavailable)
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}
