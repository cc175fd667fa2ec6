//! Sending a request to a service: pick an endpoint, reuse or open a connection, retry what
//! is safe to retry, and bound the wait for the response head.

use std::{io, sync::Arc, time::Duration};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{
    attempts::{Attempts, Failure},
    connection::{connection, NoConnection, Waits},
    sender::ResponseFuture,
    Endpoint, EndpointSet, Lease, Preference, Sender, Upstream,
};
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
    /// When a failed request goes to another endpoint.
    pub(crate) retry: gatehouse_config::Retry,
}

impl ForwardLimits {
    /// These limits with `route`'s own timeouts and retries.
    pub(crate) fn for_route(&self, route: &gatehouse_config::Route) -> ForwardLimits {
        let (route, retry) = (&route.timeouts, route.retry);
        ForwardLimits {
            retry,
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

/// A copy of a bodiless request's head, so it can be sent again: on a fresh connection
/// when a reused one turns out to have been closed by the upstream, or to another endpoint.
#[derive(Clone)]
struct Replay {
    method: Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    idempotent: bool,
}

/// A copy of `req` when it has no body, and is idempotent unless `non_idempotent` allows
/// any method. A request whose body streamed to the upstream cannot be sent again.
fn replay_of(req: &Request<RequestBody>, non_idempotent: bool) -> Option<Replay> {
    use http_body::Body;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    ((idempotent || non_idempotent) && req.body().is_end_stream()).then(|| Replay {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
        idempotent,
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
/// A failure goes to another endpoint when the route's retry policy says so for its kind
/// (connect error or timeout, a broken exchange, a slow head, a listed status), with tries
/// and time left, and the request can be sent again: nothing of it was written, or it is
/// bodiless and idempotent (any method with `non_idempotent`). A request that fails on a
/// reused connection before any response arrived is first sent once more on a fresh
/// connection to the same endpoint, when it was never written or is bodiless and
/// idempotent: the upstream had closed an idle connection, which says nothing of it.
pub(crate) async fn forward(
    upstream: &Upstream,
    endpoints: &EndpointSet,
    preference: Preference,
    mut req: Request<RequestBody>,
    limits: &ForwardLimits,
    metrics: &Metrics,
) -> Result<Forwarded, ProxyError> {
    let mut attempts = Attempts::new(limits.retry, endpoints.len());
    let mut stale_retry_left = true;
    let mut again_on: Option<usize> = None;
    let mut last_error = None;
    loop {
        let (idx, fresh_only) = match again_on.take() {
            Some(idx) => (idx, true),
            None => match upstream.pick(endpoints, attempts.tried(), preference) {
                Some(idx) => (idx, false),
                None => break,
            },
        };
        let endpoint = &endpoints[idx];
        let mut lease = Lease::new(endpoint.clone());
        let waits = Waits {
            connect: limits.connect,
            pool_idle: limits.pool_idle,
        };
        let acquired = connection(endpoint, waits, &upstream.limits, fresh_only).await;
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
                let why = match e.kind() {
                    io::ErrorKind::TimedOut => Failure::Timeout,
                    _ => Failure::Error,
                };
                let error = ProxyError::ConnectFailed {
                    service: upstream.name().to_owned(),
                    addr: endpoint.addr(),
                    source: e,
                };
                if !retried(&mut attempts, idx, why, upstream, metrics) {
                    return Err(error);
                }
                last_error = Some(error);
                continue;
            }
        };
        let reused = idle_for.is_some();
        let stale_replay = stale_retry_left && idle_for.is_some_and(|i| i >= REPLAY_AFTER_IDLE);
        let replay = if stale_replay || attempts.may_resend() {
            replay_of(&req, attempts.non_idempotent())
        } else {
            None
        };
        // HTTP/2: a stream the upstream refuses, or opened as it says GOAWAY, never reached
        // it; a bodiless request on it may go again whatever its method.
        let unprocessed_replay = match (endpoint.is_h2(), &replay) {
            (true, None) => replay_of(&req, true),
            _ => None,
        };
        let started = Instant::now();
        let upload = req.body_mut().watch_progress();
        let response: ResponseFuture = sender.try_send_request(req);
        let mut in_flight = InFlight {
            see_through: upload.is_none(),
            response: Some(response),
            sender: Some(sender),
            endpoint: endpoint.clone(),
            limits: *limits,
        };
        let sent = head_within(limits, upload, in_flight.response()).await;
        let sender = in_flight.settled();
        let failure = match sent {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                // The last try's answer is the client's, as in nginx.
                match replay {
                    Some(replay)
                        if attempts.retries_status(status)
                            && retried(
                                &mut attempts,
                                idx,
                                Failure::Status(status),
                                upstream,
                                metrics,
                            ) =>
                    {
                        req = replay.into_request();
                        continue;
                    }
                    _ => {}
                }
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
            Err(Stalled::Response) => (
                Failure::Timeout,
                ProxyError::UpstreamTimeout {
                    service: upstream.name().to_owned(),
                    addr: endpoint.addr(),
                    after: limits.response,
                },
            ),
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
                        continue;
                    }
                    let error = ProxyError::ConnectFailed {
                        service: upstream.name().to_owned(),
                        addr: endpoint.addr(),
                        source: io::Error::other(e.into_error()),
                    };
                    if !retried(&mut attempts, idx, Failure::Error, upstream, metrics) {
                        return Err(error);
                    }
                    last_error = Some(error);
                    continue;
                }
                if let Some(replay) = replay.as_ref().filter(|r| stale_replay && r.idempotent) {
                    stale_retry_left = false;
                    again_on = Some(idx);
                    req = replay.clone().into_request();
                    continue;
                }
                let error = e.into_error();
                if stale_retry_left && unprocessed(&error) {
                    if let Some(again) = replay.clone().or(unprocessed_replay) {
                        stale_retry_left = false;
                        again_on = Some(idx);
                        req = again.into_request();
                        continue;
                    }
                }
                if let Some(too_large) = find_cause::<BodyTooLarge>(&error) {
                    return Err(ProxyError::BodyTooLarge {
                        limit: too_large.limit,
                    });
                }
                (
                    Failure::Error,
                    ProxyError::Upstream {
                        service: upstream.name().to_owned(),
                        addr: endpoint.addr(),
                        source: error,
                    },
                )
            }
        };
        // The request reached the upstream and failed there: another endpoint gets it only
        // when it can be sent again in full.
        let (why, error) = failure;
        match replay {
            Some(replay) if retried(&mut attempts, idx, why, upstream, metrics) => {
                req = replay.into_request();
                last_error = Some(error);
            }
            _ => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| ProxyError::NoEndpoint {
        service: upstream.name().to_owned(),
    }))
}

/// Records that endpoint `idx` failed; whether the request goes on to another (counted).
fn retried(
    attempts: &mut Attempts,
    idx: usize,
    why: Failure,
    upstream: &Upstream,
    metrics: &Metrics,
) -> bool {
    let again = attempts.failed(idx, why);
    if again {
        metrics
            .retries
            .with_label_values(&[upstream.name(), why.label()])
            .inc();
    }
    again
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

/// Whether an HTTP/2 stream failed without the upstream processing it: refused
/// (REFUSED_STREAM), or above the last stream a GOAWAY said it would handle.
fn unprocessed(error: &hyper::Error) -> bool {
    find_cause::<h2::Error>(error).is_some_and(|e| {
        (e.is_go_away() && e.is_remote()) || e.reason() == Some(h2::Reason::REFUSED_STREAM)
    })
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

    fn route_fixture() -> gatehouse_config::Route {
        let yaml = "listen: { http: \"127.0.0.1:0\" }\nservices: { s: { endpoints: [] } }\nroutes: [{ host: a.test, paths: [{ path: /, service: s }] }]\n";
        gatehouse_config::parse(yaml, "t.yaml")
            .unwrap()
            .routes
            .remove(0)
    }

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
            retry: gatehouse_config::Retry::default(),
        };
        let route = gatehouse_config::RouteTimeouts {
            connect: Some(secs(1)),
            upstream_read: Some(secs(5)),
            ..Default::default()
        };
        let limits = global.for_route(&gatehouse_config::Route {
            timeouts: route,
            ..route_fixture()
        });
        assert_eq!((limits.connect, limits.read), (secs(1), secs(5)));
        assert_eq!(
            (limits.response, limits.send, limits.tunnel_idle),
            (secs(60), secs(60), secs(600))
        );
        assert_eq!((limits.client_body, limits.pool_idle), (secs(60), secs(4)));
    }
}
