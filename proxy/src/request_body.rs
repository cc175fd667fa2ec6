//! The request body: streamed from the client to the upstream under the route's size limit,
//! with a signal of its progress for the upstream's response timer.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The request body went past the route's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the route's max_body of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// A client's request body on its way to the upstream, cut off above `limit` bytes.
pub struct RequestBody {
    inner: Option<Incoming>,
    limit: u64,
    seen: u64,
    /// Told of every frame sent and of the end, while someone waits on the upload.
    progress: Option<Arc<tokio::sync::Notify>>,
}

/// Wakes whoever waits for an upload to move on: a frame passed, or the body ended.
pub(crate) type UploadProgress = Arc<tokio::sync::Notify>;

impl RequestBody {
    pub(crate) fn new(inner: Incoming, limit: u64) -> Self {
        RequestBody {
            inner: Some(inner),
            limit,
            seen: 0,
            progress: None,
        }
    }

    /// For a body still to be sent, a signal of its progress; `None` when there is none
    /// left (the upstream's answer is awaited from now on).
    pub(crate) fn watch_progress(&mut self) -> Option<UploadProgress> {
        if Body::is_end_stream(self) {
            return None;
        }
        let progress = self.progress.get_or_insert_with(Default::default);
        Some(progress.clone())
    }

    /// No body (a replayed request that had none).
    pub(crate) fn empty() -> Self {
        RequestBody {
            inner: None,
            limit: 0,
            seen: 0,
            progress: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let (Poll::Ready(_), Some(progress)) = (&polled, &this.progress) {
            progress.notify_one();
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
