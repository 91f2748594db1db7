//! `routes[].fault`: failures injected on purpose, to rehearse what the clients behind
//! hitless do when a proxy answers 502, answers late, or drops the connection (Envoy's fault
//! filter is the model). Off unless configured: a route without `fault:` never injects, and
//! ignores the `x-hitless-fault` header.

use std::time::Duration;

use http::StatusCode;

use super::errors::Errors;
use super::raw::RawFault;

/// A share of requests, in millionths (`percent: 0.5` is 5,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(pub u32);

impl Share {
    pub const WHOLE: u32 = 1_000_000;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultConfig {
    /// Answer this status instead of forwarding, to this share of requests.
    pub abort: Option<(StatusCode, Share)>,
    /// Wait this long before forwarding (or aborting), for this share of requests.
    pub delay: Option<(Duration, Share)>,
    /// Drop the client's connection (HTTP/2: reset the stream) without an answer.
    pub reset: Option<Share>,
    /// Honour `x-hitless-fault` on this route's requests.
    pub header: bool,
    /// Seed of the route's draws (a run repeats exactly); `None`: random.
    pub seed: Option<u64>,
}

/// The longest delay accepted: a rehearsal, not a way to hold connections for hours.
const MAX_DELAY: Duration = Duration::from_secs(300);

pub(super) fn parse(errors: &mut Errors, base: &str, raw: &RawFault) -> FaultConfig {
    let base = format!("{base}.fault");
    let abort = raw.abort.as_ref().and_then(|a| {
        let status = match a.status.map(StatusCode::from_u16) {
            Some(Ok(status)) if (200..=599).contains(&status.as_u16()) => status,
            Some(_) => {
                errors.push(
                    format!("{base}.abort.status"),
                    format!(
                        "expected a status from 200 to 599, got {}",
                        a.status.unwrap_or(0)
                    ),
                );
                return None;
            }
            None => {
                errors.push(
                    format!("{base}.abort.status"),
                    "missing: the status to answer (502 rehearses a bad gateway)",
                );
                return None;
            }
        };
        share(errors, &format!("{base}.abort.percent"), a.percent).map(|s| (status, s))
    });
    let delay = raw.delay.as_ref().and_then(|d| {
        let duration = match d.duration {
            Some(v) if !v.0.is_zero() && v.0 <= MAX_DELAY => v.0,
            Some(_) => {
                errors.push(
                    format!("{base}.delay.duration"),
                    "expected a duration above 0 and at most 5m",
                );
                return None;
            }
            None => {
                errors.push(
                    format!("{base}.delay.duration"),
                    "missing: how long to wait, like \"200ms\"",
                );
                return None;
            }
        };
        share(errors, &format!("{base}.delay.percent"), d.percent).map(|s| (duration, s))
    });
    let reset = raw
        .reset
        .as_ref()
        .and_then(|r| share(errors, &format!("{base}.reset.percent"), r.percent));
    FaultConfig {
        abort,
        delay,
        reset,
        header: raw.header.unwrap_or(true),
        seed: raw.seed,
    }
}

pub(super) fn share(errors: &mut Errors, path: &str, percent: Option<f64>) -> Option<Share> {
    match percent {
        Some(p) if (0.0..=100.0).contains(&p) => {
            // In range: the product is at most 1e6, exact enough for a share.
            Some(Share((p * 10_000.0).round() as u32))
        }
        Some(p) => {
            errors.push(
                path,
                format!("expected a percentage from 0 to 100, got {p}"),
            );
            None
        }
        None => {
            errors.push(path, "missing: the share of requests, like 5 (percent)");
            None
        }
    }
}
