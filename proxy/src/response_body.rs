//! The response body: made by the proxy or streamed from the upstream to the client, and
//! finishing the request's bookkeeping when it ends.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::completion::Completion;

enum Source {
    Full(Option<Bytes>),
    Upstream(Incoming),
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

    pub(crate) fn upstream(body: Incoming) -> Self {
        ResponseBody {
            source: Source::Upstream(body),
            completion: None,
        }
    }

    pub(crate) fn complete_with(&mut self, completion: Box<Completion>) {
        self.completion = Some(completion);
        if self.is_end_stream() {
            self.finish(true);
        }
    }

    fn finish(&mut self, clean: bool) {
        if let Some(c) = self.completion.take() {
            (*c).finish(clean);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(c)) = (frame.data_ref(), this.completion.as_mut()) {
                    c.bytes += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(bytes) => bytes.is_none(),
            Source::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Source::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}
