//! A request's hold on an endpoint: `Lease` (the right to one outstanding request, counted in
//! the endpoint's in-flight requests for P2C, and the connection carrying it) and
//! `UpstreamBody` (the endpoint's response body, which releases the lease when it ends: its
//! connection goes back to the pool only when the body was read to the end).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::endpoints::Endpoint;
use super::pool::Conn;

/// The right to one outstanding request on an endpoint, and the connection carrying it.
/// Dropping it releases the outstanding count; `release(true)` also pools the connection.
pub struct Lease {
    endpoint: Arc<Endpoint>,
    conn: Option<Conn>,
}

impl Lease {
    pub fn new(endpoint: Arc<Endpoint>) -> Lease {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            endpoint,
            conn: None,
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    pub fn attach(&mut self, conn: Conn) {
        self.conn = Some(conn);
    }

    /// End of the exchange: pool the connection when its response was read to the end.
    pub fn release(mut self, reusable: bool) {
        if let Some(conn) = self.conn.take() {
            if reusable {
                self.endpoint.pool.local().checkin(conn);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An endpoint's response body. When it has been read to the end, its connection goes back to
/// the endpoint's pool; when it is dropped early, the connection is dropped with it (hyper
/// cannot reuse an HTTP/1.1 connection with an unread body). Either way the endpoint's
/// outstanding-request count is released here, so load balancing sees streaming responses as
/// outstanding until they finish.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
    ended: bool,
}

impl UpstreamBody {
    pub(super) fn new(inner: Incoming, lease: Lease) -> UpstreamBody {
        UpstreamBody {
            inner,
            lease: Some(lease),
            ended: false,
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release(self.ended || self.inner.is_end_stream());
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
