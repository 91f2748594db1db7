//! Bodies stream with backpressure: 1 GiB down and 1 GiB up through the real `hitless`
//! binary, with the child process's peak memory checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;

/// A body of `remaining` bytes, produced on demand (no buffer of its size exists anywhere).
struct Repeat {
    chunk: Bytes,
    remaining: u64,
}

impl Repeat {
    fn new(len: u64) -> Repeat {
        Repeat {
            chunk: Bytes::from(vec![b'x'; CHUNK]),
            remaining: len,
        }
    }
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = (self.remaining as usize).min(CHUNK);
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Read a body to the end, counting bytes without keeping them.
async fn count(mut body: Incoming) -> u64 {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body error").into_data() {
            n += data.len() as u64;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_with_bounded_memory() {
    let server = upstream(|req: Request<Incoming>| async move {
        if req.uri().path() == "/download" {
            Response::new(Repeat::new(GIB).boxed())
        } else {
            let n = count(req.into_body()).await;
            Response::new(full(n.to_string()))
        }
    })
    .await;
    let (port, admin_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{admin_port}");
    let upstream_addr = server.addr.to_string();
    let proxy = spawn_hitless(&[
        "sidecar",
        "--listen",
        &listen,
        "--upstream",
        &upstream_addr,
        "--admin",
        &admin,
        "--no-access-log",
    ]);
    let pid = proxy.child.id();
    wait_ready(admin.parse().unwrap()).await;

    let c = client();
    let warm = get(&c, listen.parse().unwrap(), "x", "/upload").await;
    assert_eq!(warm.body, "0");
    let (_, baseline) = memory_kib(pid);

    let response = c
        .request(
            Request::get(format!("http://{listen}/download"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(count(response.into_body()).await, GIB);

    let response = c
        .request(
            Request::post(format!("http://{listen}/upload"))
                .body(Repeat::new(GIB).boxed())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, GIB.to_string().as_bytes());

    let (peak, _) = memory_kib(pid);
    let grown_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!("streamed 2 GiB: baseline {baseline} KiB, peak {peak} KiB, grown {grown_mib:.1} MiB");
    assert!(
        grown_mib < 16.0,
        "hitless grew by {grown_mib:.1} MiB while streaming 2 GiB (baseline {baseline} KiB, peak {peak} KiB)"
    );
}
