//! Which replica writes: a `coordination.k8s.io/v1` Lease, held by one controller at a time
//! (client-go's leader election, in small). Every replica routes traffic from the same objects;
//! only the holder writes statuses and Events, so `kubectl get` shows one answer, written once.
//!
//! The holder renews every third of the lease's duration (each call bounded by that third).
//! Another replica takes the lease over when it has seen the same `resourceVersion` for a whole
//! duration (time measured on its own clock, so clock skew between nodes does not matter), with
//! an optimistic update: of two replicas trying at once, the API server accepts one. A holder
//! that cannot renew for two thirds of a duration (counted from before its last successful
//! request) stops leading, before anyone may take over. On shutdown the holder releases the lease so the next replica takes
//! over at once rather than after a duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A Lease to hold.
pub struct Election {
    pub api: Api<Lease>,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    pub duration: Duration,
}

/// What this replica last saw of someone else's lease.
struct Seen {
    version: Option<String>,
    since: Instant,
}

impl Election {
    /// Hold or wait for the lease until `shutdown`; `leading` says whether we hold it.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: CancellationToken) {
        let renew = self.duration / 3;
        // A holder that could not renew for this long steps down: well before another replica
        // may take over (a whole duration after the last renewal it saw).
        let deadline = self.duration * 2 / 3;
        let mut seen: Option<Seen> = None;
        let mut renewed: Option<Instant> = None;
        loop {
            // Timed from before the request: the API server may have stamped it any time since.
            let started = Instant::now();
            let attempt = tokio::time::timeout(renew, self.try_hold(&mut seen)).await;
            let held = match attempt {
                Ok(Ok(held)) => {
                    renewed = held.then_some(started);
                    held
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.name, "leader election: cannot read or write the Lease");
                    renewed.is_some_and(|at| at.elapsed() < deadline)
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "leader election: the API server did not answer in time");
                    renewed.is_some_and(|at| at.elapsed() < deadline)
                }
            };
            if *leading.borrow() != held {
                tracing::info!(identity = %self.identity, leading = held, "leader election: {}", if held { "this replica writes statuses and events" } else { "another replica writes statuses and events" });
                leading.send_replace(held);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(renew) => {}
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            self.release().await;
        }
    }

    /// One round: create, renew or take over the lease; whether we hold it now.
    async fn try_hold(&self, seen: &mut Option<Seen>) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && holder.is_some() {
            // Someone else's: theirs until its version stood still for a whole duration.
            let version = lease.metadata.resource_version.clone();
            let expired = match seen {
                Some(s) if s.version == version => s.since.elapsed() >= self.lease_of(spec),
                _ => {
                    *seen = Some(Seen {
                        version,
                        since: Instant::now(),
                    });
                    false
                }
            };
            if !expired {
                return Ok(false);
            }
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        // The resourceVersion read above makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                *seen = None;
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The holder's own duration (it may differ from ours during a rollout).
    fn lease_of(&self, spec: &LeaseSpec) -> Duration {
        spec.lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.duration)
    }

    /// Give the lease up (on shutdown): the next replica need not wait a duration.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "leader election: cannot release the Lease");
        }
    }
}

/// This replica's name in the Lease: the pod's (`POD_NAME`, from the downward API), else the
/// host name, with the process id.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "hitless".into());
    format!("{host}_{}", std::process::id())
}
