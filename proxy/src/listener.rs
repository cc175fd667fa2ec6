//! The HTTP listener: accepts clients and serves each connection with hyper (HTTP/1.1 and
//! cleartext HTTP/2 by prior knowledge), under the connection watchdog.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use proxy_header::{io::ProxiedStream, ParseConfig};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    conn::{canonical_ip, ConnInfo, CountingIo, Cutoff, TlsInfo, Watchdog},
    h2_guard::CONTROL_FRAMES_PER_SECOND,
    l4,
    policy::allow_list,
    request,
    state::{Drain, Live},
    tls::acceptor::{Accepted, TlsServer},
    warnings::RateLimited,
};

/// How long a connection the watchdog cut off may take to end on its own (HTTP/2 sends
/// GOAWAY first, so an idle client learns why) before it is dropped.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Any client can flood: the log says so at most once per 10 s.
static FLOOD_WARNINGS: RateLimited = RateLimited::per(Duration::from_secs(10));

/// Accepts until `stop` fires; connections already accepted carry on. With `tls`, each
/// connection is a TLS one (the HTTPS listener).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    live: Arc<Live>,
    drain: Arc<Drain>,
    stop: CancellationToken,
    tls: Option<Arc<TlsServer>>,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address; not serving it");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                drain.connections.spawn(serve_connection(
                    (live.clone(), drain.clone()),
                    stream,
                    peer,
                    local,
                    tls.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %local, error = %e, "accept failed; check the open-files limit (ulimit -n)");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(listener = %local, "listener closed");
}

/// Reads the PROXY protocol header when the listener expects one (only trusted proxies may
/// connect then), and serves the connection.
async fn serve_connection(
    shared: (Arc<Live>, Arc<Drain>),
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<Arc<TlsServer>>,
) {
    let _ = stream.set_nodelay(true);
    let live = &shared.0;
    let snapshot = live.snapshot.load_full();
    let config = &snapshot.config;
    if !config.listen.proxy_protocol {
        return serve_maybe_tls(shared, stream, ConnInfo::new(peer, local), tls).await;
    }
    if !config.trusted_proxies.contains(canonical_ip(peer.ip())) {
        live.metrics.deny("untrusted_proxy");
        tracing::debug!(client = %peer, "refused: the listener expects the PROXY protocol and this peer is not in trusted_proxies");
        return;
    }
    let parse = ParseConfig {
        include_tlvs: false,
        ..ParseConfig::default()
    };
    let limit = config.timeouts.request_header;
    drop(snapshot);
    match tokio::time::timeout(limit, ProxiedStream::create_from_tokio(stream, parse)).await {
        Ok(Ok(proxied)) => {
            // LOCAL (health check) connections carry no address: the peer is the client.
            let source = proxied
                .proxy_header()
                .proxied_address()
                .map_or(peer, |a| a.source);
            serve_maybe_tls(shared, proxied, ConnInfo::new(source, local), tls).await
        }
        Ok(Err(e)) => {
            live.metrics.deny("proxy_header");
            tracing::warn!(proxy = %peer, error = %e, "closed a connection without a valid PROXY protocol header; check that the load balancer sends PROXY v1 or v2");
        }
        Err(_) => {
            live.metrics.deny("proxy_header");
            tracing::debug!(proxy = %peer, "no PROXY protocol header within request_header; closed");
        }
    }
}

/// A TLS connection for a passthrough host: the route's allow- and deny-lists on the
/// client's address, then unterminated to the service.
async fn pass_through<IO>(
    live: &Live,
    server: &TlsServer,
    hello: Vec<u8>,
    io: IO,
    info: &ConnInfo,
    route: usize,
    service: gatehouse_config::ServiceId,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let snapshot = live.snapshot.load_full();
    let (Some(route), Some(upstream)) = (
        snapshot.config.routes.get(route),
        snapshot.upstreams.get(service.0).cloned(),
    ) else {
        return;
    };
    if allow_list::check(route, info.peer_ip, &live.metrics).is_err() {
        return;
    }
    let (connect, access_log) = (snapshot.limits.connect, snapshot.config.access_log);
    // A passthrough connection may last for days: it must not keep this snapshot alive.
    drop(snapshot);
    server.passthrough_stats.connections.inc();
    let first = l4::tcp::First {
        bytes: hello,
        from_client: true,
    };
    let times = (connect, gatehouse_config::DEFAULT_TCP_IDLE);
    let stats = &server.passthrough_stats;
    let peer = SocketAddr::new(info.peer_ip, 0);
    l4::tcp::relay_to(
        &server.l4, stats, upstream, first, io, peer, times, access_log,
    )
    .await;
}

/// Completes the TLS handshake first on the HTTPS listener.
async fn serve_maybe_tls<IO>(
    shared: (Arc<Live>, Arc<Drain>),
    io: IO,
    mut info: ConnInfo,
    tls: Option<Arc<TlsServer>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(acceptor) = tls else {
        return serve(shared, io, info).await;
    };
    let live = &shared.0;
    let limit = live.snapshot.load().config.timeouts.request_header;
    let outcome = match tokio::time::timeout(limit, acceptor.accept(io)).await {
        Ok(Ok(Accepted::Passthrough {
            hello,
            io,
            route,
            service,
        })) => {
            return pass_through(live, &acceptor, hello, io, &info, route, service).await;
        }
        Ok(Ok(Accepted::Terminated(stream, client_auth))) => {
            let (_, session) = stream.get_ref();
            let sni = session.server_name().map(str::to_ascii_lowercase);
            let version = match session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLS",
            };
            let cert = live.snapshot.load().certs.for_sni(sni.as_deref()).cloned();
            let client_cert = client_auth.map(|policy| {
                let chain = session.peer_certificates().unwrap_or_default();
                policy.check(chain, rustls_pki_types::UnixTime::now())
            });
            info.tls = Some(TlsInfo {
                cert,
                version,
                client_cert,
            });
            Ok(stream)
        }
        Ok(Err(e)) => Err(("failure", e.to_string())),
        Err(_) => Err(("timeout", "no handshake within request_header".to_owned())),
    };
    match outcome {
        Ok(stream) => {
            live.metrics
                .tls_handshakes
                .with_label_values(&["success"])
                .inc();
            serve(shared, *stream, info).await
        }
        Err((result, why)) => {
            live.metrics
                .tls_handshakes
                .with_label_values(&[result])
                .inc();
            tracing::debug!(client = %info.peer_ip, error = why, "TLS handshake failed");
        }
    }
}

async fn serve<IO>((live, drain): (Arc<Live>, Arc<Drain>), stream: IO, info: ConnInfo)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer_ip;
    let info = Arc::new(info);
    let snapshot = live.snapshot.load_full();
    let io = TokioIo::new(CountingIo::new(stream, info.clone()));
    let (svc_live, svc_drain, svc_info) = (live.clone(), drain.clone(), info.clone());
    let service = hyper::service::service_fn(move |req| {
        Box::pin(request::handle(
            svc_live.clone(),
            svc_drain.clone(),
            svc_info.clone(),
            req,
        ))
    });
    let conn = snapshot
        .server
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    let t = &snapshot.config.timeouts;
    let watchdog = Watchdog::new(t.request_header, t.idle, t.client_write);
    drop(snapshot);
    let look = tokio::time::sleep_until(Instant::now());
    tokio::pin!(conn, look);
    let mut draining = false;
    // Set once the watchdog has cut the connection off: it gets [`CUT_GRACE`] to say
    // goodbye (HTTP/2 GOAWAY) before it is dropped.
    let mut cut = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
                }
                break;
            }
            // At the end of the drain delay for every connection; before, for an HTTP/2
            // connection whose request arrived during the drain (HTTP/1 answers say
            // `Connection: close` instead).
            _ = drain.closing.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = info.goaway.notified(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = info.flood.notified(), if !cut => {
                live.metrics.connections_cut.with_label_values(&["h2_control_flood"]).inc();
                if let Some(more) = FLOOD_WARNINGS.allow() {
                    tracing::warn!(client = %peer, similar_since_last = more, "an HTTP/2 client sent more than {CONTROL_FRAMES_PER_SECOND} SETTINGS/PING frames in a second; its connection is closed (GOAWAY). Nothing to do unless a real client does this");
                }
                draining = true;
                cut = true;
                conn.as_mut().graceful_shutdown();
                look.as_mut().reset(Instant::now() + CUT_GRACE);
            }
            () = look.as_mut() => match watchdog.check(&info.state, Instant::now()) {
                _ if cut => break,
                Ok(next) => look.as_mut().reset(next),
                Err(cutoff) => {
                    tracing::debug!(client = %peer, ?cutoff, "closing client connection");
                    live.metrics.connections_cut.with_label_values(&[cutoff.reason()]).inc();
                    if cutoff == Cutoff::SlowHeader {
                        // No request yet: nothing to say goodbye to.
                        break;
                    }
                    draining = true;
                    cut = true;
                    conn.as_mut().graceful_shutdown();
                    look.as_mut().reset(Instant::now() + CUT_GRACE);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PROXY protocol v2 signature.
    const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    proptest::proptest! {
        /// Whatever a peer sends where a PROXY header belongs (v1 text, v2 binary, or
        /// noise), reading it ends in a header or an error, never a panic or a hang.
        #[test]
        fn any_proxy_header_input_is_read_or_refused(
            prefix in proptest::sample::select(vec![&b"PROXY "[..], V2, b""]),
            rest in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let (mut client, server) = tokio::io::duplex(1024);
                let mut input = prefix.to_vec();
                input.extend_from_slice(&rest);
                tokio::io::AsyncWriteExt::write_all(&mut client, &input).await.unwrap();
                // The peer stops sending: an incomplete header must not wait forever.
                drop(client);
                let parse = ParseConfig { include_tlvs: true, ..ParseConfig::default() };
                let read = ProxiedStream::create_from_tokio(server, parse);
                let outcome = tokio::time::timeout(Duration::from_secs(5), read).await;
                proptest::prop_assert!(outcome.is_ok(), "reading hung on {:?}", input);
                Ok(())
            })?;
        }
    }
}
