//! Logging: the access log (one JSON object per request, target `hitless::access`) goes to
//! stdout; diagnostics go to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! The access log is written through a bounded non-blocking writer so that a slow stdout
//! consumer never stalls a request; when its queue is full, lines are dropped rather than
//! memory growing (the counters in `/metrics` stay exact).

use tracing::Level;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keep the returned guard alive until exit: dropping it flushes the access log.
pub fn init() -> WorkerGuard {
    let (stdout, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        // The queue's slots are allocated up front (40 bytes each): 16,384 lines is 0.6 MiB,
        // a third of a second of lines at 50,000 requests/s before lines are dropped.
        .buffered_lines_limit(16 * 1024)
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
        .with_filter(Targets::new().with_target("hitless::access", Level::INFO));
    // Static filters only (no closures, no span-based directives): each callsite's interest is
    // decided once, so the trace spans of h2 and hyper cost nothing per request. A dynamic
    // filter here made every HTTP/2 stream create and close spans (a quarter of the CPU).
    let env = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            env.add_directive(
                "hitless::access=off"
                    .parse()
                    .unwrap_or_else(|_| LevelFilter::INFO.into()),
            ),
        );
    // A second init (tests starting several instances in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(access)
        .with(diagnostics)
        .try_init();
    guard
}
