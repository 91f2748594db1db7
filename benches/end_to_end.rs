//! End-to-end: keep-alive HTTP/1.1 load straight to an upstream, then through hitless, in one
//! run, reporting requests/s and p50/p99 latency for both and their ratio.
//!
//! Three threads, each a single-threaded tokio runtime: the upstream (hyper, fixed 12-byte
//! answer), hitless (one worker, access log off) and the load generator (N keep-alive
//! connections, each sending requests back to back). On a 2-core machine the three share the
//! cores, so compare the two rows of one run, not runs across machines.
//! Run: `cargo bench --bench end_to_end` (env: BENCH_SECS, default 5; BENCH_CONNS, default 32).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use hitless::app::{App, Listeners};
use hitless::config::Config;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

fn start_upstream() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"hello world\n",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    });
    rx.recv().expect("upstream address")
}

fn start_hitless(upstream: SocketAddr) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let yaml = format!(
                "access_log: false\nbackends:\n  app: {{endpoints: [\"{upstream}\"]}}\nroutes:\n  - backend: app\n"
            );
            let config = Config::from_yaml(&yaml).expect("config");
            let listeners = Listeners {
                traffic: vec![TcpListener::bind("127.0.0.1:0").await.expect("bind")],
                admin: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            };
            let app = App::start_with_workers(&config, listeners, 1).expect("start");
            tx.send(app.traffic_addrs[0]).expect("send");
            std::future::pending::<()>().await;
        })
    });
    rx.recv().expect("hitless address")
}

struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

fn load(target: SocketAddr, conns: u64, secs: u64) -> Run {
    runtime().block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conns {
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(200_000);
                let mut errors = 0u64;
                let stream = TcpStream::connect(target).await.expect("connect");
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    let req = Request::get("/")
                        .header("host", "bench")
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let t = Instant::now();
                    if sender.ready().await.is_err() {
                        errors += 1;
                        break;
                    }
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status() == 200;
                            let _ = resp.into_body().collect().await;
                            if ok {
                                latencies.push(t.elapsed().as_micros() as u32);
                            } else {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            if let Ok((l, e)) = t.await {
                all.extend(l);
                errors += e;
            }
        }
        let elapsed = started.elapsed();
        all.sort_unstable();
        Run {
            requests: all.len() as u64,
            errors,
            elapsed,
            latencies_us: all,
        }
    })
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less args; keep that quick.
    let secs = env_or("BENCH_SECS", 5);
    let conns = env_or("BENCH_CONNS", 32);
    let upstream = start_upstream();
    let proxy = start_hitless(upstream);
    // Warm up both paths (connections, pools, caches).
    load(upstream, conns, 1);
    load(proxy, conns, 1);

    let direct = load(upstream, conns, secs);
    let through = load(proxy, conns, secs);
    println!(
        "end-to-end, {conns} keep-alive connections, {secs} s each, HTTP/1.1 GET, 12-byte body"
    );
    println!(
        "{:<16} {:>12} {:>10} {:>10} {:>8}",
        "path", "requests/s", "p50 us", "p99 us", "errors"
    );
    let mut rps = Vec::new();
    for (name, run) in [("direct", &direct), ("through hitless", &through)] {
        let r = run.requests as f64 / run.elapsed.as_secs_f64();
        rps.push(r);
        println!(
            "{:<16} {:>12.0} {:>10} {:>10} {:>8}",
            name,
            r,
            pct(&run.latencies_us, 0.50),
            pct(&run.latencies_us, 0.99),
            run.errors
        );
    }
    println!(
        "ratio hitless/direct: requests/s {:.2}x, p50 {:.2}x, p99 {:.2}x",
        rps[1] / rps[0],
        pct(&through.latencies_us, 0.50) as f64 / pct(&direct.latencies_us, 0.50).max(1) as f64,
        pct(&through.latencies_us, 0.99) as f64 / pct(&direct.latencies_us, 0.99).max(1) as f64,
    );
    if through.errors > 0 || direct.errors > 0 {
        std::process::exit(1);
    }
}
