//! A small, deliberately misbehaving HTTP/1.1 application replica: the upstream of `hitless
//! demo` and of the resilience tests. It is a real TCP server on loopback whose faults are the
//! ones that cause 502s in Kubernetes: it closes idle keep-alive connections after a timeout
//! (Node.js, gunicorn...), closes a connection after N requests without saying so, answers 503
//! while it "starts", stops gracefully (refuses new connections, finishes in-flight requests),
//! or crashes (every connection reset, in-flight requests included).
//!
//! Raw HTTP/1.1 over tokio rather than hyper, because the faults are about exactly when bytes
//! and FINs/RSTs go out, which a full server hides. It reads a request head, a
//! `Content-Length` body, answers with its name, and counts what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a replica behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub name: &'static str,
    /// Close a keep-alive connection idle this long (the app's keep-alive timeout).
    pub idle_close: Option<Duration>,
    /// Between deciding to close an idle connection and its close reaching the proxy: on a
    /// real network, a round trip during which the proxy may still send a request that the
    /// app will never read (loopback has none, so it is modelled: the replica stops reading,
    /// waits this long, then closes; the kernel resets if a request arrived meanwhile).
    pub close_lag: Duration,
    /// Close a connection after this many responses, without `Connection: close`.
    pub max_requests_per_conn: Option<usize>,
    /// Answer 503 until this long after start (listening before ready).
    pub not_ready_for: Option<Duration>,
    /// Time to produce each response.
    pub delay: Duration,
    /// Read a POST completely (it is counted), then die this long after: no response, the
    /// connection closed. The request reached the application and must not be sent again.
    pub die_on_post_after: Option<Duration>,
}

impl Behaviour {
    pub fn named(name: &'static str) -> Behaviour {
        Behaviour {
            name,
            idle_close: None,
            close_lag: Duration::ZERO,
            max_requests_per_conn: None,
            not_ready_for: None,
            delay: Duration::ZERO,
            die_on_post_after: None,
        }
    }
}

/// What a replica saw (shared across its restarts when passed to `start_with`).
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
    /// Requests whose method was POST (read completely, body included).
    pub posts: AtomicUsize,
}

pub struct Replica {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: CancellationToken,
    crash: CancellationToken,
    tracker: TaskTracker,
}

impl Replica {
    /// Start on `addr` (port 0 for any).
    pub async fn start(addr: SocketAddr, behaviour: Behaviour) -> std::io::Result<Replica> {
        Self::start_with(addr, behaviour, Arc::default()).await
    }

    pub async fn start_with(
        addr: SocketAddr,
        behaviour: Behaviour,
        seen: Arc<Seen>,
    ) -> std::io::Result<Replica> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let crash = CancellationToken::new();
        let tracker = TaskTracker::new();
        let ready_at = Instant::now() + behaviour.not_ready_for.unwrap_or_default();
        let (s, c, t, b, seen2) = (
            stop.clone(),
            crash.clone(),
            tracker.clone(),
            Arc::new(behaviour),
            Arc::clone(&seen),
        );
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => return, // the listener closes: new connections refused
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                seen2.connections.fetch_add(1, Ordering::SeqCst);
                let conn = Conn {
                    stream,
                    behaviour: Arc::clone(&b),
                    seen: Arc::clone(&seen2),
                    ready_at,
                };
                t.spawn(conn.serve(s.clone(), c.clone()));
            }
        });
        tracker.close();
        Ok(Replica {
            addr,
            seen,
            stop,
            crash,
            tracker,
        })
    }

    /// Graceful stop, as a well-behaved app on SIGTERM: stop accepting (new connections are
    /// refused), close idle connections, finish in-flight requests, then return.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }

    /// Crash: every connection is reset at once, in-flight requests included.
    pub async fn crash(self) {
        self.crash.cancel();
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

struct Conn {
    stream: TcpStream,
    behaviour: Arc<Behaviour>,
    seen: Arc<Seen>,
    ready_at: Instant,
}

impl Conn {
    async fn serve(mut self, stop: CancellationToken, crash: CancellationToken) {
        let mut buf = Vec::with_capacity(4096);
        let mut served = 0usize;
        loop {
            // Waiting for a request: this is where idle connections are closed.
            let idle = self
                .behaviour
                .idle_close
                .unwrap_or(Duration::from_secs(3600));
            let head = tokio::select! {
                _ = crash.cancelled() => return self.reset(),
                _ = stop.cancelled(), if buf.is_empty() => return,
                _ = tokio::time::sleep(idle), if buf.is_empty() => {
                    tokio::time::sleep(self.behaviour.close_lag).await;
                    return;
                }
                head = read_request(&mut self.stream, &mut buf) => head,
            };
            let Some(request) = head else { return };
            self.seen.requests.fetch_add(1, Ordering::SeqCst);
            if request.post {
                self.seen.posts.fetch_add(1, Ordering::SeqCst);
                if let Some(after) = self.behaviour.die_on_post_after {
                    tokio::time::sleep(after).await;
                    return;
                }
            }
            if !self.behaviour.delay.is_zero() {
                tokio::select! {
                    _ = crash.cancelled() => return self.reset(),
                    _ = tokio::time::sleep(self.behaviour.delay) => {}
                }
            }
            served += 1;
            let last = self.behaviour.max_requests_per_conn == Some(served);
            let (status, body) = if Instant::now() < self.ready_at {
                ("503 Service Unavailable", "starting")
            } else {
                ("200 OK", self.behaviour.name)
            };
            // A graceful stop says so on the last response; the N-requests fault does not.
            let close = if stop.is_cancelled() {
                "connection: close\r\n"
            } else {
                ""
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{close}\r\n{body}",
                body.len()
            );
            if self.stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            if last || stop.is_cancelled() {
                return;
            }
        }
    }

    /// Close with RST (SO_LINGER 0), as the kernel does for a process that died.
    fn reset(self) {
        if let Ok(std) = self.stream.into_std() {
            let _ = socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO));
        }
    }
}

struct RequestHead {
    post: bool,
}

/// Read one request (head and `Content-Length` body) from `stream`, with `buf` holding bytes
/// already read past the previous request. `None` on EOF or garbage.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RequestHead> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let post = head.starts_with("post ");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Some(RequestHead { post })
}

/// An address that stops answering SYNs, as a deleted pod's IP does: a listener that never
/// accepts, with its accept queue (backlog 0) filled, so that the kernel drops new SYNs.
/// Dropping it frees the address.
pub struct BlackHole {
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

impl BlackHole {
    pub async fn at(addr: SocketAddr) -> std::io::Result<BlackHole> {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        listener.set_reuse_address(true)?;
        listener.bind(&addr.into())?;
        listener.listen(0)?;
        let mut fillers = Vec::new();
        for _ in 0..8 {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            let _ = s.connect(&addr.into());
            fillers.push(std::net::TcpStream::from(s));
        }
        // The kernel completes the handshakes the queue admits (one or two) at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(BlackHole {
            _listener: listener,
            _fillers: fillers,
        })
    }
}
