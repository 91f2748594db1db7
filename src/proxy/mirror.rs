//! `routes[].mirror` (Gateway API's `RequestMirror`): a copy of a request goes to another
//! backend as well, for shadow traffic (a new version tried on real requests, a load test fed
//! by production). The copy is fire and forget: the client's exchange never waits for it, its
//! answer is read and dropped as it comes (never held: a mirror serving large files costs a
//! buffer, not the files), and a slow or broken mirror costs the client nothing. A bounded
//! number of copies are in flight to a mirror backend, whatever the number of routes that
//! mirror to it (a Gateway API rule becomes a route per match and hostname); beyond it copies
//! are dropped, and counted.
//! A request whose body is not held in memory (longer than `retry.max_replay_bytes`, or
//! streamed) is not copied (`skipped`): copying it would mean holding it, or slowing the
//! client to the mirror's pace.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::config::fault::Share;
use crate::runtime::metrics::MirrorCounters;
use crate::runtime::random::random_below;
use crate::upstream::body::RequestBody;
use crate::upstream::{Backend, SendOptions};

/// Copies in flight to one mirror backend at most.
const IN_FLIGHT: usize = 64;

pub struct Mirror {
    pub backend: Arc<Backend>,
    share: Share,
    /// How long a copy may take, its answer's body included.
    timeout: Duration,
    slots: Arc<Semaphore>,
    counters: MirrorCounters,
}

impl Mirror {
    pub fn new(
        backend: Arc<Backend>,
        share: Share,
        timeout: Duration,
        counters: MirrorCounters,
    ) -> Mirror {
        Mirror {
            share,
            timeout,
            slots: Arc::clone(
                backend
                    .copies
                    .get_or_init(|| Arc::new(Semaphore::new(IN_FLIGHT))),
            ),
            counters,
            backend,
        }
    }

    /// Whether this request is one of the share copied (one draw).
    pub fn draw(&self) -> bool {
        self.share.0 >= Share::WHOLE || random_below(Share::WHOLE as usize) < self.share.0 as usize
    }

    /// Send `copy` (`None`: the body is not held, nothing to send) in the background.
    pub fn send(&self, copy: Option<Request<RequestBody>>) {
        let Some(mut copy) = copy else {
            self.counters.skipped.inc();
            return;
        };
        // Marked, so that the application it reaches can tell a copy from the request (and
        // skip side effects: a second charge, a second email). Envoy renames the Host
        // instead, which breaks an application that routes on it.
        copy.headers_mut().insert(
            http::HeaderName::from_static(super::headers::MIRROR_MARK),
            http::HeaderValue::from_static("1"),
        );
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.counters.dropped.inc();
            return;
        };
        let backend = Arc::clone(&self.backend);
        let counters = self.counters.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            let exchange = async {
                let endpoint = backend.pick_excluding(&[])?;
                let exchange = backend
                    .send(&endpoint, copy, SendOptions::default())
                    .await
                    .ok()?;
                // Read to the end, so that the connection goes back to the pool; each frame
                // dropped as it comes.
                let mut body = exchange.response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.ok()?;
                }
                Some(())
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Some(_)) => counters.answered.inc(),
                Ok(None) | Err(_) => counters.failed.inc(),
            };
            drop(slot);
        });
    }
}
