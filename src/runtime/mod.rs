//! Process-wide machinery that is not on the request path: metrics, logging, shutdown.

pub mod clock;
pub mod drain;
pub mod metrics;
pub mod random;
pub mod shutdown;
pub mod telemetry;
pub mod watch;
