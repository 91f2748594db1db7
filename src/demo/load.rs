//! A bounded load generator for the demo and the resilience tests: `connections` clients, each
//! with its own keep-alive HTTP/1.1 (or HTTP/2) connection, sending requests one after another -- paced so
//! that together they send `rate` requests a second (production load: the promises are
//! measured there, not at a few requests a second where every policy looks fine), or with an
//! idle gap between requests -- for `duration`, and counting what a user would see: 2xx
//! answers, other statuses (with the `Proxy-Status` cause when hitless produced them), and
//! client-side errors (connection reset or closed before an answer, or no answer within
//! `CLIENT_TIMEOUT`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a client waits for an answer before calling it an error.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Load {
    pub target: SocketAddr,
    /// Clients, each with its own keep-alive connection.
    pub connections: usize,
    pub duration: Duration,
    pub method: Method,
    /// Requests per second, all clients together (0: each client sends its next request as
    /// soon as the previous one was answered, after `gap`).
    pub rate: f64,
    /// Idle time between a client's requests (keeps its connection idle that long).
    pub gap: Duration,
    /// Size of each request body (sent with POST).
    pub body_bytes: usize,
    /// Clients speak HTTP/2 (prior knowledge), one stream at a time each, instead of HTTP/1.1.
    pub http2: bool,
}

impl Load {
    /// `connections` clients sending `rate` requests a second in all to `target` for
    /// `duration`; POST requests carry a 128-byte body.
    pub fn paced(
        target: SocketAddr,
        method: Method,
        connections: usize,
        rate: f64,
        duration: Duration,
    ) -> Load {
        Load {
            target,
            connections,
            duration,
            method,
            rate,
            gap: Duration::ZERO,
            body_bytes: 128,
            http2: false,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ok: usize,
    /// Answers that were not 2xx, by `status cause`.
    pub failed: BTreeMap<String, usize>,
    /// Requests that got no answer at all (connection refused, reset, closed).
    pub client_errors: usize,
    latencies_us: Vec<u64>,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.ok + self.errors()
    }

    /// Everything a user would call an error: non-2xx answers and no answer.
    pub fn errors(&self) -> usize {
        self.failed.values().sum::<usize>() + self.client_errors
    }

    /// Latency quantile of the answered requests, error answers included (`q` in 0..=1).
    pub fn latency(&self, q: f64) -> Duration {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round().max(0.0) as usize;
        Duration::from_micros(v.get(i).copied().unwrap_or(0))
    }

    /// Add another run's counts to this one.
    pub fn merge(&mut self, other: Report) {
        self.ok += other.ok;
        for (k, n) in other.failed {
            *self.failed.entry(k).or_default() += n;
        }
        self.client_errors += other.client_errors;
        self.latencies_us.extend(other.latencies_us);
    }

    /// One line: `requests, errors (what they were)`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} requests, {} errors", self.requests(), self.errors());
        let mut what: Vec<String> = self
            .failed
            .iter()
            .map(|(k, n)| format!("{n}x {k}"))
            .collect();
        if self.client_errors > 0 {
            what.push(format!("{}x no answer", self.client_errors));
        }
        if !what.is_empty() {
            s.push_str(&format!(" ({})", what.join(", ")));
        }
        s
    }
}

impl Load {
    pub async fn run(self) -> Report {
        let end = Instant::now() + self.duration;
        // Clients start spread over one pacing interval, not all at once.
        let interval = if self.rate > 0.0 {
            Duration::from_secs_f64(self.connections as f64 / self.rate)
        } else {
            Duration::ZERO
        };
        let workers: Vec<_> = (0..self.connections)
            .map(|i| {
                let offset = interval.mul_f64(i as f64 / self.connections.max(1) as f64);
                tokio::spawn(client_loop(self.clone(), end, interval, offset))
            })
            .collect();
        let mut report = Report::default();
        for w in workers {
            if let Ok(r) = w.await {
                report.merge(r);
            }
        }
        report
    }
}

/// A client's connection: HTTP/1.1 or HTTP/2.
enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
        }
    }
}

async fn connect(target: SocketAddr, h2: bool) -> Option<Sender> {
    let stream = TcpStream::connect(target).await.ok()?;
    let _ = stream.set_nodelay(true);
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        return Some(Sender::H2(sender));
    }
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(Sender::H1(sender))
}

async fn client_loop(load: Load, end: Instant, interval: Duration, offset: Duration) -> Report {
    let mut report = Report::default();
    let mut sender: Option<Sender> = None;
    let body = if load.method == Method::POST {
        Bytes::from(vec![b'x'; load.body_bytes])
    } else {
        Bytes::new()
    };
    let mut next = Instant::now() + offset;
    loop {
        if !interval.is_zero() {
            // The next slot; a client that fell behind does not catch up in a burst.
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next).await;
            }
            next = next.max(now) + interval;
        }
        if Instant::now() >= end {
            break;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(load.target, load.http2).await;
        }
        let Some(s) = sender.as_mut() else {
            report.client_errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let request = if load.http2 {
            // HTTP/2 carries the host as the `:authority`.
            Request::builder()
                .method(load.method.clone())
                .uri(format!("http://demo.local:{}/", load.target.port()))
                .body(Full::new(body.clone()))
        } else {
            Request::builder()
                .method(load.method.clone())
                .uri("/")
                .header("host", "demo.local")
                .body(Full::new(body.clone()))
        };
        let Ok(request) = request else { break };
        let started = Instant::now();
        let answer = async {
            let response = s.send(request).await?;
            let (head, body) = response.into_parts();
            body.collect().await?;
            Ok::<_, hyper::Error>(head)
        };
        match tokio::time::timeout(CLIENT_TIMEOUT, answer).await {
            Ok(Ok(head)) if head.status.is_success() => {
                report.ok += 1;
                report
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
            }
            Ok(Ok(head)) => {
                report
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
                let cause = head
                    .headers
                    .get("proxy-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split("details=\"").nth(1))
                    .and_then(|d| d.split([' ', '"']).next())
                    .unwrap_or("from the app")
                    .to_string();
                *report
                    .failed
                    .entry(format!("{} {cause}", head.status.as_u16()))
                    .or_default() += 1;
            }
            _ => {
                report.client_errors += 1;
                sender = None;
            }
        }
        if !load.gap.is_zero() {
            tokio::time::sleep(load.gap).await;
        }
    }
    report
}
