//! A connection to an endpoint, ready for a request: HTTP/1.1 (one request at a time,
//! pooled between requests) or HTTP/2 (a stream on a connection shared by many requests).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use http::{header, Request, Response, Uri, Version};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2, TrySendError},
};

use crate::request_body::RequestBody;

/// The answer to a request sent on a [`Sender`], or the request back when it was never
/// written.
pub(crate) type ResponseFuture = Pin<
    Box<dyn Future<Output = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>> + Send>,
>;

enum Link {
    H1(http1::SendRequest<RequestBody>),
    /// One stream on a shared connection, counted there until this handle is dropped.
    H2(http2::SendRequest<RequestBody>, StreamSlot),
}

/// A connection ready for a request, with how many requests it carried (for
/// `upstream_keepalive.requests`).
pub(crate) struct Sender {
    link: Link,
    pub(crate) served: u32,
}

impl Sender {
    pub(crate) fn h1(inner: http1::SendRequest<RequestBody>) -> Self {
        Sender {
            link: Link::H1(inner),
            served: 0,
        }
    }

    /// A stream on a shared HTTP/2 connection, holding its place there.
    pub(crate) fn h2(inner: http2::SendRequest<RequestBody>, slot: StreamSlot) -> Self {
        Sender {
            link: Link::H2(inner, slot),
            served: 0,
        }
    }

    pub(crate) fn is_multiplexed(&self) -> bool {
        matches!(self.link, Link::H2(..))
    }

    pub(crate) fn is_ready(&self) -> bool {
        match &self.link {
            Link::H1(s) => s.is_ready(),
            Link::H2(s, _) => s.is_ready(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match &self.link {
            Link::H1(s) => s.is_closed(),
            Link::H2(s, _) => s.is_closed(),
        }
    }

    pub(crate) async fn ready(&mut self) -> hyper::Result<()> {
        match &mut self.link {
            Link::H1(s) => s.ready().await,
            Link::H2(s, _) => s.ready().await,
        }
    }

    /// Sends `req`. Over HTTP/2 its target becomes absolute (`:scheme` and `:authority`
    /// from the Host header, which HTTP/2 does not carry).
    pub(crate) fn try_send_request(&mut self, req: Request<RequestBody>) -> ResponseFuture {
        match &mut self.link {
            Link::H1(s) => Box::pin(s.try_send_request(req)),
            Link::H2(s, slot) => Box::pin(s.try_send_request(for_h2(req, slot.scheme))),
        }
    }
}

/// A stream's place on a shared HTTP/2 connection: counted in the connection's streams
/// until dropped.
pub(crate) struct StreamSlot {
    streams: Arc<AtomicUsize>,
    /// The scheme the connection's requests carry (`https` over TLS).
    scheme: &'static str,
}

impl StreamSlot {
    pub(crate) fn take(streams: &Arc<AtomicUsize>, scheme: &'static str) -> Self {
        streams.fetch_add(1, Ordering::AcqRel);
        StreamSlot {
            streams: streams.clone(),
            scheme,
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `req` in the form HTTP/2 sends it.
fn for_h2(mut req: Request<RequestBody>, scheme: &str) -> Request<RequestBody> {
    *req.version_mut() = Version::HTTP_2;
    if req.uri().authority().is_some() {
        return req;
    }
    let Some(host) = req.headers_mut().remove(header::HOST) else {
        return req;
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = Uri::builder()
        .scheme(scheme)
        .authority(host.as_bytes())
        .path_and_query(target)
        .build()
    {
        *req.uri_mut() = uri;
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_h2_request_carries_scheme_and_authority_not_host() {
        let req = Request::get("/a?b=1")
            .header("host", "app.internal:8443")
            .header("x-other", "kept")
            .body(RequestBody::empty())
            .unwrap();
        let req = for_h2(req, "https");
        assert_eq!(req.uri().to_string(), "https://app.internal:8443/a?b=1");
        assert_eq!(req.version(), Version::HTTP_2);
        assert!(req.headers().get("host").is_none());
        assert_eq!(req.headers()["x-other"], "kept");
    }
}
