//! The composition root: from a validated `Config` to running listeners, and back down.
//!
//! Order at start: bind every port (so a taken port fails before anything runs), build metrics,
//! backends and the routing table, start the admin listener, the accept loops and the idle
//! reaper, then report ready. At stop: readiness off, accept loops stop, connections are asked
//! to finish, the process waits for them up to the grace period.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::error::ProxyError;
use crate::inbound::listener::{accept_loop, Entry};
use crate::inbound::server::Server;
use crate::proxy::mirror::Mirror;
use crate::proxy::route::{Route, Router};
use crate::proxy::Proxy;
use crate::runtime::drain::{Control, Drain};
use crate::runtime::metrics::Metrics;
use crate::runtime::shutdown::{hangup, StopSignals};
use crate::upstream::Backend;

/// Sockets bound before anything runs.
pub struct Listeners {
    pub traffic: Vec<TcpListener>,
    pub admin: TcpListener,
}

impl Listeners {
    /// Bind every address in the config; the error names the address.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
        let mut traffic = Vec::new();
        let backlog = config.downstream.listen_backlog;
        for addr in &config.listeners {
            traffic.push(bind_one(*addr, backlog)?);
        }
        let admin = bind_one(config.admin, 128)?;
        Ok(Listeners { traffic, admin })
    }
}

/// Bind `addr` with a listen backlog of `backlog` (the default of 128 drops SYNs of a
/// connection burst: clients retry after a second or more).
fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let bind = || -> io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        TcpListener::from_std(socket.into())
    };
    bind().map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Say so when the process may not open `max_connections` client connections: each is a file
/// descriptor, and a soft limit of 1024 (a common default outside containers) makes accepts
/// fail long before the cap.
fn warn_if_few_files(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft {
        // Room for upstream connections, listeners and files too.
        if max_connections != 0 && soft < max_connections.saturating_add(1024) {
            tracing::warn!(
                open_files = soft,
                max_connections,
                "the open-files limit is below limits.max_connections plus upstream connections: \
                 accepts will fail first (raise it: ulimit -n, LimitNOFILE=, or lower the cap)"
            );
        }
    }
}

/// The next config from the cluster; never, without a controller.
async fn recv_config(configs: &mut Option<tokio::sync::mpsc::Receiver<Config>>) -> Option<Config> {
    match configs {
        Some(configs) => configs.recv().await,
        None => std::future::pending().await,
    }
}

/// A running instance.
pub struct App {
    pub traffic_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub admin: Arc<AdminState>,
    pub drain: Arc<Drain>,
    /// The live backends (swapped whole on reload), for the reaper and reloads.
    backends: Arc<ArcSwap<Vec<Arc<Backend>>>>,
    pub metrics: Arc<Metrics>,
    workers: usize,
    shutdown: CancellationToken,
    connections: TaskTracker,
    /// The TLS settings of each listener, whose certificates a reload may change.
    listener_tls: Vec<Option<crate::config::tls::ListenerTls>>,
    /// The listeners' addresses as configured at start.
    listener_binds: Vec<SocketAddr>,
    /// Their public ports as configured at start.
    listener_ports: Vec<u16>,
    /// The public ports connections carry (a bound port where the config says 0).
    serving_ports: Vec<u16>,
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
        let proxy = Arc::new(
            Proxy::new(
                router,
                Arc::clone(&metrics),
                config.access_log,
                &config.downstream,
            )
            .with_raw_streams(config.direct_path),
        );
        let server = Arc::new(Server::new(
            Arc::clone(&proxy),
            &config.downstream,
            config.direct_path,
        ));
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        start_checks(&backends, &shutdown);

        let admin_addr = listeners.admin.local_addr()?;
        let drain = Arc::new(Drain::new(config.drain.delay, metrics.draining.clone()));
        let admin = Arc::new(AdminState {
            metrics: Arc::clone(&metrics),
            ready: Default::default(),
            drain: Arc::clone(&drain),
            discovered: backends
                .iter()
                .filter(|b| b.config.discovery.is_some())
                .map(Arc::downgrade)
                .collect(),
        });
        // The admin listener outlives the drain: readiness must keep answering 503 and
        // metrics keep being scraped until the process exits.
        tokio::spawn(admin::serve(
            listeners.admin,
            Arc::clone(&admin),
            CancellationToken::new(),
        ));

        let mut traffic_addrs = Vec::new();
        for listener in &listeners.traffic {
            traffic_addrs.push(listener.local_addr()?);
        }
        for tls in config.listener_tls.iter().flatten() {
            watch_certificates(tls.clone(), shutdown.clone());
        }
        // Listener i terminates TLS when `listener_tls[i]` says so, and its clients reach it
        // on `listener_ports[i]` (tests may bind more; port 0: the one bound).
        let entries: Vec<Entry> = traffic_addrs
            .iter()
            .enumerate()
            .map(|(i, bound)| Entry {
                tls: config
                    .listener_tls
                    .get(i)
                    .and_then(|t| t.as_ref())
                    .map(|t| TlsAcceptor::from(Arc::clone(&t.server))),
                port: config
                    .listener_ports
                    .get(i)
                    .copied()
                    .filter(|p| *p != 0)
                    .unwrap_or(bound.port()),
            })
            .collect();
        let serving_ports: Vec<u16> = entries.iter().map(|e| e.port).collect();
        if workers == 0 {
            for (listener, tls) in listeners.traffic.into_iter().zip(entries) {
                tokio::spawn(accept_loop(
                    listener,
                    Arc::clone(&server),
                    Arc::clone(&metrics),
                    shutdown.clone(),
                    connections.clone(),
                    tls,
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
                    listeners: clones.into_iter().zip(entries.clone()).collect(),
                    server: Arc::clone(&server),
                    metrics: Arc::clone(&metrics),
                    shutdown: shutdown.clone(),
                    connections: connections.clone(),
                    tunnels: proxy.tunnels.clone(),
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
        let backends = Arc::new(ArcSwap::from_pointee(backends));
        let reaper_shutdown = shutdown.clone();
        let reaped = Arc::clone(&backends);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(reap_every);
            loop {
                tokio::select! {
                    _ = reaper_shutdown.cancelled() => return,
                    _ = tick.tick() => reaped.load().iter().for_each(|b| b.reap()),
                }
            }
        });

        admin.ready.store(true, Ordering::Relaxed);
        tracing::info!(listeners = ?traffic_addrs, admin = %admin_addr, "hitless ready");
        warn_if_few_files(config.downstream.max_connections);
        Ok(App {
            traffic_addrs,
            admin_addr,
            proxy,
            admin,
            drain,
            backends,
            metrics,
            workers,
            shutdown,
            connections,
            listener_tls: config.listener_tls.clone(),
            listener_binds: config.listeners.clone(),
            listener_ports: config.listener_ports.clone(),
            serving_ports,
        })
    }

    /// Stop accepting, ask connections to finish, and wait for them up to `grace`, without
    /// a drain delay. Returns the number of connections still open when the grace ended.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.admin.ready.store(false, Ordering::Relaxed);
        self.close();
        if tokio::time::timeout(grace, self.finished()).await.is_err() {
            return self.connections.len() + self.proxy.tunnels.len();
        }
        0
    }

    /// Every client connection and tunnel has ended (after `close`).
    async fn finished(&self) {
        self.connections.wait().await;
        self.proxy.tunnels.wait().await;
    }

    /// The drain's closing phase: listeners close, connections are told to finish.
    fn close(&self) {
        self.drain.close();
        self.shutdown.cancel();
        self.connections.close();
        self.proxy.tunnels.close();
    }

    /// Apply a new (validated) config: routes, backends and TLS listeners' certificates are
    /// swapped at once; requests already routed finish on what they had. Listeners, admin,
    /// runtime and drain settings need a restart (said in the log). Refused, changing nothing,
    /// when a route names a listener port the running listeners do not have (it could never
    /// match before a restart).
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        if let Some((route, port)) = config.routes.iter().find_map(|r| {
            r.listener_ports
                .iter()
                .find(|p| !self.serving_ports.contains(p))
                .map(|p| (&r.name, p))
        }) {
            return Err(format!(
                "route {route:?} names listener port {port}, which the running listeners do not have (a changed public_port needs a restart)"
            ));
        }
        let old = self.backends.load_full();
        let backends = build_backends(config, &self.metrics, self.workers, &old);
        let fresh: Vec<Arc<Backend>> = backends
            .iter()
            .filter(|b| !old.iter().any(|o| Arc::ptr_eq(o, b)))
            .cloned()
            .collect();
        start_checks(&fresh, &self.shutdown);
        let router = build_routes(config, &backends, &self.metrics);
        self.proxy.swap_router(router);
        self.backends.store(Arc::new(backends));
        // A listener's certificates may change (the ingress controller adds one per TLS
        // Secret): new handshakes choose among the new set; the sockets stay.
        // Paired by position only while the listeners are those it started with (a changed
        // list needs a restart, as the log says).
        let same_listeners =
            config.listeners == self.listener_binds && config.listener_ports == self.listener_ports;
        if !same_listeners {
            tracing::warn!("listeners changed in the config: they take effect at the next restart (routes and backends are reloaded now)");
        }
        let pairs = self.listener_tls.iter().zip(&config.listener_tls);
        for (running, new) in pairs.filter(|_| same_listeners) {
            if let (Some(running), Some(new)) = (running, new) {
                if running.adopt(new) {
                    tracing::info!(
                        certificates = new.certificates.len(),
                        "TLS certificates reloaded"
                    );
                }
            }
        }
        tracing::info!(
            routes = config.routes.len(),
            backends = config.backends.len(),
            rebuilt_backends = fresh.len(),
            "configuration reloaded"
        );
        Ok(())
    }

    /// Client connections open, and requests in flight to backends.
    fn in_flight(&self) -> (usize, i64) {
        let requests = self
            .backends
            .load()
            .iter()
            .map(|b| b.metrics.in_flight.get())
            .sum();
        (self.connections.len() + self.proxy.tunnels.len(), requests)
    }
}

/// Backends (with their endpoint sets and pools) and the routing table for a config.
pub fn build_router(
    config: &Config,
    metrics: &Metrics,
    workers: usize,
) -> (Router, Vec<Arc<Backend>>) {
    let backends = build_backends(config, metrics, workers, &[]);
    (build_routes(config, &backends, metrics), backends)
}

/// The backends of `config`, keeping each of `existing` whose settings are unchanged (only its
/// endpoint list is published again): its endpoints' pooled connections, health and counters
/// survive a reload, and a request in flight on a replaced backend finishes on the old one.
fn build_backends(
    config: &Config,
    metrics: &Metrics,
    workers: usize,
    existing: &[Arc<Backend>],
) -> Vec<Arc<Backend>> {
    config
        .backends
        .iter()
        .map(|b| {
            let same = existing.iter().find(|old| {
                let mut settings = old.config.clone();
                settings.endpoints.clone_from(&b.endpoints);
                old.name == b.name && settings == *b
            });
            match same {
                Some(old) => {
                    // A discovered backend's set belongs to its discovery task.
                    if b.discovery.is_none() {
                        old.endpoints.publish(&b.endpoints);
                    }
                    Arc::clone(old)
                }
                None => Arc::new(Backend::new(
                    b,
                    config.max_response_header_bytes,
                    workers,
                    metrics.backend(&b.name),
                )),
            }
        })
        .collect()
}

fn build_routes(config: &Config, backends: &[Arc<Backend>], metrics: &Metrics) -> Router {
    let routes = config
        .routes
        .iter()
        .map(|r| {
            // Series per (route, backend): a split's requests count under the backend each
            // one went to.
            let handles = |backend: &str| metrics.route(&r.name, backend);
            let mirror = r.mirror.and_then(|m| {
                let backend = backends.get(m.backend)?;
                let counters = metrics.mirror(&r.name, &backend.name);
                let timeout = r.backend_request_timeout;
                Some(Mirror::new(Arc::clone(backend), m.share, timeout, counters))
            });
            Route::new(r, backends, &handles, mirror)
        })
        .collect();
    Router::new(routes)
}

/// Reload a TLS listener's certificates when their files change (Secret rotation): new
/// handshakes get the new certificates, open connections keep theirs.
fn watch_certificates(tls: crate::config::tls::ListenerTls, shutdown: CancellationToken) {
    let files: Vec<PathBuf> = tls
        .certificates
        .iter()
        .flat_map(|c| [c.cert.clone(), c.key.clone()])
        .collect();
    if files.is_empty() {
        // Only a self-signed certificate: nothing to watch.
        return;
    }
    let (watcher, mut changes) = match crate::runtime::watch::watch_files(&files) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch certificate files: they are loaded at start only");
            return;
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.recv() => if changed.is_none() { return },
            }
            // A rotation writes certificate and key separately: let it finish.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while changes.try_recv().is_ok() {}
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificates reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificates not reloaded: keeping the ones in use")
                }
            }
        }
    });
}

/// Start the background tasks of new backends: endpoint discovery and active health checks.
fn start_checks(backends: &[Arc<Backend>], shutdown: &CancellationToken) {
    for backend in backends {
        crate::discovery::start(backend, shutdown.child_token());
        if let Some(checks) = &backend.config.health_check {
            tokio::spawn(crate::upstream::checks::run(
                Arc::downgrade(backend),
                checks.clone(),
                shutdown.child_token(),
            ));
        }
    }
}

/// One worker thread: a single-threaded runtime serving the connections it accepts.
struct Worker {
    index: usize,
    listeners: Vec<(std::net::TcpListener, Entry)>,
    server: Arc<Server>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    tunnels: TaskTracker,
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
            for (listener, tls) in self.listeners {
                match TcpListener::from_std(listener) {
                    Ok(listener) => loops.push(tokio::spawn(accept_loop(
                        listener,
                        Arc::clone(&self.server),
                        Arc::clone(&self.metrics),
                        self.shutdown.clone(),
                        self.connections.clone(),
                        tls,
                    ))),
                    Err(e) => {
                        tracing::error!(worker = self.index, error = %e, "cannot use listener")
                    }
                }
            }
            for accept in loops {
                let _ = accept.await;
            }
            // Connections accepted here, and tunnels spliced here, are driven by this runtime:
            // keep it until they end (the process exits at the drain timeout otherwise).
            self.connections.wait().await;
            self.tunnels.wait().await;
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

/// Run until drained: serve, reload on SIGHUP or a change of `source`, and on SIGTERM/SIGINT
/// or `hitless drain` go through the drain phases (`runtime/drain.rs`), then return.
pub async fn run(
    config: Config,
    source: Option<PathBuf>,
    controller: Option<crate::ingress::controller::Controller>,
) -> Result<(), String> {
    let mut stops =
        StopSignals::new().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut hup = hangup().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listeners = Listeners::bind(&config).await.map_err(|e| e.to_string())?;
    let app = App::start_with_workers(&config, listeners, worker_count(&config))
        .map_err(|e| e.to_string())?;
    let control = match Control::bind(&config.drain.control_socket, Arc::clone(&app.drain)).await {
        Ok(control) => Some(control),
        Err(e) => {
            tracing::warn!(error = %e, "no control socket: `hitless drain` cannot reach this process (SIGTERM still drains)");
            None
        }
    };
    let watched = source.as_deref().map(crate::runtime::watch::watch);
    let (_watcher, mut changes) = match watched {
        Some(Ok((watcher, changes))) => (Some(watcher), Some(changes)),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot watch the config file: reload on SIGHUP only");
            (None, None)
        }
        None => (None, None),
    };
    // Controller mode: configs built from the cluster's objects, applied as reloads.
    let controller_stop = CancellationToken::new();
    let mut cluster = controller.map(|controller| {
        let (sender, configs) = tokio::sync::mpsc::channel(4);
        tokio::spawn(controller.run(sender, controller_stop.clone()));
        configs
    });
    let mut reloader = Reloader {
        last: source.as_ref().and_then(|p| std::fs::read(p).ok()),
        source,
    };

    // Serving.
    let mut signalled = false;
    // Writers often touch a file several times: reload once they have been quiet a moment.
    let mut reload_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            sig = stops.next() => {
                signalled = true;
                app.drain.begin(sig);
                break;
            }
            _ = app.drain.started() => break,
            _ = hup.recv() => reloader.reload(&app, "SIGHUP", true),
            Some(config) = recv_config(&mut cluster) => {
                if let Err(e) = app.reload(&config) {
                    tracing::error!(error = %e, "ingress controller: config not applied: keeping the running one");
                }
            }
            Some(()) = recv(&mut changes) => {
                reload_at = Some(tokio::time::Instant::now() + Duration::from_millis(100));
            }
            _ = sleep_until(reload_at) => {
                reload_at = None;
                reloader.reload(&app, "file change", false);
            }
        }
    }

    controller_stop.cancel();
    // Draining: readiness is off, traffic still served for the delay.
    let (connections, requests) = app.in_flight();
    tracing::info!(
        connections,
        requests,
        "drain phase 1/3: readiness off, serving on for drain.delay"
    );
    loop {
        tokio::select! {
            _ = app.drain.delay_over() => break,
            sig = stops.next() => {
                if signalled {
                    tracing::warn!(signal = sig, "second signal: exiting now");
                    return Ok(());
                }
                // After `hitless drain`: the delay already runs; it is not waited twice.
                signalled = true;
            }
        }
    }

    // Closing: listeners closed, connections told to finish.
    app.close();
    let (connections, requests) = app.in_flight();
    tracing::info!(
        connections,
        requests,
        "drain phase 2/3: listeners closed, waiting for in-flight requests"
    );
    let deadline = tokio::time::Instant::now() + config.drain.timeout;
    loop {
        tokio::select! {
            _ = app.finished() => {
                tracing::info!("drain phase 3/3: every request finished, exiting");
                break;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let (connections, requests) = app.in_flight();
                app.metrics.drain_cut.inc_by(connections as u64);
                tracing::warn!(
                    connections,
                    requests,
                    "drain phase 3/3: drain.timeout reached, cutting what is left"
                );
                break;
            }
            sig = stops.next() => {
                if signalled {
                    tracing::warn!(signal = sig, "second signal: exiting now");
                    return Ok(());
                }
                signalled = true;
            }
        }
    }
    if let Some(control) = &control {
        control.finish().await;
    }
    Ok(())
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv(changes: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Reloads from the config file, skipping file events that did not change its bytes since
/// the last attempt (valid or not); SIGHUP always tries again.
struct Reloader {
    source: Option<PathBuf>,
    last: Option<Vec<u8>>,
}

impl Reloader {
    fn reload(&mut self, app: &App, trigger: &str, forced: bool) {
        let Some(path) = &self.source else {
            tracing::info!(trigger, "no config file (sidecar flags): nothing to reload");
            return;
        };
        let bytes = std::fs::read(path).ok();
        if !forced && bytes.is_some() && bytes == self.last {
            return;
        }
        self.last.clone_from(&bytes);
        match Config::load(path) {
            Ok(config) => match app.reload(&config) {
                Ok(()) => {
                    app.metrics.reload(true);
                    tracing::info!(trigger, file = %path.display(), "reload applied");
                }
                Err(e) => {
                    app.metrics.reload(false);
                    tracing::error!(trigger, file = %path.display(), error = %e, "reload rejected: keeping the running configuration");
                }
            },
            Err(errors) => {
                app.metrics.reload(false);
                for e in &errors.0 {
                    tracing::error!(trigger, file = %path.display(), error = %e, "reload rejected: keeping the running configuration");
                }
            }
        }
    }
}
