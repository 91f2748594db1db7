//! The request body that crosses the boundary to an endpoint: `RequestBody` (what a pooled
//! connection sends; one concrete type so that `SendRequest<RequestBody>` can be pooled). The
//! response body, which hands its connection back to the pool, is `lease::UpstreamBody`.
//!
//! Bodies stream: a frame is forwarded when it arrives and the next one is read only when the
//! other side accepted it, so memory per request is a few hyper buffers, whatever the size.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body on its way to a backend.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed as it arrives.
    Streaming(Incoming),
    /// A body held in memory: replayable on retry (`retry.max_replay_bytes`).
    Full(Option<Bytes>),
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody::Full(None)
    }
}

impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        if b.is_empty() {
            RequestBody::Full(None)
        } else {
            RequestBody::Full(Some(b))
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Streaming(inner) => Pin::new(inner).poll_frame(cx),
            RequestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming(inner) => inner.is_end_stream(),
            RequestBody::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming(inner) => inner.size_hint(),
            RequestBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            RequestBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}
