//! A bounded load generator for the demo and the resilience tests: `concurrency` clients, each
//! with its own keep-alive HTTP/1.1 connection, sending requests one after another (with an
//! optional idle gap) for `duration`, and counting what a user would see: 2xx answers, other
//! statuses (with the `Proxy-Status` cause when hitless produced them), and client-side errors
//! (connection reset or closed before an answer).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Load {
    pub target: SocketAddr,
    pub concurrency: usize,
    pub duration: Duration,
    pub method: Method,
    /// Idle time between a client's requests (keeps its connection idle that long).
    pub gap: Duration,
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

    /// Latency quantile of the answered requests (`q` in 0..=1).
    pub fn latency(&self, q: f64) -> Duration {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round().max(0.0) as usize;
        Duration::from_micros(v.get(i).copied().unwrap_or(0))
    }

    fn merge(&mut self, other: Report) {
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
        let workers: Vec<_> = (0..self.concurrency)
            .map(|_| tokio::spawn(client_loop(self.clone(), end)))
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

async fn connect(target: SocketAddr) -> Option<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn client_loop(load: Load, end: Instant) -> Report {
    let mut report = Report::default();
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    while Instant::now() < end {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(load.target).await;
        }
        let Some(s) = sender.as_mut() else {
            report.client_errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let body = if load.method == Method::POST {
            Bytes::from_static(b"order=42")
        } else {
            Bytes::new()
        };
        let request = Request::builder()
            .method(load.method.clone())
            .uri("/")
            .header("host", "demo.local")
            .body(Full::new(body));
        let Ok(request) = request else { break };
        let started = Instant::now();
        let answer = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let (head, body) = response.into_parts();
            body.collect().await?;
            Ok::<_, hyper::Error>(head)
        };
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Ok(head)) if head.status.is_success() => {
                report.ok += 1;
                report
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
            }
            Ok(Ok(head)) => {
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
