//! Hold instead of fail: when no endpoint of a backend can take a request (all refusing or
//! ejected, or none at all -- a single replica restarting, a sidecar's app restarting), the
//! request waits up to the backend's `hold_timeout` and goes as soon as an endpoint is back.
//!
//! Waiting requests must not poll the dead backend themselves, or a restart would be met by a
//! connect storm. Per backend, one *probe* slot opens every `PROBE_INTERVAL`: the one waiting
//! request that claims it tries for real (a connect failure returns the request untouched, so
//! any method may probe); any success on the backend releases every waiter at once. So while
//! the backend is down it receives the new requests' first tries plus at most ten probes a
//! second, whatever the number of waiting requests (and probes also draw on the retry budget).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::runtime::clock::now_ms;

pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct Hold {
    released: Notify,
    waiting: AtomicUsize,
    next_probe_ms: AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    /// This request holds the probe slot: try now.
    Probe,
    /// A request to the backend succeeded: try now.
    Released,
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
    /// Wait for a reason to try again, or until `until`.
    pub async fn wait(&self, until: Instant) -> Woken {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        loop {
            // Registered before the checks, so a release between them is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let now = Instant::now();
            if now >= until {
                return Woken::Expired;
            }
            let now_ms = now_ms();
            let next = self.next_probe_ms.load(Ordering::Relaxed);
            if now_ms >= next
                && self
                    .next_probe_ms
                    .compare_exchange(
                        next,
                        now_ms + PROBE_INTERVAL.as_millis() as u64,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return Woken::Probe;
            }
            let wake = (now + Duration::from_millis(next.saturating_sub(now_ms).max(1))).min(until);
            tokio::select! {
                _ = released.as_mut() => return Woken::Released,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// A request to the backend succeeded: let every waiting request go.
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
    async fn one_probe_per_interval_and_release_wakes_all() {
        let hold = Arc::new(Hold::default());
        let until = Instant::now() + Duration::from_secs(10);
        assert_eq!(hold.wait(until).await, Woken::Probe);
        // The slot is taken for the interval: the next waiters wait, then are released.
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
        let mut woken = Vec::new();
        for w in waiters {
            woken.push(w.await.ok());
        }
        // At most one of them may have taken the next probe slot instead.
        let released = woken
            .iter()
            .filter(|w| **w == Some(Woken::Released))
            .count();
        assert!(released >= 2, "{woken:?}");
        assert_eq!(hold.waiting(), 0);
    }

    #[tokio::test]
    async fn expires_at_until() {
        let hold = Hold::default();
        hold.next_probe_ms.store(u64::MAX, Ordering::Relaxed);
        let until = Instant::now() + Duration::from_millis(50);
        assert_eq!(hold.wait(until).await, Woken::Expired);
        assert!(Instant::now() >= until);
    }
}
