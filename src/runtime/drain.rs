//! Graceful drain, so that hitless's own rollout is not a source of 502s.
//!
//! serving -> **draining** (`/readyz` 503 from the first instant; traffic still served for
//! `drain.delay` while the endpoint removal reaches every kube-proxy and load balancer) ->
//! **closing** (listeners closed; HTTP/1.1 answers carry `Connection: close` and idle
//! connections close; HTTP/2 gets GOAWAY; in-flight requests go on) -> **done** (all finished,
//! or `drain.timeout`: what was cut is logged and counted) -> exit 0.
//!
//! Triggers: SIGTERM/SIGINT, or `hitless drain` over the control socket (a Unix socket, never
//! TCP, so that no pod can drain another), which answers once the delay is over -- so a
//! Kubernetes `preStop` exec hook works in an image without a shell, and the SIGTERM that
//! follows does not wait the delay again: the delay counts from the first trigger.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
}

pub struct Drain {
    phase: watch::Sender<Phase>,
    started: OnceLock<Instant>,
    delay: Duration,
    /// `hitless_draining`: 0 serving, 1 draining, 2 closing.
    gauge: Gauge,
}

impl Drain {
    pub fn new(delay: Duration, gauge: Gauge) -> Drain {
        Drain {
            phase: watch::Sender::new(Phase::Serving),
            started: OnceLock::new(),
            delay,
            gauge,
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Start draining (once; later calls change nothing). Returns whether this call did.
    pub fn begin(&self, trigger: &str) -> bool {
        let mut first = false;
        self.started.get_or_init(|| {
            first = true;
            Instant::now()
        });
        if first {
            self.phase.send_replace(Phase::Draining);
            self.gauge.set(1);
            tracing::info!(trigger, delay = %humantime::format_duration(self.delay), "draining: readiness off, still serving while endpoint removal propagates");
        }
        first
    }

    /// The closing phase: the caller closes listeners and connections.
    pub fn close(&self) {
        self.begin("close");
        self.phase.send_replace(Phase::Closing);
        self.gauge.set(2);
    }

    /// Resolves once draining has begun.
    pub async fn started(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= Phase::Draining).await;
    }

    /// Resolves once `drain.delay` has passed since the first trigger.
    pub async fn delay_over(&self) {
        self.started().await;
        if let Some(start) = self.started.get() {
            tokio::time::sleep_until(*start + self.delay).await;
        }
    }
}

/// The control socket: one command per connection, `drain`, answered when the delay is over.
pub struct Control {
    path: PathBuf,
    answers: tokio_util::task::TaskTracker,
}

impl Control {
    /// Bind `path` (mode 0600). A leftover socket file from a dead process is replaced; a
    /// live one (another hitless answering on it) is an error.
    pub async fn bind(path: &Path, drain: Arc<Drain>) -> io::Result<Control> {
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "control socket {}: another hitless is running (set drain.control_socket)",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
        })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let answers = tokio_util::task::TaskTracker::new();
        let tracker = answers.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tracker.spawn(answer(stream, Arc::clone(&drain)));
            }
        });
        Ok(Control {
            path: path.to_path_buf(),
            answers,
        })
    }

    /// Before exiting: let `hitless drain` callers get their answer (bounded).
    pub async fn finish(&self) {
        self.answers.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.answers.wait()).await;
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, drain: Arc<Drain>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // A command is a short line: never buffer more than this from a client.
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, 256));
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    let reply = match (read, line.trim()) {
        (Ok(Ok(_)), "drain") => {
            drain.begin("hitless drain");
            drain.delay_over().await;
            "ok: drain delay over, closing\n"
        }
        (Ok(Ok(_)), _) => "error: unknown command (try: drain)\n",
        _ => return,
    };
    let _ = write.write_all(reply.as_bytes()).await;
}

/// `hitless drain`: ask the instance on `path` to drain; returns its answer once the delay
/// is over.
pub async fn request(path: &Path) -> io::Result<String> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach hitless on {}: {e}", path.display()),
        )
    })?;
    stream.write_all(b"drain\n").await?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).await?;
    if reply.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "hitless closed the control connection without an answer",
        ));
    }
    Ok(reply)
}
