//! The gRPC load of benches/grpc.sh: `server ADDR` runs a tonic upstream answering a unary
//! `test.Echo/Say`; `client ADDR SECONDS CALLS_IN_FLIGHT` calls it through a proxy (over
//! h2c, 4 connections) for that long and prints `calls calls/s p99_ms errors`.

use std::{convert::Infallible, net::SocketAddr, pin::Pin, task::Poll, time::Duration};

use http::uri::PathAndQuery;
use tonic::{
    body::Body, client::Grpc, codec::ProstCodec, server::NamedService, Request, Response, Status,
};
use tower::service_fn;

#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    text: String,
}

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
            let say = service_fn(|r: Request<Echo>| async move {
                Ok::<_, Status>(Response::new(Echo {
                    text: r.into_inner().text,
                }))
            });
            Ok(grpc.unary(say, req).await)
        })
    }
}

async fn server(addr: SocketAddr) {
    tonic::transport::Server::builder()
        .add_service(EchoServer)
        .serve(addr)
        .await
        .expect("the gRPC upstream serves");
}

async fn client(addr: SocketAddr, seconds: u64, in_flight: usize) {
    let mut channels = Vec::new();
    for _ in 0..4 {
        let channel = tonic::transport::Endpoint::from_static("http://grpc.test")
            .connect_with_connector(service_fn(move |_: http::Uri| async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
            }))
            .await
            .expect("connects to the proxy");
        channels.push(channel);
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..in_flight)
        .map(|i| {
            let mut grpc = Grpc::new(channels[i % channels.len()].clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while tokio::time::Instant::now() < until {
                    let started = std::time::Instant::now();
                    let sent = async {
                        grpc.ready()
                            .await
                            .map_err(|e| Status::unknown(e.to_string()))?;
                        let req = Request::new(Echo {
                            text: "x".repeat(100),
                        });
                        let path = PathAndQuery::from_static("/test.Echo/Say");
                        grpc.unary(req, path, ProstCodec::<Echo, Echo>::default())
                            .await
                    };
                    match sent.await {
                        Ok(_) => latencies.push(started.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, failed) = task.await.expect("a load task");
        all.extend(latencies);
        errors += failed;
    }
    all.sort();
    let p99 = all
        .get((all.len() * 99 / 100).min(all.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{} {:.2} {:.3} {}",
        all.len(),
        all.len() as f64 / seconds as f64,
        p99,
        errors
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", addr] => runtime.block_on(server(addr.parse().expect("ADDR"))),
        ["client", addr, seconds, in_flight] => runtime.block_on(client(
            addr.parse().expect("ADDR"),
            seconds.parse().expect("SECONDS"),
            in_flight.parse().expect("CALLS_IN_FLIGHT"),
        )),
        // `cargo bench` runs every bench with --bench: nothing to do without a mode.
        _ => eprintln!("usage: grpcload server ADDR | client ADDR SECONDS CALLS_IN_FLIGHT"),
    }
}
