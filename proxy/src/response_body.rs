//! The response body: made by the proxy or streamed from the upstream to the client, and
//! finishing the request's bookkeeping when it ends, however it ends.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::completion::{Completion, Ending};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream sent nothing of its response body for `after`; the response is cut.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {after:?} in the middle of its response")]
pub(crate) struct UpstreamStalled {
    after: Duration,
}

/// An upstream body, cut when it stalls for longer than `read`.
struct Upstream {
    body: Incoming,
    read: Duration,
    /// Armed when the body has nothing ready; made on the first wait only, so a response
    /// that arrives whole costs no timer.
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Counted in its connection's relayed bodies (see [`crate::conn::ConnState`]).
    counted: bool,
}

enum Source {
    Full(Option<Bytes>),
    Upstream(Upstream),
}

/// A response body for the client: either made by the proxy or streamed from the upstream.
/// When it ends (or is dropped) it completes the request: metrics, access log, and the
/// upstream connection back to its pool.
pub struct ResponseBody {
    source: Source,
    completion: Option<Box<Completion>>,
}

impl ResponseBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody {
            source: Source::Full(Some(bytes.into())),
            completion: None,
        }
    }

    pub(crate) fn empty() -> Self {
        ResponseBody {
            source: Source::Full(None),
            completion: None,
        }
    }

    /// The upstream's body, cut after `read` without a byte.
    pub(crate) fn upstream(body: Incoming, read: Duration) -> Self {
        ResponseBody {
            source: Source::Upstream(Upstream {
                body,
                read,
                stall: None,
                armed: false,
                counted: false,
            }),
            completion: None,
        }
    }

    pub(crate) fn complete_with(&mut self, completion: Box<Completion>) {
        if self.is_end_stream() {
            return completion.finish(Ending::Complete);
        }
        if let Source::Upstream(upstream) = &mut self.source {
            completion.conn.state.body_opened();
            upstream.counted = true;
        }
        self.completion = Some(completion);
    }

    fn finish(&mut self, ending: Ending) {
        if let Some(c) = self.completion.take() {
            if let Source::Upstream(upstream) = &mut self.source {
                if std::mem::take(&mut upstream.counted) {
                    c.conn.state.body_closed(upstream.armed);
                }
            }
            (*c).finish(ending);
        }
    }
}

impl Upstream {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + self.read;
                let stall = match &mut self.stall {
                    Some(stall) if self.armed => stall,
                    Some(stall) => {
                        stall.as_mut().reset(deadline);
                        stall
                    }
                    None => self
                        .stall
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                self.armed = true;
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(UpstreamStalled { after: self.read }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(upstream) => {
                let waited = upstream.armed;
                let polled = upstream.poll_frame(cx);
                if let (true, Some(c)) = (upstream.counted, &this.completion) {
                    let state = &c.conn.state;
                    if waited != upstream.armed {
                        state.body_awaits_upstream(upstream.armed);
                    }
                    if polled.is_ready() {
                        state.body_moved();
                    }
                }
                polled
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(c)) = (frame.data_ref(), this.completion.as_mut()) {
                    c.bytes += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(Ending::Complete);
                }
            }
            Poll::Ready(None) => this.finish(Ending::Complete),
            Poll::Ready(Some(Err(e))) => this.finish(if e.is::<UpstreamStalled>() {
                Ending::UpstreamStalled
            } else {
                Ending::UpstreamFailed
            }),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(bytes) => bytes.is_none(),
            Source::Upstream(upstream) => upstream.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Source::Upstream(upstream) => upstream.body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or was cut off) mid-response.
        self.finish(Ending::ClientGone);
    }
}
