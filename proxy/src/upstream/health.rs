//! Active health checks (a service's `health`): every endpoint of the service is asked
//! every `interval`, with a TCP connect (and the TLS handshake of an https service) or an
//! HTTP GET whose status must fall in a range. `fall` failures in a row take an endpoint
//! out of rotation, `rise` passes bring it back; each change is logged and counted in
//! `gatehouse_health_check_transitions_total{service,to}`. Checks run off the request path,
//! on fresh connections, so a pooled connection's state never hides a dead endpoint.

use std::{sync::Arc, time::Duration};

use gatehouse_config::{HealthCheck, Probe};
use http::{header, Request};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use super::{h2::H2Conn, Endpoint, Sender, Upstream};
use crate::{request_body::RequestBody, state::Live};

/// How often due checks are looked for (the finest interval that means anything).
const TICK: Duration = Duration::from_millis(100);

/// Checks the endpoints of every service with `health` until `stop`.
pub(crate) async fn check_endpoints(live: Arc<Live>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = live.snapshot.load_full();
        for upstream in snapshot.upstreams() {
            if upstream.health.is_none() {
                continue;
            }
            for endpoint in upstream.endpoints().iter() {
                if endpoint.check_due() {
                    tokio::spawn(check_one(live.clone(), upstream.clone(), endpoint.clone()));
                }
            }
        }
    }
}

/// One check of one endpoint, and what it changes.
async fn check_one(live: Arc<Live>, upstream: Arc<Upstream>, endpoint: Arc<Endpoint>) {
    let Some(check) = &upstream.health else {
        return;
    };
    let outcome = match tokio::time::timeout(check.timeout, probe(&endpoint, check)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    };
    let passed = outcome.is_ok();
    let Some(up) = endpoint.checked(passed, check.rise, check.fall, check.interval) else {
        return;
    };
    let service = upstream.name();
    let to = if up { "up" } else { "down" };
    live.metrics
        .health_transitions
        .with_label_values(&[service, to])
        .inc();
    match outcome {
        Ok(()) => tracing::info!(
            service,
            endpoint = %endpoint.addr(),
            "endpoint passed {} health checks in a row; back in rotation",
            check.rise
        ),
        Err(why) => tracing::warn!(
            service,
            endpoint = %endpoint.addr(),
            "endpoint failed {} health checks in a row (last: {why}); out of rotation until it passes {}",
            check.fall,
            check.rise
        ),
    }
}

/// What the check asks of the endpoint; why it failed.
async fn probe(endpoint: &Endpoint, check: &HealthCheck) -> Result<(), String> {
    let addr = endpoint.addr();
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match (endpoint.transport(), &check.probe) {
        (None, Probe::Tcp) => Ok(()),
        (None, Probe::Http { .. }) => get(tcp, endpoint, &check.probe).await,
        (Some(tls), probe) => {
            let stream = tls
                .connect(tcp, addr)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            match probe {
                Probe::Tcp => Ok(()),
                Probe::Http { .. } => get(stream, endpoint, probe).await,
            }
        }
    }
}

/// `GET path` over `io`; passes when the status is within the expected range.
async fn get<IO>(io: IO, endpoint: &Endpoint, probe: &Probe) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Probe::Http { path, host, expect } = probe else {
        return Ok(());
    };
    if endpoint.is_h2() {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP/2: {e}"))?;
        let conn = tokio::spawn(conn);
        let (probe_conn, _) = H2Conn::new(sender, endpoint.transport().is_some());
        let result = ask(probe_conn.stream(), endpoint, path, host, *expect).await;
        conn.abort();
        return result;
    }
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = ask(Sender::h1(sender), endpoint, path, host, *expect).await;
    conn.abort();
    result
}

/// `GET path` on `sender`; passes when the status is within `expect`.
async fn ask(
    mut sender: Sender,
    endpoint: &Endpoint,
    path: &str,
    host: &Option<String>,
    expect: (u16, u16),
) -> Result<(), String> {
    let host = host.clone().unwrap_or_else(|| endpoint.addr().to_string());
    let mut req = Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "gatehouse-health-check")
        .body(RequestBody::empty())
        .map_err(|e| format!("request: {e}"))?;
    if !sender.is_multiplexed() {
        req.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    let status = sender
        .try_send_request(req)
        .await
        .map_err(|e| format!("HTTP: {}", e.into_error()))?
        .status()
        .as_u16();
    match (expect.0..=expect.1).contains(&status) {
        true => Ok(()),
        false => Err(format!("GET {path} answered {status}")),
    }
}
