//! Hold instead of fail: when no endpoint of a backend can take a request (all refusing,
//! black-holed or failing their checks, or none at all -- a single replica restarting, a
//! sidecar's app restarting), the request waits up to the backend's `hold_timeout` and goes as
//! soon as an endpoint is back.
//!
//! Waiting requests never poll the backend themselves, so a restart is not met by a connect
//! storm: endpoints come back through out-of-band probes (`reach.rs`), active health checks
//! (`probe.rs`) or discovery, and each of those *releases* every waiting request at once, as
//! does any successful answer. A waiter also looks again every `RECHECK` in case it
//! registered just after a release. So while a backend is down it receives no request at
//! all, only its probes: one connect per endpoint every `reach::PROBE_INTERVAL`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A waiting request looks for an endpoint again at least this often.
pub const RECHECK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Hold {
    released: Notify,
    waiting: AtomicUsize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    /// An endpoint came back, or a request to the backend succeeded: look now.
    Released,
    /// Nothing happened for `RECHECK`: look again anyway.
    Recheck,
    /// `until` passed.
    Expired,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hold {
    /// Wait for a reason to look for an endpoint again, or until `until`.
    pub async fn wait(&self, until: Instant) -> Woken {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        // Created first: a release from here on wakes it, even before it is polled.
        let released = self.released.notified();
        let now = Instant::now();
        if now >= until {
            return Woken::Expired;
        }
        let recheck = now + RECHECK;
        tokio::select! {
            _ = released => Woken::Released,
            _ = tokio::time::sleep_until(recheck.min(until)) => {
                if recheck < until { Woken::Recheck } else { Woken::Expired }
            }
        }
    }

    /// An endpoint may take requests again: let every waiting request look.
    pub fn release(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.released.notify_waiters();
        }
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn release_wakes_every_waiter() {
        let hold = Arc::new(Hold::default());
        let until = Instant::now() + Duration::from_secs(10);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let hold = Arc::clone(&hold);
                tokio::spawn(async move { hold.wait(until).await })
            })
            .collect();
        while hold.waiting() < 3 {
            tokio::task::yield_now().await;
        }
        hold.release();
        for w in waiters {
            assert_eq!(w.await.ok(), Some(Woken::Released));
        }
        assert_eq!(hold.waiting(), 0);
    }

    #[tokio::test]
    async fn rechecks_then_expires_at_until() {
        let hold = Hold::default();
        let until = Instant::now() + RECHECK + Duration::from_millis(50);
        assert_eq!(hold.wait(until).await, Woken::Recheck);
        assert_eq!(hold.wait(until).await, Woken::Expired);
        assert!(Instant::now() >= until);
    }
}
