//! The endpoint's keep-alive, measured rather than guessed, against the pool's idle timeout
//! (the keep-alive race of the field guide: a pooled connection the app closes as hitless
//! writes to it).
//!
//! - **Idle probe**: one connection, one request (the health probe: its answer feeds the
//!   health and header-size lines too), then nothing, until the server closes or
//!   `--idle-probe` (10 s) passes. The time from the end of the answer to the close is the
//!   app's idle timeout, compared to the nearest [`ROUNDING`] (a 2 s timeout measures a hair
//!   under 2 s, since the app's clock starts as it writes): pool idle >= measured is a FAIL,
//!   pool idle above 75% of it a warn (the margin hitless itself keeps when it learns a
//!   timeout, `upstream::keepalive`). A close within [`AT_ONCE`] of the answer is not an idle
//!   timeout but a close after each response, which the series reports.
//! - **`Keep-Alive: timeout=N`** on that answer: the pool at most 75% of N is ok; above, a
//!   warning (hitless lowers its pool to 75% of N once it sees the header, so only connections
//!   opened before that are exposed).
//! - **Series**: another connection, up to [`SERIES`] requests back to back (at most
//!   [`SERIES_TIMEOUT`] in all): how many are answered before the server closes. A close after
//!   each response means no reuse (a connect per request), after N a request now and then meets
//!   the close: hitless re-sends it (it was provably never read), at the cost of a connect.
//!   Both are warnings, not 502s.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::connect::{self, Transport};
use super::exchange::{Answer, Ask, Failure};
use super::human;
use super::report::Finding;
use super::targets::Settings;

/// Requests sent on the series connection.
pub const SERIES: usize = 12;
/// The series' bound in time.
pub const SERIES_TIMEOUT: Duration = Duration::from_secs(6);
/// A close this soon after an answer is a close after each response, not an idle timeout.
pub const AT_ONCE: Duration = Duration::from_millis(50);
/// Measured idle timeouts are compared and shown to the nearest this.
pub const ROUNDING: Duration = Duration::from_millis(50);

/// What the idle probe saw after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Closed this long after the answer.
    ClosedAfter(Duration),
    /// Still open after the whole probe.
    OpenFor(Duration),
    /// Closed with (or right after) the answer.
    AtOnce,
}

/// One request on a new connection, then wait for the server's close.
pub(crate) async fn idle_probe(
    settings: &Settings,
    addr: SocketAddr,
    transport: &Transport,
    ask: &Ask,
) -> (Result<Answer, Failure>, Option<Idle>) {
    let mut conn = match connect::open(settings, addr, transport).await {
        Ok(conn) => conn,
        Err(e) => return (Err(e), None),
    };
    let answer = match conn.ask(settings, addr, ask).await {
        Ok(answer) => answer,
        Err(e) => return (Err(e), None),
    };
    let idle = if answer.closes {
        Idle::AtOnce
    } else {
        match conn.wait_close(settings.idle_probe).await {
            Some(after) if after < AT_ONCE => Idle::AtOnce,
            Some(after) => Idle::ClosedAfter(after),
            None => Idle::OpenFor(settings.idle_probe),
        }
    };
    (Ok(answer), Some(idle))
}

/// How a series of requests on one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Series {
    pub answered: usize,
    /// `None`: all [`SERIES`] were answered.
    pub end: Option<Failure>,
}

pub(crate) async fn series(
    settings: &Settings,
    addr: SocketAddr,
    transport: &Transport,
    ask: &Ask,
) -> Series {
    let deadline = Instant::now() + SERIES_TIMEOUT;
    let mut conn = match connect::open(settings, addr, transport).await {
        Ok(conn) => conn,
        Err(e) => {
            return Series {
                answered: 0,
                end: Some(e),
            }
        }
    };
    let mut answered = 0;
    while answered < SERIES {
        match tokio::time::timeout_at(deadline, conn.ask(settings, addr, ask)).await {
            Err(_) => {
                return Series {
                    answered,
                    end: Some(Failure::Timeout(SERIES_TIMEOUT)),
                }
            }
            Ok(Err(e)) => {
                return Series {
                    answered,
                    end: Some(e),
                }
            }
            Ok(Ok(answer)) => {
                answered += 1;
                if answer.closes {
                    return Series {
                        answered,
                        end: Some(Failure::Closed("closed (Connection: close)".into())),
                    };
                }
            }
        }
    }
    Series {
        answered,
        end: None,
    }
}

fn round(d: Duration) -> Duration {
    let step = ROUNDING.as_millis() as u64;
    let ms = d.as_millis() as u64;
    Duration::from_millis((ms + step / 2) / step * step)
}

/// 75% of `d`, down to a multiple of 50 ms: the pool idle timeout to suggest.
fn below(d: Duration) -> Duration {
    let ms = d.as_millis() as u64 * 3 / 4;
    Duration::from_millis(ms / 50 * 50).max(Duration::from_millis(50))
}

/// The `idle-timeout` line (none when the endpoint closes after each response).
pub(crate) fn idle_finding(settings: &Settings, idle: Idle) -> Option<Finding> {
    const CHECK: &str = "idle-timeout";
    let pool = settings.pool_idle;
    let fix = |measured: Duration| {
        Some(settings.setting(&format!(
            "pool.idle_timeout: {}ms (below the measured {})",
            below(measured).as_millis(),
            human(measured)
        )))
    };
    match idle {
        Idle::AtOnce => None,
        Idle::OpenFor(probe) if pool >= probe => Some(Finding::warn(
            CHECK,
            format!(
                "kept open longer than {} (--idle-probe), but the pool keeps idle connections {}: not confirmed",
                human(probe),
                human(pool)
            ),
            Some(format!("--idle-probe {}", human(pool * 2))),
        )),
        Idle::OpenFor(probe) => Some(Finding::ok(
            CHECK,
            format!(
                "kept open longer than {} (--idle-probe); the pool closes idle connections at {}",
                human(probe),
                human(pool)
            ),
        )),
        Idle::ClosedAfter(after) => {
            let measured = round(after);
            let found = format!(
                "the endpoint closes idle connections after {}; the pool keeps them {}",
                human(measured),
                human(pool)
            );
            Some(if pool >= measured {
                Finding::fail(
                    CHECK,
                    format!("{found}: the keep-alive race"),
                    fix(measured),
                )
            } else if pool * 4 > measured * 3 {
                Finding::warn(
                    CHECK,
                    format!("{found}: within 25% of it"),
                    fix(measured),
                )
            } else {
                Finding::ok(CHECK, format!("{found}: the pool closes first"))
            })
        }
    }
}

/// `timeout=N` (seconds) of a `Keep-Alive` header value such as `timeout=5, max=100`.
pub(crate) fn announced_timeout(header: &str) -> Option<u64> {
    header.split(',').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("timeout") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// The `keep-alive-header` line, when the answer carried one.
pub(crate) fn header_finding(settings: &Settings, answer: &Answer) -> Option<Finding> {
    const CHECK: &str = "keep-alive-header";
    let header = answer.keep_alive.as_deref()?;
    let pool = settings.pool_idle;
    let Some(secs) = announced_timeout(header) else {
        return Some(Finding::ok(
            CHECK,
            format!("Keep-Alive: {header} (no timeout)"),
        ));
    };
    let announced = Duration::from_secs(secs);
    Some(if pool * 4 <= announced * 3 {
        Finding::ok(
            CHECK,
            format!(
                "Keep-Alive: {header}; the pool ({}) closes first",
                human(pool)
            ),
        )
    } else {
        Finding::warn(
            CHECK,
            format!(
                "Keep-Alive: {header}, but the pool keeps idle connections {}: hitless lowers it to {} once it sees the header, connections opened before may race",
                human(pool),
                human(below(announced))
            ),
            Some(settings.setting(&format!(
                "pool.idle_timeout: {}ms",
                below(announced).as_millis()
            ))),
        )
    })
}

/// The `reuse` line.
pub(crate) fn series_finding(series: &Series) -> Finding {
    const CHECK: &str = "reuse";
    match (&series.end, series.answered) {
        (None, n) => Finding::ok(CHECK, format!("{n} requests answered on one connection")),
        (Some(e), 0) => Finding::warn(CHECK, format!("not measured: {e}"), None),
        (Some(Failure::Timeout(_)), n) => Finding::warn(
            CHECK,
            format!("{n} requests answered on one connection, then no answer"),
            None,
        ),
        (Some(_), 1) => Finding::warn(
            CHECK,
            "the endpoint closes the connection after each response: no reuse, hitless connects for every request",
            Some("(the app) enable HTTP keep-alive".into()),
        ),
        (Some(_), n) => Finding::warn(
            CHECK,
            format!(
                "the endpoint closes the connection after {n} requests: the request that meets the close is re-sent by hitless (never read, so safe), at the cost of a connect"
            ),
            Some("(the app) raise its requests-per-connection limit".into()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_and_suggestions() {
        let ms = Duration::from_millis;
        assert_eq!(round(ms(1_996)), ms(2_000));
        assert_eq!(round(ms(2_024)), ms(2_000));
        assert_eq!(below(ms(2_000)), ms(1_500));
        assert_eq!(below(ms(5_000)), ms(3_750));
        assert_eq!(announced_timeout("timeout=5, max=100"), Some(5));
        assert_eq!(announced_timeout(" Timeout = 2 "), Some(2));
        assert_eq!(announced_timeout("max=5"), None);
    }
}
