//! The request body: streamed from the client to the upstream under the route's size limit,
//! telling whoever waits on the upload whether it moves, and who holds it up.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
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
    progress: Option<UploadProgress>,
}

/// Where an upload stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upload {
    /// The upstream connection has not asked for more (it is not reading, or the head is
    /// still on its way).
    WaitingForUpstream = 0,
    /// Asked for more; the client has not sent it yet.
    WaitingForClient = 1,
    /// All of it went to the upstream.
    Sent = 2,
}

/// An upload's progress, shared between the body and whoever waits on it.
pub(crate) type UploadProgress = Arc<UploadState>;

#[derive(Default)]
pub(crate) struct UploadState {
    moved: tokio::sync::Notify,
    phase: AtomicU8,
}

impl UploadState {
    pub(crate) fn phase(&self) -> Upload {
        match self.phase.load(Ordering::Relaxed) {
            0 => Upload::WaitingForUpstream,
            1 => Upload::WaitingForClient,
            _ => Upload::Sent,
        }
    }

    /// Resolves when a part of the body passed or the body ended.
    pub(crate) async fn moved(&self) {
        self.moved.notified().await;
    }

    fn set(&self, phase: Upload) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }
}

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
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            match &polled {
                Poll::Pending => progress.set(Upload::WaitingForClient),
                Poll::Ready(Some(Ok(_))) if !inner.is_end_stream() => {
                    progress.set(Upload::WaitingForUpstream);
                    progress.moved.notify_one();
                }
                Poll::Ready(_) => {
                    progress.set(Upload::Sent);
                    progress.moved.notify_one();
                }
            }
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
