//! Sending a request to a service: pick an endpoint, reuse or open a connection, retry what
//! is safe to retry, and bound the wait for the response head.

use std::{io, sync::Arc, time::Duration};

use http::{Method, Request, Response};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

use gatehouse_config::ConnectionLimits;

use super::{Endpoint, EndpointSet, Lease, Preference, Sender, Upstream, MAX_TRIES};
use crate::{
    error::ProxyError,
    metrics::Metrics,
    request_body::{BodyTooLarge, RequestBody, Upload, UploadProgress},
};

/// Time bounds for one forward: the configuration's `timeouts`, with a route's own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardLimits {
    pub(crate) connect: Duration,
    /// The response head, once the request is sent.
    pub(crate) response: Duration,
    /// Between two reads of the response body.
    pub(crate) read: Duration,
    /// The upstream takes none of the request body.
    pub(crate) send: Duration,
    /// The client sends none of its request body.
    pub(crate) client_body: Duration,
    /// An upgraded connection's silence.
    pub(crate) tunnel_idle: Duration,
    /// Pooled connections idle longer than this are not reused.
    pub(crate) pool_idle: Duration,
}

impl ForwardLimits {
    /// These limits with `route`'s own timeouts.
    pub(crate) fn for_route(&self, route: &gatehouse_config::RouteTimeouts) -> ForwardLimits {
        ForwardLimits {
            connect: route.connect.unwrap_or(self.connect),
            response: route.upstream_response.unwrap_or(self.response),
            read: route.upstream_read.unwrap_or(self.read),
            send: route.upstream_send.unwrap_or(self.send),
            tunnel_idle: route.tunnel_idle.unwrap_or(self.tunnel_idle),
            ..*self
        }
    }
}

/// An upstream's response head, with the endpoint lease that the response body completes.
pub(crate) struct Forwarded {
    pub(crate) response: Response<Incoming>,
    pub(crate) lease: Lease,
    pub(crate) upstream_time: Duration,
    /// Which endpoint of the set answered.
    pub(crate) endpoint: usize,
}

/// A pooled connection idle for less than this is not copied for a replay: upstream servers
/// close idle keep-alive connections after a second or more (gunicorn 2 s, Node.js 5 s,
/// nginx 75 s), so one that carried a response this recently is not about to be closed for
/// idleness, and copying every request's headers would cost every request.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A copy of a bodiless idempotent request's head, so it can be sent again if a reused
/// connection turns out to have been closed by the upstream.
struct Replay {
    method: Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

fn replay_of(req: &Request<RequestBody>) -> Option<Replay> {
    use http_body::Body;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    (idempotent && req.body().is_end_stream()).then(|| Replay {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    })
}

impl Replay {
    fn into_request(self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::empty());
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Sends `req` to one of `endpoints` (the upstream's set, loaded once for the request),
/// the `preference` first.
///
/// A failed connect moves on to another endpoint (at most [`MAX_TRIES`] in all). A request
/// that fails on a reused connection before any response arrived is sent once more on a
/// fresh connection, when it was never written or is bodiless and idempotent.
pub(crate) async fn forward(
    upstream: &Upstream,
    endpoints: &EndpointSet,
    preference: Preference,
    mut req: Request<RequestBody>,
    limits: &ForwardLimits,
    metrics: &Metrics,
) -> Result<Forwarded, ProxyError> {
    let mut tried = [usize::MAX; MAX_TRIES];
    let mut tries = 0;
    let mut stale_retry_left = true;
    let mut again_on: Option<usize> = None;
    let mut last_connect_error = None;
    loop {
        let (idx, fresh_only) = match again_on.take() {
            Some(idx) => (idx, true),
            None => {
                if tries == MAX_TRIES {
                    break;
                }
                match upstream.pick(endpoints, &tried[..tries], preference) {
                    Some(idx) => (idx, false),
                    None => break,
                }
            }
        };
        let endpoint = &endpoints[idx];
        let mut lease = Lease::new(endpoint.clone());
        let acquired = connection(endpoint, limits, &upstream.limits, fresh_only).await;
        let (mut sender, idle_for) = match acquired {
            Ok(c) => c,
            Err(NoConnection::Overloaded) => {
                return Err(ProxyError::Overloaded {
                    service: upstream.name().to_owned(),
                    addr: endpoint.addr(),
                    max_connections: upstream.limits.max_connections,
                })
            }
            Err(NoConnection::Connect(e)) if super::out_of_descriptors(&e) => {
                // Every other endpoint would fail the same way: answer now, eject nobody.
                return Err(ProxyError::OutOfDescriptors { source: e });
            }
            Err(NoConnection::Connect(e)) => {
                upstream.connect_failed(endpoint, metrics, &e);
                tried[tries] = idx;
                tries += 1;
                last_connect_error = Some((endpoint.addr(), e));
                continue;
            }
        };
        let reused = idle_for.is_some();
        let replay = match idle_for {
            Some(idle) if stale_retry_left && idle >= REPLAY_AFTER_IDLE => replay_of(&req),
            _ => None,
        };
        let started = Instant::now();
        let upload = req.body_mut().watch_progress();
        let response: ResponseFuture = Box::pin(sender.try_send_request(req));
        let mut in_flight = InFlight {
            see_through: upload.is_none(),
            response: Some(response),
            sender: Some(sender),
            endpoint: endpoint.clone(),
            limits: *limits,
        };
        let sent = head_within(limits, upload, in_flight.response()).await;
        let sender = in_flight.settled();
        match sent {
            Ok(Ok(response)) => {
                if let Some(sender) = sender {
                    lease.keep(sender);
                }
                let upstream_time = started.elapsed();
                if *upstream.balance() == gatehouse_config::Balance::Ewma {
                    endpoint.observe_latency(upstream_time);
                }
                return Ok(Forwarded {
                    response,
                    lease,
                    upstream_time,
                    endpoint: idx,
                });
            }
            Err(Stalled::Response) => {
                return Err(ProxyError::UpstreamTimeout {
                    service: upstream.name().to_owned(),
                    addr: endpoint.addr(),
                    after: limits.response,
                })
            }
            Err(Stalled::UpstreamNotReading) => {
                return Err(ProxyError::UpstreamSendTimeout {
                    service: upstream.name().to_owned(),
                    addr: endpoint.addr(),
                    after: limits.send,
                })
            }
            Err(Stalled::ClientNotSending) => {
                return Err(ProxyError::ClientBodyTimeout {
                    after: limits.client_body,
                })
            }
            Ok(Err(mut e)) => {
                if let Some(unsent) = e.take_message() {
                    // Never written: safe to send anywhere. A reused connection was stale;
                    // a fresh one that closed at once counts as a failed connect.
                    req = unsent;
                    if reused && stale_retry_left {
                        stale_retry_left = false;
                        again_on = Some(idx);
                    } else {
                        tried[tries] = idx;
                        tries += 1;
                        last_connect_error =
                            Some((endpoint.addr(), io::Error::other(e.into_error())));
                    }
                    continue;
                }
                if let Some(replay) = replay {
                    stale_retry_left = false;
                    again_on = Some(idx);
                    req = replay.into_request();
                    continue;
                }
                let error = e.into_error();
                if let Some(too_large) = find_cause::<BodyTooLarge>(&error) {
                    return Err(ProxyError::BodyTooLarge {
                        limit: too_large.limit,
                    });
                }
                return Err(ProxyError::Upstream {
                    service: upstream.name().to_owned(),
                    addr: endpoint.addr(),
                    source: error,
                });
            }
        }
    }
    match last_connect_error {
        Some((addr, source)) => Err(ProxyError::ConnectFailed {
            service: upstream.name().to_owned(),
            addr,
            source,
        }),
        None => Err(ProxyError::NoEndpoint {
            service: upstream.name().to_owned(),
        }),
    }
}

/// A request sent on a connection, until its response head arrives. Dropped before that
/// (the client reset its stream or closed its connection), a request whose body is all
/// sent is seen through in the background and its connection returned to the pool, as
/// long as the answer is small and timely: otherwise every cancelled request would cost
/// a connection, and a client resetting streams would have Gatehouse open thousands to
/// its own upstream.
struct InFlight {
    response: Option<ResponseFuture>,
    sender: Option<Sender>,
    endpoint: Arc<Endpoint>,
    /// Nothing of the request is left to send, so the exchange can finish without it.
    see_through: bool,
    limits: ForwardLimits,
}

type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    Response<Incoming>,
                    hyper::client::conn::TrySendError<Request<RequestBody>>,
                >,
            > + Send,
    >,
>;

/// The most of an abandoned response read to keep its connection.
const SEE_THROUGH_MAX_BODY: u64 = 64 * 1024;

impl InFlight {
    fn response(&mut self) -> &mut ResponseFuture {
        self.response.as_mut().expect("awaited before it settled")
    }

    /// The exchange came to an end here: the connection, for the pool if it is reusable.
    fn settled(&mut self) -> Option<Sender> {
        self.response = None;
        self.sender.take()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let (Some(response), Some(sender), true) =
            (self.response.take(), self.sender.take(), self.see_through)
        else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (endpoint, limits) = (self.endpoint.clone(), self.limits);
        runtime.spawn(async move {
            let Ok(Ok(response)) = tokio::time::timeout(limits.response, response).await else {
                return;
            };
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                return;
            }
            let mut body = response.into_body();
            let mut read = 0u64;
            loop {
                use http_body_util::BodyExt;
                match tokio::time::timeout(limits.read, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        read += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if read > SEE_THROUGH_MAX_BODY {
                            return;
                        }
                    }
                    Ok(None) => break,
                    _ => return,
                }
            }
            endpoint.release(sender);
        });
    }
}

/// Which wait ran out before the response head came.
#[derive(Debug, PartialEq, Eq)]
enum Stalled {
    /// The request was sent; the head did not come within `response`.
    Response,
    /// The upstream took none of the request body for `send`.
    UpstreamNotReading,
    /// The client sent none of its request body for `client_body`.
    ClientNotSending,
}

/// Waits for the response head. While the body uploads, the wait is for the upload to
/// move: the client gets `client_body` for each part it sends and the upstream `send` to
/// take it; the upstream's `response` starts once the body is sent. An upstream is not
/// blamed for a slow client, nor a client for a slow upstream.
async fn head_within<F: std::future::Future>(
    limits: &ForwardLimits,
    upload: Option<UploadProgress>,
    response: F,
) -> Result<F::Output, Stalled> {
    let Some(upload) = upload else {
        return tokio::time::timeout(limits.response, response)
            .await
            .map_err(|_| Stalled::Response);
    };
    tokio::pin!(response);
    let mut moved = Instant::now();
    let wait = |phase| match phase {
        Upload::WaitingForClient => (limits.client_body, Stalled::ClientNotSending),
        Upload::WaitingForUpstream => (limits.send, Stalled::UpstreamNotReading),
        Upload::Sent => (limits.response, Stalled::Response),
    };
    loop {
        let (limit, _) = wait(upload.phase());
        tokio::select! {
            out = &mut response => return Ok(out),
            () = upload.moved() => moved = Instant::now(),
            () = tokio::time::sleep_until(moved + limit) => {
                // The phase may have changed meanwhile: judge by the one it is in now.
                let (limit, stalled) = wait(upload.phase());
                if Instant::now() >= moved + limit {
                    return Err(stalled);
                }
            }
        }
    }
}

/// Why no connection to an endpoint could be had.
enum NoConnection {
    /// Connecting failed: the endpoint's fault (or ours, for a descriptor shortage).
    Connect(io::Error),
    /// `max_connections` are busy and `max_pending` requests wait already, or none came
    /// free within the connect timeout.
    Overloaded,
}

/// A connection ready for a request: a pooled one (with how long it was idle) unless
/// `fresh_only`, else a new one while fewer than `max_connections` are open; at the limit,
/// the request waits (within the connect timeout) for one to come back.
async fn connection(
    endpoint: &Arc<Endpoint>,
    limits: &ForwardLimits,
    connections: &ConnectionLimits,
    fresh_only: bool,
) -> Result<(Sender, Option<Duration>), NoConnection> {
    let deadline = Instant::now() + limits.connect;
    let mut waiting = None;
    loop {
        if !fresh_only {
            while let Some((mut sender, idle_for)) = endpoint.checkout(limits.pool_idle) {
                // The previous response was read to the end, so the connection is normally
                // ready at once; a closed one errors, and a wedged one is abandoned.
                if sender.is_ready() {
                    return Ok((sender, Some(idle_for)));
                }
                if let Ok(Ok(())) = tokio::time::timeout(limits.connect, sender.ready()).await {
                    return Ok((sender, Some(idle_for)));
                }
            }
        }
        if endpoint.reserve_connection(connections.max_connections) {
            return open(endpoint, limits)
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

/// Opens a new connection (already counted in the endpoint's open connections).
async fn open(endpoint: &Arc<Endpoint>, limits: &ForwardLimits) -> io::Result<Sender> {
    let stream = tokio::time::timeout(limits.connect, TcpStream::connect(endpoint.addr()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    let closes = endpoint.clone();
    tokio::spawn(async move {
        // Errors here surface to the request through the sender; nothing to add.
        let _ = conn.with_upgrades().await;
        closes.connection_closed();
    });
    endpoint.connect_succeeded();
    Ok(sender)
}

fn find_cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routes_own_timeouts_replace_the_configurations_and_only_those() {
        let secs = Duration::from_secs;
        let global = ForwardLimits {
            connect: secs(3),
            response: secs(60),
            read: secs(60),
            send: secs(60),
            client_body: secs(60),
            tunnel_idle: secs(600),
            pool_idle: secs(4),
        };
        let route = gatehouse_config::RouteTimeouts {
            connect: Some(secs(1)),
            upstream_read: Some(secs(5)),
            ..Default::default()
        };
        let limits = global.for_route(&route);
        assert_eq!((limits.connect, limits.read), (secs(1), secs(5)));
        assert_eq!(
            (limits.response, limits.send, limits.tunnel_idle),
            (secs(60), secs(60), secs(600))
        );
        assert_eq!((limits.client_body, limits.pool_idle), (secs(60), secs(4)));
    }
}
