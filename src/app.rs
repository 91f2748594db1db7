//! The composition root: from a validated `Config` to running listeners, and back down.
//!
//! Order at start: bind every port (so a taken port fails before anything runs), build metrics,
//! backends and the routing table, start the admin listener, the accept loops and the idle
//! reaper, then report ready. At stop: readiness off, accept loops stop, connections are asked
//! to finish, the process waits for them up to the grace period.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::inbound::listener::accept_loop;
use crate::inbound::server::Server;
use crate::proxy::error::ProxyError;
use crate::proxy::route::{Route, Router};
use crate::proxy::Proxy;
use crate::runtime::metrics::Metrics;
use crate::upstream::Backend;

/// How long in-flight requests get to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(20);

/// Sockets bound before anything runs.
pub struct Listeners {
    pub traffic: Vec<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    /// Bind every address in the config; the error names the address.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
        let mut traffic = Vec::new();
        for addr in &config.listeners {
            traffic.push(bind_one(*addr).await?);
        }
        let admin = bind_one(config.admin).await?;
        Ok(Listeners { traffic, admin })
    }
}

async fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// A running instance.
pub struct App {
    pub traffic_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub admin: Arc<AdminState>,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

impl App {
    /// Start serving on already-bound listeners, on the calling tokio runtime.
    pub fn start(config: &Config, listeners: Listeners) -> io::Result<App> {
        App::start_with_workers(config, listeners, 0)
    }

    /// Start serving with `workers` worker threads, each running a single-threaded runtime
    /// that accepts from a clone of every listener and serves the connections it accepted
    /// (the kernel wakes one of them per connection). `0` serves on the calling runtime.
    /// Admin, reaper and signals stay on the calling runtime either way.
    pub fn start_with_workers(
        config: &Config,
        listeners: Listeners,
        workers: usize,
    ) -> io::Result<App> {
        let metrics = Arc::new(Metrics::new(&ProxyError::CAUSES));
        let (router, backends) = build_router(config, &metrics, workers);
        let proxy = Arc::new(Proxy::new(router, Arc::clone(&metrics), config.access_log));
        let server = Arc::new(Server::new(Arc::clone(&proxy), &config.downstream));
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        for (backend, settings) in backends.iter().zip(&config.backends) {
            if let Some(checks) = &settings.health_check {
                tokio::spawn(crate::upstream::probe::run(
                    Arc::downgrade(backend),
                    checks.clone(),
                    shutdown.child_token(),
                ));
            }
        }

        let admin_addr = listeners.admin.local_addr()?;
        let admin = Arc::new(AdminState {
            metrics: Arc::clone(&metrics),
            ready: Default::default(),
        });
        tokio::spawn(admin::serve(
            listeners.admin,
            Arc::clone(&admin),
            shutdown.child_token(),
        ));

        let mut traffic_addrs = Vec::new();
        for listener in &listeners.traffic {
            traffic_addrs.push(listener.local_addr()?);
        }
        if workers == 0 {
            for listener in listeners.traffic {
                tokio::spawn(accept_loop(
                    listener,
                    Arc::clone(&server),
                    Arc::clone(&metrics),
                    shutdown.clone(),
                    connections.clone(),
                ));
            }
        } else {
            let std_listeners = listeners
                .traffic
                .into_iter()
                .map(|l| l.into_std())
                .collect::<io::Result<Vec<_>>>()?;
            for index in 0..workers {
                let clones = std_listeners
                    .iter()
                    .map(|l| l.try_clone())
                    .collect::<io::Result<Vec<_>>>()?;
                let worker = Worker {
                    index,
                    listeners: clones,
                    server: Arc::clone(&server),
                    metrics: Arc::clone(&metrics),
                    shutdown: shutdown.clone(),
                    connections: connections.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("hitless-worker-{index}"))
                    .spawn(move || worker.run())?;
            }
        }

        // Idle connections past their timeout are closed in the background too, not only
        // skipped at checkout: hitless must close an idle connection before the upstream does
        // (the upstream's close is what races with a new request). Reaping every tenth of the
        // shortest idle timeout closes connections within 110% of it (1.65 s for the 1.5 s
        // default, under gunicorn's 2 s).
        let reap_every = config
            .backends
            .iter()
            .map(|b| b.pool_idle_timeout / 10)
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        let reaper_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(reap_every);
            loop {
                tokio::select! {
                    _ = reaper_shutdown.cancelled() => return,
                    _ = tick.tick() => backends.iter().for_each(|b| b.reap()),
                }
            }
        });

        admin.ready.store(true, Ordering::Relaxed);
        tracing::info!(listeners = ?traffic_addrs, admin = %admin_addr, "hitless ready");
        Ok(App {
            traffic_addrs,
            admin_addr,
            proxy,
            admin,
            shutdown,
            connections,
        })
    }

    /// Stop accepting, ask connections to finish, and wait for them up to `grace`.
    /// Returns the number of connections that were still open when the grace period ended.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.admin.ready.store(false, Ordering::Relaxed);
        self.shutdown.cancel();
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            return self.connections.len();
        }
        0
    }
}

/// Backends (with their endpoint sets and pools) and the routing table for a config.
pub fn build_router(
    config: &Config,
    metrics: &Metrics,
    workers: usize,
) -> (Router, Vec<Arc<Backend>>) {
    let backends: Vec<Arc<Backend>> = config
        .backends
        .iter()
        .map(|b| {
            Arc::new(Backend::new(
                b,
                config.max_response_header_bytes,
                workers,
                metrics.backend(&b.name),
            ))
        })
        .collect();
    let routes = config
        .routes
        .iter()
        .map(|r| {
            let backend_name = match &r.action {
                crate::config::Action::Forward { backend } => config
                    .backends
                    .get(*backend)
                    .map(|b| b.name.as_str())
                    .unwrap_or("-"),
                crate::config::Action::Respond(_) => "-",
            };
            Route::new(r, &backends, metrics.route(&r.name, backend_name))
        })
        .collect();
    (Router::new(routes), backends)
}

/// One worker thread: a single-threaded runtime serving the connections it accepts.
struct Worker {
    index: usize,
    listeners: Vec<std::net::TcpListener>,
    server: Arc<Server>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

impl Worker {
    fn run(self) {
        crate::upstream::pool::set_worker_index(self.index);
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(worker = self.index, error = %e, "cannot start worker runtime");
                return;
            }
        };
        runtime.block_on(async move {
            let mut loops = Vec::new();
            for listener in self.listeners {
                match TcpListener::from_std(listener) {
                    Ok(listener) => loops.push(tokio::spawn(accept_loop(
                        listener,
                        Arc::clone(&self.server),
                        Arc::clone(&self.metrics),
                        self.shutdown.clone(),
                        self.connections.clone(),
                    ))),
                    Err(e) => {
                        tracing::error!(worker = self.index, error = %e, "cannot use listener")
                    }
                }
            }
            for accept in loops {
                let _ = accept.await;
            }
            // Connections accepted here are driven by this runtime: keep it until they end.
            self.connections.wait().await;
        });
    }
}

/// Worker threads to use: the configured number, or one per available core.
pub fn worker_count(config: &Config) -> usize {
    config.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// `hitless run` / `hitless sidecar`: bind, serve until a signal, stop gracefully.
pub async fn run(config: Config) -> Result<(), String> {
    let listeners = Listeners::bind(&config).await.map_err(|e| e.to_string())?;
    let app = App::start_with_workers(&config, listeners, worker_count(&config))
        .map_err(|e| e.to_string())?;
    let sig = crate::runtime::shutdown::signal()
        .await
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    tracing::info!(signal = sig, "stopping: finishing in-flight requests");
    tokio::select! {
        left = app.stop(GRACE) => {
            if left > 0 {
                tracing::warn!(connections = left, "grace period over: closing remaining connections");
            }
            tracing::info!("stopped");
            Ok(())
        }
        second = crate::runtime::shutdown::signal() => {
            tracing::warn!(signal = ?second.ok(), "second signal: exiting now");
            Ok(())
        }
    }
}
