//! Process shutdown triggers. SIGTERM and SIGINT start a graceful stop: listeners close,
//! connections are asked to finish (HTTP/1.1 keep-alive off, HTTP/2 GOAWAY) and the process
//! exits once they have, or after the grace period. A second signal exits at once.
//! (The full drain state machine with `drain.delay` and `hitless drain` is issue #4.)

use std::io;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() -> io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
