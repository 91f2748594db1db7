//! Prometheus metrics: one registry built at start, handles resolved before traffic flows.
//!
//! The hot path only touches atomics: per-route handles hold one lazily created counter per
//! status code (`OnceLock`, so the family's lock is taken once per route and status, ever) and a
//! lock-free histogram (prometheus-client's own `Histogram` takes a mutex on every observe).
//! Labels are route, backend, status and cause only: never a path or a client address, so the
//! number of series is bounded by the configuration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub backend: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub route: String,
    /// `abort`, `delay` or `reset`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub route: String,
    /// The mirror backend.
    pub backend: String,
    /// `answered`, `failed`, `dropped` (too many in flight) or `skipped` (a body not held).
    pub result: String,
}

/// A route's mirror counters, one per result (made when the route is built).
#[derive(Debug, Clone)]
pub struct MirrorCounters {
    pub answered: Counter,
    pub failed: Counter,
    pub dropped: Counter,
    pub skipped: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub backend: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub backend: String,
    pub endpoint: String,
}

/// Why a pooled upstream connection was closed.
#[derive(Clone, Copy, Debug)]
pub enum CloseReason {
    /// Idle longer than the pool idle timeout (configured or learned).
    IdleTimeout,
    /// The upstream closed it while it was idle.
    UpstreamClose,
    /// During or right after an exchange: an error, a response not read to the end (client
    /// gone), or `Connection: close` from the upstream.
    Exchange,
    /// Its endpoint left the set, or the pool was full.
    Discarded,
}

impl CloseReason {
    const ALL: [CloseReason; 4] = [
        CloseReason::IdleTimeout,
        CloseReason::UpstreamClose,
        CloseReason::Exchange,
        CloseReason::Discarded,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::UpstreamClose => "upstream_close",
            CloseReason::Exchange => "exchange",
            CloseReason::Discarded => "discarded",
        }
    }
}

/// Request-duration buckets in seconds: from sub-millisecond proxying to the 30 s default
/// request timeout.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// A histogram that observes with atomics only. Clones share the same counts.
#[derive(Debug, Default, Clone)]
pub struct AtomicHistogram {
    inner: Arc<HistogramCounts>,
}

#[derive(Debug, Default)]
struct HistogramCounts {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, d: Duration) {
        let h = &self.inner;
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        h.counts[i].fetch_add(1, Ordering::Relaxed);
        h.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder accumulates: pass per-bucket counts.
        let mut total = 0u64;
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, upper) in BUCKETS.iter().chain([f64::INFINITY].iter()).enumerate() {
            let n = self.inner.counts[i].load(Ordering::Relaxed);
            total += n;
            buckets.push((*upper, n));
        }
        let sum = self.inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Everything the process exports. Built once; cloned `Arc`s are handed to tasks.
pub struct Metrics {
    pub registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, AtomicHistogram>,
    faults: Family<FaultLabels, Counter>,
    mirrors: Family<MirrorLabels, Counter>,
    errors: Vec<Counter>,
    conns_open: Family<BackendLabels, Gauge>,
    conns_idle: Family<BackendLabels, Gauge>,
    conns_opened: Family<BackendLabels, Counter>,
    downstream_conns: Gauge,
    /// Failed accepts (file descriptors exhausted...).
    pub accept_errors: Counter,
    /// Times the client connection limit was reached (hitless stopped accepting).
    pub connection_limit_reached: Counter,
    pub max_connections: Gauge,
    /// The kernel's count of connections dropped because a listen queue was full
    /// (`ListenOverflows` of /proc/net/netstat, this network namespace), read at each scrape.
    listen_overflows: Gauge,
    backend: BackendFamilies,
    pub draining: Gauge,
    pub drain_cut: Counter,
    pub tunnels_open: Gauge,
    pub tunnel_bytes_up: Counter,
    pub tunnel_bytes_down: Counter,
    reloads: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultBackendLabels {
    pub backend: String,
    pub result: String,
}

/// Families of the per-backend resilience metrics (retries, ejections, hold, overload).
struct BackendFamilies {
    conns_closed: Family<ReasonLabels, Counter>,
    in_flight: Family<BackendLabels, Gauge>,
    max_concurrent: Family<BackendLabels, Gauge>,
    endpoints: Family<BackendLabels, Gauge>,
    ejected: Family<BackendLabels, Gauge>,
    unready: Family<BackendLabels, Gauge>,
    unreachable: Family<BackendLabels, Gauge>,
    probes: Family<ResultBackendLabels, Counter>,
    ejections: Family<BackendLabels, Counter>,
    panics: Family<BackendLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    budget_exhausted: Family<BackendLabels, Counter>,
    held: Family<ReasonLabels, Counter>,
    keepalive_learned: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    discovery_updates: Family<BackendLabels, Counter>,
    discovery_errors: Family<BackendLabels, Counter>,
}

impl BackendFamilies {
    fn register(registry: &mut Registry) -> BackendFamilies {
        fn reg<M: Clone + EncodeMetric + TypedMetric + Send + Sync + std::fmt::Debug + 'static>(
            registry: &mut Registry,
            name: &str,
            help: &str,
            metric: M,
        ) -> M {
            registry.register(name, help, metric.clone());
            metric
        }
        BackendFamilies {
            conns_closed: reg(
                registry,
                "upstream_connections_closed",
                "Upstream connections closed, by backend and reason (idle_timeout, upstream_close, exchange, discarded)",
                Family::default(),
            ),
            in_flight: reg(
                registry,
                "backend_requests_in_flight",
                "Requests admitted to a backend and not finished (counted against max_concurrent_requests)",
                Family::default(),
            ),
            max_concurrent: reg(
                registry,
                "backend_max_concurrent_requests",
                "Configured concurrency limit of a backend",
                Family::default(),
            ),
            endpoints: reg(
                registry,
                "backend_endpoints",
                "Endpoints in a backend's current set",
                Family::default(),
            ),
            ejected: reg(
                registry,
                "backend_endpoints_ejected",
                "Endpoints currently ejected by outlier detection",
                Family::default(),
            ),
            unready: reg(
                registry,
                "backend_endpoints_unready",
                "Endpoints not (yet) passing their active health checks",
                Family::default(),
            ),
            unreachable: reg(
                registry,
                "backend_endpoints_unreachable",
                "Endpoints out of rotation because a connect was refused or unanswered, until a probe connects",
                Family::default(),
            ),
            probes: reg(
                registry,
                "endpoint_probes",
                "Out-of-band connects to unreachable endpoints, by result (ok, failed)",
                Family::default(),
            ),
            ejections: reg(
                registry,
                "outlier_ejections",
                "Endpoints ejected after consecutive failures",
                Family::default(),
            ),
            panics: reg(
                registry,
                "backend_panic_picks",
                "Requests sent to an ejected endpoint because every candidate was ejected (panic mode)",
                Family::default(),
            ),
            retries: reg(
                registry,
                "retries",
                "Retries, by backend and the reason of the failed attempt",
                Family::default(),
            ),
            budget_exhausted: reg(
                registry,
                "retry_budget_exhausted",
                "Retries not made because the backend's retry budget was spent",
                Family::default(),
            ),
            discovery_updates: reg(
                registry,
                "discovery_updates",
                "Changes of a discovered backend's endpoint set (DNS answers, EndpointSlice events)",
                Family::default(),
            ),
            discovery_errors: reg(
                registry,
                "discovery_errors",
                "Failed resolutions or watch errors; the last good endpoint set is kept",
                Family::default(),
            ),
            held: reg(
                registry,
                "held_requests",
                "Requests that waited for an endpoint (hold), by outcome (served, expired)",
                Family::default(),
            ),
            keepalive_learned: reg(
                registry,
                "upstream_keepalive_learned_seconds",
                "Pool idle timeout learned per endpoint from Keep-Alive headers or observed upstream closes",
                Family::default(),
            ),
        }
    }
}

impl Metrics {
    pub fn new(causes: &[&'static str]) -> Metrics {
        let mut registry = Registry::with_prefix("hitless");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, backend and status",
            requests.clone(),
        );
        let faults = Family::<FaultLabels, Counter>::default();
        registry.register(
            "faults_injected",
            "Faults injected on purpose (routes[].fault, x-hitless-fault), by route and kind",
            faults.clone(),
        );
        let mirrors = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "mirrored_requests",
            "Copies of requests sent to a route's mirror backend (routes[].mirror), by route, mirror backend and result (answered, failed, dropped, skipped)",
            mirrors.clone(),
        );
        let durations = Family::<RouteLabels, AtomicHistogram>::default();
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route and backend",
            durations.clone(),
        );
        let error_family = Family::<CauseLabels, Counter>::default();
        registry.register(
            "proxy_errors",
            "Answers produced by hitless instead of the backend, by cause",
            error_family.clone(),
        );
        let errors = causes
            .iter()
            .map(|c| {
                error_family
                    .get_or_create(&CauseLabels {
                        cause: (*c).to_string(),
                    })
                    .clone()
            })
            .collect();
        let conns_open = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "upstream_connections_open",
            "Upstream connections currently open, by backend",
            conns_open.clone(),
        );
        let conns_idle = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "upstream_connections_idle",
            "Upstream connections idle in the pool, by backend",
            conns_idle.clone(),
        );
        let conns_opened = Family::<BackendLabels, Counter>::default();
        registry.register(
            "upstream_connections_opened",
            "Upstream connections opened, by backend",
            conns_opened.clone(),
        );
        let downstream_conns = Gauge::default();
        registry.register(
            "downstream_connections_open",
            "Client connections currently open",
            downstream_conns.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Client connections that could not be accepted (file descriptors exhausted...)",
            accept_errors.clone(),
        );
        let connection_limit_reached = Counter::default();
        registry.register(
            "connection_limit_reached",
            "Times limits.max_connections was reached (new connections wait in the listen queue)",
            connection_limit_reached.clone(),
        );
        let max_connections = Gauge::default();
        registry.register(
            "max_connections",
            "Configured limit of client connections open at once (0: none)",
            max_connections.clone(),
        );
        let listen_overflows = Gauge::default();
        registry.register(
            "listen_overflows",
            "The kernel's ListenOverflows (/proc/net/netstat): connections dropped because a listen queue was full",
            listen_overflows.clone(),
        );
        let backend = BackendFamilies::register(&mut registry);
        let draining = Gauge::default();
        registry.register(
            "draining",
            "Drain phase: 0 serving, 1 draining (readiness off, still serving), 2 closing",
            draining.clone(),
        );
        let drain_cut = Counter::default();
        registry.register(
            "drain_cut_connections",
            "Client connections still open when drain.timeout ended the drain",
            drain_cut.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result (ok, error)",
            reloads.clone(),
        );
        let tunnels_open = Gauge::default();
        registry.register(
            "tunnels_open",
            "Upgraded connections (WebSocket...) currently spliced",
            tunnels_open.clone(),
        );
        let tunnel_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "tunnel_bytes",
            "Bytes carried by upgraded connections, by direction (up: client to backend)",
            tunnel_bytes.clone(),
        );
        let direction = |d: &str| {
            tunnel_bytes
                .get_or_create(&DirectionLabels {
                    direction: d.to_string(),
                })
                .clone()
        };
        let (tunnel_bytes_up, tunnel_bytes_down) = (direction("up"), direction("down"));
        // Both series exist from the start, so an alert on `increase(...)` sees the first error.
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabels {
                result: result.to_string(),
            });
        }
        Metrics {
            tunnels_open,
            tunnel_bytes_up,
            tunnel_bytes_down,
            draining,
            drain_cut,
            reloads,
            backend,
            registry,
            requests,
            durations,
            faults,
            mirrors,
            errors,
            conns_open,
            conns_idle,
            conns_opened,
            downstream_conns,
            accept_errors,
            connection_limit_reached,
            max_connections,
            listen_overflows,
        }
    }

    /// The mirror counters of `route` copying to `backend`.
    pub fn mirror(&self, route: &str, backend: &str) -> MirrorCounters {
        let counter = |result: &str| {
            self.mirrors
                .get_or_create(&MirrorLabels {
                    route: route.to_string(),
                    backend: backend.to_string(),
                    result: result.to_string(),
                })
                .clone()
        };
        MirrorCounters {
            answered: counter("answered"),
            failed: counter("failed"),
            dropped: counter("dropped"),
            skipped: counter("skipped"),
        }
    }

    /// Handles for one route (and its backend, or "-" for a direct answer).
    pub fn route(&self, route: &str, backend: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: route.to_string(),
            backend: backend.to_string(),
        };
        RouteMetrics {
            duration: self.durations.get_or_create(&labels).clone(),
            statuses: (0..500).map(|_| OnceLock::new()).collect(),
            family: self.requests.clone(),
            faults: self.faults.clone(),
            labels,
        }
    }

    pub fn backend(&self, backend: &str) -> BackendMetrics {
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        let f = &self.backend;
        let reason = |family: &Family<ReasonLabels, Counter>, reason: &str| {
            family
                .get_or_create(&ReasonLabels {
                    backend: backend.to_string(),
                    reason: reason.to_string(),
                })
                .clone()
        };
        let result = |family: &Family<ResultBackendLabels, Counter>, result: &str| {
            family
                .get_or_create(&ResultBackendLabels {
                    backend: backend.to_string(),
                    result: result.to_string(),
                })
                .clone()
        };
        BackendMetrics {
            conns_open: self.conns_open.get_or_create(&labels).clone(),
            conns_idle: self.conns_idle.get_or_create(&labels).clone(),
            conns_opened: self.conns_opened.get_or_create(&labels).clone(),
            conns_closed: Arc::new(CloseReason::ALL.map(|r| reason(&f.conns_closed, r.label()))),
            in_flight: f.in_flight.get_or_create(&labels).clone(),
            max_concurrent: f.max_concurrent.get_or_create(&labels).clone(),
            endpoints: f.endpoints.get_or_create(&labels).clone(),
            ejected: f.ejected.get_or_create(&labels).clone(),
            unready: f.unready.get_or_create(&labels).clone(),
            unreachable: f.unreachable.get_or_create(&labels).clone(),
            probes_ok: result(&f.probes, "ok"),
            probes_failed: result(&f.probes, "failed"),
            ejections: f.ejections.get_or_create(&labels).clone(),
            panics: f.panics.get_or_create(&labels).clone(),
            budget_exhausted: f.budget_exhausted.get_or_create(&labels).clone(),
            discovery_updates: f.discovery_updates.get_or_create(&labels).clone(),
            discovery_errors: f.discovery_errors.get_or_create(&labels).clone(),
            held_served: reason(&f.held, "served"),
            held_expired: reason(&f.held, "expired"),
            retries: f.retries.clone(),
            keepalive_learned: f.keepalive_learned.clone(),
            name: Arc::from(backend),
        }
    }

    /// Count a proxy-generated answer by its cause index (see `ProxyError::CAUSES`).
    pub fn proxy_error(&self, cause_index: usize) {
        if let Some(c) = self.errors.get(cause_index) {
            c.inc();
        }
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    pub fn downstream_connections(&self) -> &Gauge {
        &self.downstream_conns
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        if let Some(n) = listen_overflows() {
            self.listen_overflows.set(n);
        }
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            out.push_str("# encoding failed\n");
        }
        out
    }
}

/// Per-route handles: status counters created on first use, then only atomics.
pub struct RouteMetrics {
    duration: AtomicHistogram,
    /// Index: status - 100 (100..=599).
    statuses: Box<[OnceLock<Counter>]>,
    family: Family<RequestLabels, Counter>,
    faults: Family<FaultLabels, Counter>,
    labels: RouteLabels,
}

impl RouteMetrics {
    /// One fault injected on this route (rare: the series is made on first use).
    pub fn fault(&self, kind: &'static str) {
        self.faults
            .get_or_create(&FaultLabels {
                route: self.labels.route.clone(),
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed);
        let Some(slot) = self.statuses.get(status.wrapping_sub(100) as usize) else {
            return;
        };
        slot.get_or_init(|| {
            self.family
                .get_or_create(&RequestLabels {
                    route: self.labels.route.clone(),
                    backend: self.labels.backend.clone(),
                    status,
                })
                .clone()
        })
        .inc();
    }
}

/// Per-backend handles, updated by the pool, the balancer and the retry loop.
#[derive(Clone, Default)]
pub struct BackendMetrics {
    pub conns_open: Gauge,
    pub conns_idle: Gauge,
    pub conns_opened: Counter,
    conns_closed: Arc<[Counter; 4]>,
    pub in_flight: Gauge,
    pub max_concurrent: Gauge,
    pub endpoints: Gauge,
    pub ejected: Gauge,
    pub unready: Gauge,
    pub unreachable: Gauge,
    probes_ok: Counter,
    probes_failed: Counter,
    pub ejections: Counter,
    pub panics: Counter,
    pub budget_exhausted: Counter,
    pub discovery_updates: Counter,
    pub discovery_errors: Counter,
    pub held_served: Counter,
    pub held_expired: Counter,
    retries: Family<ReasonLabels, Counter>,
    keepalive_learned: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    name: Arc<str>,
}

impl BackendMetrics {
    /// An out-of-band probe of an unreachable endpoint connected (`ok`) or not.
    pub fn probe(&self, ok: bool) {
        if ok {
            self.probes_ok.inc();
        } else {
            self.probes_failed.inc();
        }
    }

    pub fn conn_closed(&self, reason: CloseReason) {
        self.conns_closed[reason as usize].inc();
    }

    /// A retry after a failure of this reason (a cause label, or a status such as "503").
    /// Retries are the exception, so the family's lookup is acceptable here.
    pub fn retry(&self, reason: &str) {
        self.retries
            .get_or_create(&ReasonLabels {
                backend: self.name.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The pool idle timeout learned for an endpoint; `None` removes the series.
    pub fn keepalive_learned(&self, endpoint: std::net::SocketAddr, value: Option<Duration>) {
        let labels = EndpointLabels {
            backend: self.name.to_string(),
            endpoint: endpoint.to_string(),
        };
        match value {
            Some(v) => {
                self.keepalive_learned
                    .get_or_create(&labels)
                    .set(v.as_secs_f64());
            }
            None => {
                self.keepalive_learned.remove(&labels);
            }
        }
    }
}

/// `ListenOverflows` from /proc/net/netstat (Linux; `None` elsewhere or when unreadable).
fn listen_overflows() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let at = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(at)?.parse().ok();
    }
    None
}
