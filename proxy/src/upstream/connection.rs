//! A connection to an endpoint for one request: a pooled one, or a new one within the
//! service's connection limits, waiting briefly when they are reached.

use std::{io, sync::Arc, time::Duration};

use gatehouse_config::ConnectionLimits;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{net::TcpStream, time::Instant};

use super::{
    h2::{self, H2Conn},
    Endpoint, Sender,
};

/// How long getting a connection may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Waits {
    /// A new connection's connect, and the wait for one to come free at the limit.
    pub(crate) connect: Duration,
    /// Pooled connections idle longer than this are not reused.
    pub(crate) pool_idle: Duration,
}

/// Why no connection to an endpoint could be had.
pub(crate) enum NoConnection {
    /// Connecting failed: the endpoint's fault (or ours, for a descriptor shortage).
    Connect(io::Error),
    /// `max_connections` are busy and `max_pending` requests wait already, or none came
    /// free within the connect timeout.
    Overloaded,
}

/// A connection ready for a request: a pooled one (with how long it was idle) unless
/// `fresh_only`, else a new one while fewer than `max_connections` are open; at the limit,
/// the request waits (within the connect timeout) for one to come back.
pub(crate) async fn connection(
    endpoint: &Arc<Endpoint>,
    waits: Waits,
    connections: &ConnectionLimits,
    fresh_only: bool,
) -> Result<(Sender, Option<Duration>), NoConnection> {
    let deadline = Instant::now() + waits.connect;
    let mut waiting = None;
    if endpoint.is_h2() && !fresh_only {
        // A stream on an open connection counts as reused.
        if let Some(shared) = endpoint.shared_h2(connections.max_connections) {
            return Ok((shared, Some(Duration::ZERO)));
        }
    }
    loop {
        if !fresh_only {
            while let Some((mut sender, idle_for)) = endpoint.checkout(waits.pool_idle) {
                // The previous response was read to the end, so the connection is normally
                // ready at once; a closed one errors, and a wedged one is abandoned.
                if sender.is_ready() {
                    return Ok((sender, Some(idle_for)));
                }
                if let Ok(Ok(())) = tokio::time::timeout(waits.connect, sender.ready()).await {
                    return Ok((sender, Some(idle_for)));
                }
            }
        }
        if endpoint.reserve_connection(connections.max_connections) {
            // Boxed: a handshake's state is large, and most requests find a connection.
            return Box::pin(open(endpoint, waits.connect))
                .await
                .map(|sender| (sender, None))
                .map_err(|e| {
                    endpoint.connection_closed();
                    NoConnection::Connect(e)
                });
        }
        if waiting.is_none() {
            waiting = Some(
                endpoint
                    .wait_in_line(connections.max_pending)
                    .ok_or(NoConnection::Overloaded)?,
            );
        }
        let freed = endpoint.freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        // Look once more now that a release cannot slip by unnoticed.
        let idle_now = !fresh_only && endpoint.idle_connections() > 0;
        if idle_now || endpoint.open_connections() < connections.max_connections {
            continue;
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(NoConnection::Overloaded);
        }
    }
}

/// Opens a new connection (already counted in the endpoint's open connections): TCP, and
/// the TLS handshake for an endpoint that wants one, together within `connect`.
async fn open(endpoint: &Arc<Endpoint>, connect: Duration) -> io::Result<Sender> {
    let addr = endpoint.addr();
    let connected = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match endpoint.transport() {
            None => Ok(Either::Left(stream)),
            Some(tls) => tls.connect(stream, addr).await.map(Either::Right),
        }
    };
    let stream = tokio::time::timeout(connect, connected)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let sender = match (stream, endpoint.is_h2()) {
        (Either::Left(plain), false) => handshake(endpoint, plain).await?,
        (Either::Right(tls), false) => handshake(endpoint, tls).await?,
        (Either::Left(plain), true) => handshake_h2(endpoint, plain, false).await?,
        (Either::Right(tls), true) => handshake_h2(endpoint, tls, true).await?,
    };
    endpoint.connect_succeeded();
    Ok(sender)
}

/// HTTP/2 over `io`, shared by the endpoint from now on (see [`super::h2`] for its
/// stream limit and windows). Pings keep it known alive (and find a dead one) while idle.
async fn handshake_h2<IO>(endpoint: &Arc<Endpoint>, io: IO, tls: bool) -> io::Result<Sender>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(h2::STREAM_WINDOW)
        .initial_connection_window_size(h2::CONNECTION_WINDOW)
        .handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    let (shared, max_streams) = H2Conn::new(send, tls);
    let closes = endpoint.clone();
    tokio::spawn(async move {
        // GOAWAY and errors surface to requests through their handles. The stream limit
        // follows the upstream's SETTINGS as they come.
        let mut conn = std::pin::pin!(conn);
        let _ = std::future::poll_fn(|cx| {
            let polled = std::future::Future::poll(conn.as_mut(), cx);
            let allowed = H2Conn::allowed(conn.current_max_send_streams());
            max_streams.store(allowed, std::sync::atomic::Ordering::Release);
            polled
        })
        .await;
        closes.connection_closed();
    });
    let sender = shared.stream();
    endpoint.share_h2(shared);
    Ok(sender)
}

/// A plain or a TLS stream.
enum Either<A, B> {
    Left(A),
    Right(B),
}

/// HTTP/1.1 over `io`; the connection task counts itself closed when it ends.
async fn handshake<IO>(endpoint: &Arc<Endpoint>, io: IO) -> io::Result<Sender>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    let closes = endpoint.clone();
    tokio::spawn(async move {
        // Errors here surface to the request through the sender; nothing to add.
        let _ = conn.with_upgrades().await;
        closes.connection_closed();
    });
    Ok(Sender::h1(sender))
}
