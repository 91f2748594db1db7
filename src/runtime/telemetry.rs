//! Logging: the access log (one JSON object per request, target `hitless::access`) goes to
//! stdout; diagnostics go to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! The access log is written through a bounded non-blocking writer so that a slow stdout
//! consumer never stalls a request; when its queue is full, lines are dropped rather than
//! memory growing (the counters in `/metrics` stay exact).

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keep the returned guard alive until exit: dropping it flushes the access log.
pub fn init() -> WorkerGuard {
    let (stdout, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(64 * 1024)
        .lossy(true)
        .finish(std::io::stdout());
    let access = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_level(false)
        .with_writer(stdout)
        .with_filter(filter_fn(|meta| meta.target() == "hitless::access"));
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_filter(filter_fn(|meta| meta.target() != "hitless::access"));
    // A second init (tests starting several instances in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(access)
        .with(diagnostics)
        .try_init();
    guard
}
