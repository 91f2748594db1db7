//! `hitless demo`: the failure modes of the 502 guide, reproduced with real servers on
//! loopback at production load (1,500 requests a second over 64 keep-alive connections),
//! through hitless with every protection off (what a plain reverse proxy does) and with its
//! defaults, side by side. Needs nothing installed and runs in about a minute and a half.
//!
//! The same scenarios are the churn tests (`tests/churn.rs`, `tests/resilience.rs`), which
//! assert zero errors through hitless's defaults at that load; the demo only prints what
//! happened. A scenario returns what clients saw and what the replicas saw, so that a test
//! can also prove that no POST reached an application twice.

pub mod load;
pub mod replica;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tokio::net::TcpListener;

use crate::app::{App, Listeners};
use crate::config::Config;
use load::{Load, Report};
use replica::{Behaviour, BlackHole, Replica, Seen};

/// Production load: at least 1,000 requests a second over tens of connections.
pub const CONNECTIONS: usize = 64;
pub const RATE: f64 = 1500.0;
/// Each replica takes this long to answer (an app doing some work).
pub const APP_DELAY: Duration = Duration::from_millis(5);

/// How the proxy in front of the replicas is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One attempt, round-robin, no hold, no passive health (no ejection, refusing endpoints
    /// stay in rotation), a 60 s pool idle timeout: a plain reverse proxy.
    Naive,
    /// hitless's defaults.
    Hitless,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Naive => "plain proxy",
            Mode::Hitless => "hitless",
        }
    }
}

/// The proxy config for `mode` in front of `endpoints`.
pub fn proxy_config(mode: Mode, endpoints: &[SocketAddr]) -> String {
    let list = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match mode {
        Mode::Naive => format!(
            "retry: {{attempts: 1}}\nbackends:\n  app:\n    endpoints: [{list}]\n    balance: round_robin\n    hold_timeout: 0s\n    outlier: {{consecutive_failures: 0}}\n    pool: {{idle_timeout: 60s}}\nroutes:\n  - backend: app\n"
        ),
        Mode::Hitless => {
            format!("backends:\n  app:\n    endpoints: [{list}]\nroutes:\n  - backend: app\n")
        }
    }
}

/// hitless in this process, on loopback ports of its own, access log off.
pub async fn start_proxy(yaml: &str) -> io::Result<App> {
    let mut config =
        Config::from_yaml(yaml).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    config.access_log = std::env::var_os("HITLESS_DEMO_ACCESS_LOG").is_some();
    let listeners = Listeners {
        traffic: vec![TcpListener::bind("127.0.0.1:0").await?],
        admin: TcpListener::bind("127.0.0.1:0").await?,
    };
    App::start(&config, listeners)
}

/// What a scenario produced: what clients saw, and what the replicas saw.
#[derive(Debug, Default, Clone)]
pub struct Run {
    pub report: Report,
    /// Requests the replicas read (every restart of every replica together).
    pub reached: usize,
    /// POST requests among them (read completely).
    pub posts: usize,
}

/// A set of replicas that can be stopped, crashed and restarted on their addresses, counting
/// what they saw across restarts.
pub struct Replicas {
    running: Vec<Option<Replica>>,
    pub addrs: Vec<SocketAddr>,
    behaviours: Vec<Behaviour>,
    seen: Vec<Arc<Seen>>,
}

impl Replicas {
    pub async fn start(behaviours: &[Behaviour]) -> io::Result<Replicas> {
        let mut running = Vec::new();
        for b in behaviours {
            running.push(Some(
                Replica::start(SocketAddr::from(([127, 0, 0, 1], 0)), b.clone()).await?,
            ));
        }
        let addrs = running.iter().flatten().map(|r| r.addr).collect();
        let seen = running
            .iter()
            .flatten()
            .map(|r| Arc::clone(&r.seen))
            .collect();
        Ok(Replicas {
            running,
            addrs,
            behaviours: behaviours.to_vec(),
            seen,
        })
    }

    /// Stop replica `i` gracefully (refuse new connections, finish in-flight requests).
    pub async fn stop(&mut self, i: usize) {
        if let Some(r) = self.running.get_mut(i).and_then(Option::take) {
            r.stop().await;
        }
    }

    /// Crash replica `i`: every connection reset, in-flight requests included.
    pub async fn crash(&mut self, i: usize) {
        if let Some(r) = self.running.get_mut(i).and_then(Option::take) {
            r.crash().await;
        }
    }

    /// Start replica `i` again on its address, as it was or as `behaviour`.
    pub async fn restart(&mut self, i: usize, behaviour: Option<Behaviour>) -> io::Result<()> {
        let behaviour = behaviour.unwrap_or_else(|| self.behaviours[i].clone());
        let r = Replica::start_with(self.addrs[i], behaviour, Arc::clone(&self.seen[i])).await?;
        self.running[i] = Some(r);
        Ok(())
    }

    pub fn reached(&self) -> usize {
        self.seen
            .iter()
            .map(|s| s.requests.load(Ordering::SeqCst))
            .sum()
    }

    pub fn posts(&self) -> usize {
        self.seen
            .iter()
            .map(|s| s.posts.load(Ordering::SeqCst))
            .sum()
    }

    pub fn connections(&self) -> usize {
        self.seen
            .iter()
            .map(|s| s.connections.load(Ordering::SeqCst))
            .sum()
    }
}

fn app_replica(name: &'static str) -> Behaviour {
    let mut b = Behaviour::named(name);
    b.delay = APP_DELAY;
    b
}

/// Production load against `target` for `duration`.
pub fn production_load(target: SocketAddr, method: Method, duration: Duration) -> Load {
    Load::paced(target, method, CONNECTIONS, RATE, duration)
}

/// Run `load` through a proxy configured for `mode` in front of `replicas`, while `faults`
/// acts on the replicas; then count.
async fn under_load<F, Fut>(
    mode: Mode,
    mut replicas: Replicas,
    method: Method,
    duration: Duration,
    http2: bool,
    config: impl FnOnce(String) -> String,
    faults: F,
) -> io::Result<Run>
where
    F: FnOnce(Replicas) -> Fut,
    Fut: std::future::Future<Output = io::Result<Replicas>>,
{
    let app = start_proxy(&config(proxy_config(mode, &replicas.addrs))).await?;
    let mut traffic = production_load(app.traffic_addrs[0], method, duration);
    traffic.http2 = http2;
    let running = tokio::spawn(traffic.run());
    replicas = faults(replicas).await?;
    let report = running.await.unwrap_or_default();
    if std::env::var_os("HITLESS_DEMO_METRICS").is_some() {
        for line in app.metrics.encode().lines() {
            if line.starts_with("hitless_") && !line.contains("_bucket") && !line.ends_with(" 0") {
                eprintln!("{line}");
            }
        }
    }
    app.stop(Duration::from_secs(1)).await;
    Ok(Run {
        report,
        reached: replicas.reached(),
        posts: replicas.posts(),
    })
}

/// Rolling restart: three replicas restarted one after another as a Deployment's rollout
/// does, seconds apart: each stops gracefully (new connections refused at once, in-flight
/// requests finished), is down for a second, and starts again; half a second later the next.
pub async fn rolling_restart(mode: Mode, method: Method) -> io::Result<Run> {
    rolling_restart_with(mode, method, false).await
}

/// `rolling_restart`, the clients speaking HTTP/2 when `http2` (hitless's raw transport for
/// HTTP/2 streams then carries the requests to the HTTP/1.1 replicas).
pub async fn rolling_restart_with(mode: Mode, method: Method, http2: bool) -> io::Result<Run> {
    let replicas = Replicas::start(&[app_replica("a"), app_replica("b"), app_replica("c")]).await?;
    under_load(
        mode,
        replicas,
        method,
        Duration::from_millis(5500),
        http2,
        |c| c,
        |mut r| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for i in 0..3 {
                r.stop(i).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                r.restart(i, None).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(r)
        },
    )
    .await
}

/// Slow start: two of three replicas restart in turn and listen at once, but answer 503 to
/// every path (their health path included) for two seconds while they warm up.
pub async fn slow_start(mode: Mode) -> io::Result<Run> {
    let replicas = Replicas::start(&[app_replica("a"), app_replica("b"), app_replica("c")]).await?;
    under_load(
        mode,
        replicas,
        Method::GET,
        Duration::from_millis(5500),
        false,
        |c| c,
        |mut r| async move {
            for (i, name) in ["a", "b"].into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                r.stop(i).await;
                let mut warming = app_replica(name);
                warming.not_ready_for = Some(Duration::from_secs(2));
                r.restart(i, Some(warming)).await?;
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            Ok(r)
        },
    )
    .await
}

/// Crash: replicas that take 20 ms per request; two of them crash in turn (every connection
/// reset, in-flight requests included) and come back 500 ms later.
pub async fn crash(mode: Mode) -> io::Result<Run> {
    let slow = |name| {
        let mut b = Behaviour::named(name);
        b.delay = Duration::from_millis(20);
        b
    };
    let replicas = Replicas::start(&[slow("a"), slow("b"), slow("c")]).await?;
    under_load(
        mode,
        replicas,
        Method::GET,
        Duration::from_millis(3500),
        false,
        |c| c,
        |mut r| async move {
            for i in 0..2 {
                tokio::time::sleep(Duration::from_millis(700)).await;
                r.crash(i).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                r.restart(i, None).await?;
            }
            Ok(r)
        },
    )
    .await
}

/// Black hole: a fourth endpoint joins whose address drops SYNs (a pod on a node that just
/// died: no RST, connects time out). The slowest answer shows what live traffic paid for it.
pub async fn black_hole(mode: Mode) -> io::Result<Run> {
    let replicas = Replicas::start(&[app_replica("a"), app_replica("b"), app_replica("c")]).await?;
    let app = start_proxy(&proxy_config(mode, &replicas.addrs)).await?;
    let traffic = production_load(
        app.traffic_addrs[0],
        Method::GET,
        Duration::from_millis(3500),
    );
    let running = tokio::spawn(traffic.run());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hole_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?
    };
    let hole = BlackHole::at(hole_addr).await?;
    let mut addrs = replicas.addrs.clone();
    addrs.push(hole_addr);
    let config = Config::from_yaml(&proxy_config(mode, &addrs))
        .map_err(|e| io::Error::other(e.to_string()))?;
    app.reload(&config).map_err(io::Error::other)?;
    let report = running.await.unwrap_or_default();
    app.stop(Duration::from_secs(1)).await;
    drop(hole);
    Ok(Run {
        report,
        reached: replicas.reached(),
        posts: replicas.posts(),
    })
}

/// Keep-alive race: replicas that close connections idle for `app_keepalive` (gunicorn's
/// 2 s, Node's 5 s, or shorter), and clients whose requests come with idle gaps of about that
/// length, so that pooled connections are reused just as the app closes them.
pub async fn keepalive_race(
    mode: Mode,
    app_keepalive: Duration,
    method: Method,
    duration: Duration,
) -> io::Result<Report> {
    let closing = |name| {
        let mut b = Behaviour::named(name);
        b.idle_close = Some(app_keepalive);
        b.close_lag = Duration::from_millis(3);
        b
    };
    let replicas = Replicas::start(&[closing("a"), closing("b")]).await?;
    let app = start_proxy(&proxy_config(mode, &replicas.addrs)).await?;
    let mut traffic = Load::paced(app.traffic_addrs[0], method, 16, 0.0, duration);
    traffic.gap = app_keepalive;
    let report = traffic.run().await;
    app.stop(Duration::from_secs(1)).await;
    drop(replicas);
    Ok(report)
}

/// Run every scenario in both modes and print the table.
pub async fn run() -> io::Result<()> {
    println!("hitless demo: the same faults, through a plain proxy and through hitless.");
    println!(
        "Real servers and clients on 127.0.0.1, at {RATE} requests/s over {CONNECTIONS} keep-alive connections; about 90 seconds.\n"
    );
    type Scenario = (&'static str, fn(Mode) -> ScenarioFuture);
    let scenarios: [Scenario; 7] = [
        (
            "1a. rolling restart, GET (3 replicas, graceful stop)",
            |m| Box::pin(async move { rolling_restart(m, Method::GET).await.map(|r| r.report) }),
        ),
        ("1b. rolling restart, POST (128-byte bodies)", |m| {
            Box::pin(async move { rolling_restart(m, Method::POST).await.map(|r| r.report) })
        }),
        ("2. slow start (503 for 2 s after a restart)", |m| {
            Box::pin(async move { slow_start(m).await.map(|r| r.report) })
        }),
        ("3. crash (connections reset mid-response)", |m| {
            Box::pin(async move { crash(m).await.map(|r| r.report) })
        }),
        ("4. black hole (a new endpoint's address drops SYNs)", |m| {
            Box::pin(async move { black_hole(m).await.map(|r| r.report) })
        }),
        (
            "5a. keep-alive race, app closes idle after 200 ms (GET)",
            |m| {
                Box::pin(keepalive_race(
                    m,
                    Duration::from_millis(200),
                    Method::GET,
                    Duration::from_secs(3),
                ))
            },
        ),
        (
            "5b. keep-alive race, app closes idle after 200 ms (POST)",
            |m| {
                Box::pin(keepalive_race(
                    m,
                    Duration::from_millis(200),
                    Method::POST,
                    Duration::from_secs(3),
                ))
            },
        ),
    ];
    let mut rows = Vec::new();
    for (name, scenario) in scenarios {
        println!("{name}");
        let mut row = vec![name.to_string()];
        for mode in [Mode::Naive, Mode::Hitless] {
            let report = scenario(mode).await?;
            let slowest = report.latency(1.0).as_secs_f64() * 1000.0;
            println!(
                "  {:<12} {}, slowest answer {slowest:.0} ms",
                mode.label(),
                report.summary()
            );
            row.push(format!("{} / {}", report.errors(), report.requests()));
            row.push(format!("{slowest:.0} ms"));
        }
        rows.push(row);
    }
    println!("\nerrors seen by clients (errors / requests) and the slowest answer:");
    println!(
        "{:<58} {:>13} {:>8} {:>13} {:>8}",
        "scenario", "plain proxy", "", "hitless", ""
    );
    for row in rows {
        println!(
            "{:<58} {:>13} {:>8} {:>13} {:>8}",
            row[0], row[1], row[2], row[3], row[4]
        );
    }
    println!("\nWhat hitless did: took refusing endpoints out of rotation at once and probed them");
    println!("back, retried on another endpoint (never one that already failed the request),");
    println!("steered traffic away from endpoints that just failed, and re-sent requests that");
    println!("provably never reached an application.");
    Ok(())
}

type ScenarioFuture = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Report>>>>;
