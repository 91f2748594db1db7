//! `hitless doctor`: probes a backend's endpoints from where hitless runs and says, one line
//! per check, what would turn into 502s and which setting fixes it. `hitless lint` reads
//! manifests; the doctor asks the real servers. This module owns the public API ([`Options`],
//! [`run`]) and the order of the checks; each check lives in the file named after what it
//! looks at:
//!
//! | file | checks (line names) |
//! |---|---|
//! | `connect.rs` | `connect`: refused, SYNs unanswered within `connect_timeout` (a black hole), latency |
//! | `speaks.rs` | `protocol`: plaintext HTTP/1.1, h2c, TLS (ALPN) against the configured `protocol` |
//! | `tls.rs`, `certificate.rs` | `tls`, `certificate` (names, expiry), `verify` (CA, server name) |
//! | `health.rs` | `health` (the health path's status) or `grpc-health`; `header-size` |
//! | `keepalive.rs` | `keep-alive-header`, `idle-timeout` (measured), `reuse` (closes after each or N) |
//! | `websocket.rs` | `websocket` (with `--websocket PATH`) |
//! | `discover.rs` | `endpoints`: a discovered backend's endpoints, resolved once |
//!
//! `targets.rs` turns a URL or a config into what is probed and compared against;
//! `exchange.rs` is the wire (HTTP/1.1 as bytes, HTTP/2 through hyper); `report.rs` renders.
//!
//! # Decisions
//!
//! - **Verdicts**: `FAIL` means requests through hitless would fail (a 502, or an endpoint kept
//!   out of rotation), `warn` that something costs or may fail later, `ok` that it matches.
//!   Exit 1 on any FAIL, 0 otherwise; 64 for a bad URL, flag value or config (before any
//!   packet is sent).
//! - **What is compared against**: with `--config`, each backend's own settings
//!   (`protocol`, `connect_timeout`, `pool.idle_timeout`, `tls`, `health_check`) and
//!   `limits.max_response_header_bytes`; with a URL, hitless's defaults for the scheme's
//!   protocol (connect 1 s, pool idle 1.5 s, 64 KiB heads), the URL's path as the probe path
//!   (for `grpc://`/`grpcs://`, the path names the health service; `/` the whole server),
//!   `--ca-file`/`--server-name` (default: the public roots and the URL's host) for TLS. Fixes
//!   are settings as written in the config file (`backends.api.pool.idle_timeout: 1500ms`);
//!   with a URL the backend is `<name>`. Where no hitless setting helps, the fix says
//!   `(the app) ...`.
//! - **The probe path**: a backend's `health_check.path`, else `/`.
//! - **Order and concurrency**: per endpoint, `connect`, then the three protocol questions at
//!   once, then the idle probe, the request series and the WebSocket handshake at once, each
//!   on its own connection; endpoints are probed concurrently (at most
//!   [`CONCURRENT_ENDPOINTS`] at a time), so a run lasts about `--idle-probe` plus a few
//!   seconds.
//! - **Bounds**: at most 16 endpoints per backend (the rest reported as skipped), 12 requests
//!   in the series, about 18 requests and 6 connections per endpoint; every connect has the
//!   backend's `connect_timeout`, every answer 2 s, the series 6 s, the idle probe
//!   `--idle-probe` (default 10 s), a resolution 5 s; each endpoint as a whole is cut at the
//!   sum ([`endpoint_bound`]) with a FAIL line saying so.
//! - **Hostile servers**: nothing read from the network is unwrapped or indexed; heads and
//!   bodies are read up to a cap.

mod certificate;
pub mod command;
mod connect;
mod discover;
mod exchange;
mod health;
mod keepalive;
mod report;
mod speaks;
mod targets;
mod tls;
mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture, FutureExt};
use tokio::sync::Semaphore;

pub use command::DoctorArgs;
pub use report::{Finding, Group, Report, Verdict};

use crate::config::Config;
use exchange::{Ask, ANSWER_TIMEOUT};
use targets::{Settings, Source};

/// Endpoints probed at the same time.
pub const CONCURRENT_ENDPOINTS: usize = 64;
/// The default `--idle-probe`.
pub const IDLE_PROBE: Duration = Duration::from_secs(10);

/// What to probe.
#[derive(Debug, Clone)]
pub enum Target {
    /// `http://`, `https://`, `h2c://`, `grpc://` or `grpcs://` with host, port and path.
    Url(String),
    /// Every backend of a config, or only `backend`.
    Config {
        config: Box<Config>,
        backend: Option<String>,
    },
}

/// A run's inputs.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    /// The longest wait for an idle connection's close.
    pub idle_probe: Duration,
    /// Check a WebSocket upgrade on this path.
    pub websocket: Option<String>,
    /// With a URL: the CA that signs the endpoint's certificate (default: public roots).
    pub ca_file: Option<PathBuf>,
    /// With a URL: the name to send as SNI and verify (default: the URL's host).
    pub server_name: Option<String>,
}

impl Options {
    pub fn url(url: &str) -> Options {
        Options::new(Target::Url(url.to_string()))
    }

    pub fn config(config: Config, backend: Option<&str>) -> Options {
        Options::new(Target::Config {
            config: Box::new(config),
            backend: backend.map(str::to_string),
        })
    }

    fn new(target: Target) -> Options {
        Options {
            target,
            idle_probe: IDLE_PROBE,
            websocket: None,
            ca_file: None,
            server_name: None,
        }
    }
}

/// A URL, flag value or backend name that cannot be used (exit 64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Probe every endpoint `options` names; the report, or why nothing could be probed.
pub async fn run(options: Options) -> Result<Report, UsageError> {
    let plans = targets::plans(&options)?;
    let resolved = join_all(plans.iter().map(|plan| discover::resolve(&plan.source))).await;
    let limit = Arc::new(Semaphore::new(CONCURRENT_ENDPOINTS));
    let mut groups: Vec<BoxFuture<'static, Group>> = Vec::new();
    for (plan, found) in plans.into_iter().zip(resolved) {
        let settings = plan.settings;
        let discovered = !matches!(plan.source, Source::Listed(_));
        let endpoints = |finding: Finding| Group {
            backend: settings.backend.clone(),
            endpoint: None,
            title: plan.title.clone(),
            findings: vec![finding],
        };
        let addrs = match found {
            Err(e) => {
                let group = endpoints(Finding::fail(
                    "endpoints",
                    format!("none found: {e}"),
                    Some(settings.setting(settings.endpoints_key)),
                ));
                groups.push(async move { group }.boxed());
                continue;
            }
            Ok(addrs) => addrs,
        };
        let total = addrs.len();
        let probed = total.min(discover::MAX_ENDPOINTS);
        if total > probed {
            let group = endpoints(Finding::warn(
                "endpoints",
                format!(
                    "{total} endpoints; the first {probed} probed, {} skipped",
                    total - probed
                ),
                None,
            ));
            groups.push(async move { group }.boxed());
        } else if discovered {
            let group = endpoints(Finding::ok(
                "endpoints",
                format!("{total} found: {}", list(&addrs)),
            ));
            groups.push(async move { group }.boxed());
        }
        for addr in addrs.into_iter().take(probed) {
            let (settings, limit, url) =
                (Arc::clone(&settings), Arc::clone(&limit), plan.url.clone());
            groups.push(
                async move {
                    let _permit = limit.acquire().await;
                    probe(&settings, addr, url.as_deref()).await
                }
                .boxed(),
            );
        }
    }
    Ok(Report {
        groups: join_all(groups).await,
    })
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The longest one endpoint's checks may take, all bounds added up.
pub fn endpoint_bound(connect_timeout: Duration, idle_probe: Duration) -> Duration {
    // connect; the protocol questions (a connect, a handshake and an answer); then a connect,
    // TLS and HTTP/2 handshakes and an answer before the idle wait or the series.
    connect_timeout * 3
        + ANSWER_TIMEOUT * 6
        + idle_probe.max(keepalive::SERIES_TIMEOUT)
        + Duration::from_secs(1)
}

async fn probe(settings: &Settings, addr: SocketAddr, url: Option<&str>) -> Group {
    let mut findings = Vec::new();
    let bound = endpoint_bound(settings.connect_timeout, settings.idle_probe);
    if tokio::time::timeout(bound, checks(settings, addr, &mut findings))
        .await
        .is_err()
    {
        findings.push(Finding::fail(
            "doctor",
            format!("the checks did not finish within {}", human(bound)),
            None,
        ));
    }
    Group {
        backend: settings.backend.clone(),
        endpoint: Some(addr.to_string()),
        title: settings.title(addr, url),
        findings,
    }
}

async fn checks(settings: &Settings, addr: SocketAddr, findings: &mut Vec<Finding>) {
    let (reached, ok) = connect::check(settings, addr).await;
    findings.push(reached);
    if !ok {
        return;
    }
    let speaks = speaks::detect(settings, addr).await;
    let (lines, transport) = speaks::judge(settings, addr, &speaks);
    findings.extend(lines);
    let Some(transport) = transport else {
        return;
    };
    let ask = if settings.grpc() && transport.h2 {
        Ask::GrpcHealth
    } else {
        Ask::Get
    };
    let websocket = async {
        match &settings.websocket {
            Some(path) => Some(websocket::check(settings, addr, &transport, path).await),
            None => None,
        }
    };
    let ((answer, idle), series, websocket) = tokio::join!(
        keepalive::idle_probe(settings, addr, &transport, &ask),
        keepalive::series(settings, addr, &transport, &ask),
        websocket
    );
    findings.push(health::finding(settings, &ask, &answer));
    if let Ok(answer) = &answer {
        findings.push(health::header_size(settings, answer));
        findings.extend(keepalive::header_finding(settings, answer));
    }
    findings.extend(idle.and_then(|idle| keepalive::idle_finding(settings, idle)));
    findings.push(keepalive::series_finding(&series));
    findings.extend(websocket);
}

/// A duration as people write it: `0.3ms`, `250ms`, `2s`, `1.75s`.
pub(crate) fn human(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 10_000 {
        format!("{:.1}ms", micros as f64 / 1000.0)
    } else if micros < 1_000_000 {
        format!("{}ms", micros / 1000)
    } else {
        let text = format!("{:.2}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        let ms = Duration::from_millis;
        assert_eq!(human(Duration::from_micros(310)), "0.3ms");
        assert_eq!(human(ms(250)), "250ms");
        assert_eq!(human(ms(2000)), "2s");
        assert_eq!(human(ms(1750)), "1.75s");
        assert_eq!(human(ms(1500)), "1.5s");
    }
}
