//! `hitless demo`: the failure modes of the 502 guide, reproduced with real servers on
//! loopback, through hitless with every protection off (what a plain reverse proxy does) and
//! with its defaults, side by side. Needs nothing installed and runs in about half a minute.
//!
//! The same scenarios are the resilience tests (`tests/resilience.rs`), which assert zero
//! errors through hitless's defaults; the demo only prints what happened.

pub mod load;
pub mod replica;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use tokio::net::TcpListener;

use crate::app::{App, Listeners};
use crate::config::Config;
use load::{Load, Report};
use replica::{Behaviour, Replica};

/// How the proxy in front of the replicas is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One attempt, no hold, no ejection, a 60 s pool idle timeout: a plain reverse proxy.
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
            "retry: {{attempts: 1}}\nbackends:\n  app:\n    endpoints: [{list}]\n    hold_timeout: 0s\n    outlier: {{consecutive_failures: 0}}\n    pool: {{idle_timeout: 60s}}\nroutes:\n  - backend: app\n"
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
    config.access_log = false;
    let listeners = Listeners {
        traffic: vec![TcpListener::bind("127.0.0.1:0").await?],
        admin: TcpListener::bind("127.0.0.1:0").await?,
    };
    App::start(&config, listeners)
}

async fn replicas(behaviours: &[Behaviour]) -> io::Result<Vec<Replica>> {
    let mut out = Vec::new();
    for b in behaviours {
        out.push(Replica::start(SocketAddr::from(([127, 0, 0, 1], 0)), b.clone()).await?);
    }
    Ok(out)
}

fn load(target: SocketAddr, duration: Duration, method: Method, gap: Duration) -> Load {
    Load {
        target,
        concurrency: 8,
        duration,
        method,
        gap,
    }
}

/// Scenario 1, rolling restart: three replicas restarted one after another, each stopping
/// gracefully, down for 400 ms, then answering 503 for 300 ms while it starts.
pub async fn rolling_restart(mode: Mode) -> io::Result<Report> {
    let names = ["a", "b", "c"];
    let mut reps = replicas(&names.map(Behaviour::named)).await?;
    let addrs: Vec<SocketAddr> = reps.iter().map(|r| r.addr).collect();
    let app = start_proxy(&proxy_config(mode, &addrs)).await?;
    let traffic = load(
        app.traffic_addrs[0],
        Duration::from_millis(3600),
        Method::GET,
        Duration::from_millis(5),
    );
    let running = tokio::spawn(async move { traffic.run().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, name) in names.iter().enumerate() {
        let old = reps.remove(i);
        let (addr, seen) = (old.addr, std::sync::Arc::clone(&old.seen));
        old.stop().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut starting = Behaviour::named(name);
        starting.not_ready_for = Some(Duration::from_millis(300));
        reps.insert(i, Replica::start_with(addr, starting, seen).await?);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let report = running.await.unwrap_or_default();
    app.stop(Duration::from_secs(1)).await;
    Ok(report)
}

/// Scenario 2, crash: replicas that take 20 ms per request; two of them crash in turn (every
/// connection reset, in-flight requests included) and come back 500 ms later.
pub async fn crash(mode: Mode) -> io::Result<Report> {
    let slow = |name| {
        let mut b = Behaviour::named(name);
        b.delay = Duration::from_millis(20);
        b
    };
    let mut reps = replicas(&[slow("a"), slow("b"), slow("c")]).await?;
    let addrs: Vec<SocketAddr> = reps.iter().map(|r| r.addr).collect();
    let app = start_proxy(&proxy_config(mode, &addrs)).await?;
    let traffic = load(
        app.traffic_addrs[0],
        Duration::from_millis(2800),
        Method::GET,
        Duration::ZERO,
    );
    let running = tokio::spawn(async move { traffic.run().await });
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = reps.remove(i);
        let (addr, seen) = (old.addr, std::sync::Arc::clone(&old.seen));
        old.crash().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        reps.insert(i, Replica::start_with(addr, slow(name), seen).await?);
    }
    let report = running.await.unwrap_or_default();
    app.stop(Duration::from_secs(1)).await;
    Ok(report)
}

/// Scenario 3, keep-alive race: replicas that close connections idle for `app_keepalive`
/// (gunicorn's 2 s, Node's 5 s, or shorter), and clients whose requests come with idle gaps
/// of about that length, so that pooled connections are reused just as the app closes them.
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
    let reps = replicas(&[closing("a"), closing("b")]).await?;
    let addrs: Vec<SocketAddr> = reps.iter().map(|r| r.addr).collect();
    let app = start_proxy(&proxy_config(mode, &addrs)).await?;
    let mut traffic = load(app.traffic_addrs[0], duration, method, app_keepalive);
    traffic.concurrency = 16;
    let report = traffic.run().await;
    app.stop(Duration::from_secs(1)).await;
    drop(reps);
    Ok(report)
}

/// Run every scenario in both modes and print the table.
pub async fn run() -> io::Result<()> {
    println!("hitless demo: the same faults, through a plain proxy and through hitless.");
    println!("Real servers and clients on 127.0.0.1; about 30 seconds.\n");
    type Scenario = (&'static str, fn(Mode) -> ScenarioFuture);
    let scenarios: [Scenario; 4] = [
        (
            "1. rolling restart (3 replicas, graceful stop, slow start)",
            |m| Box::pin(rolling_restart(m)),
        ),
        ("2. crash (connections reset mid-response)", |m| {
            Box::pin(crash(m))
        }),
        (
            "3a. keep-alive race, app closes idle after 200 ms (GET)",
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
            "3b. keep-alive race, app closes idle after 200 ms (POST)",
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
            println!("  {:<12} {}", mode.label(), report.summary());
            row.push(format!("{} / {}", report.errors(), report.requests()));
        }
        rows.push(row);
    }
    println!("\nerrors seen by clients (errors / requests):");
    println!("{:<60} {:>16} {:>16}", "scenario", "plain proxy", "hitless");
    for row in rows {
        println!("{:<60} {:>16} {:>16}", row[0], row[1], row[2]);
    }
    println!("\nWhat hitless did: retried refused, reset and 503 answers on another endpoint,");
    println!(
        "ejected failing endpoints, and re-sent requests that met a closed pooled connection."
    );
    Ok(())
}

type ScenarioFuture = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Report>>>>;
