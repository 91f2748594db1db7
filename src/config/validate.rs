//! Raw YAML shapes -> validated domain types, with every error collected and named by its path.
//!
//! All defaults live here (and in the README table that mirrors `Defaults`). Nothing after this
//! step re-checks a value: a `Config` that exists is one the proxy can run. The timeout-chain
//! warnings of `hitless check` are computed from the domain types in `warnings()`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use super::raw::{
    RawConfig, RawHeaderFilter, RawHealthCheck, RawListener, RawMatch, RawNameValue, RawOutlier,
    RawRedirect, RawRespond, RawRetry, RawRewrite, RawRoute, RawWeightedBackend,
};

/// Every default in one place.
pub struct Defaults;

impl Defaults {
    pub const LISTEN: &'static str = "0.0.0.0:8080";
    pub const ADMIN: &'static str = "127.0.0.1:9901";
    /// Whole request, across attempts, until the response head.
    pub const REQUEST: Duration = Duration::from_secs(30);
    /// One attempt, until the response head.
    pub const BACKEND_REQUEST: Duration = Duration::from_secs(10);
    /// Client keep-alive connections with nothing in flight are closed after this.
    pub const IDLE: Duration = Duration::from_secs(60);
    /// An upgraded connection (WebSocket) silent both ways this long is closed; applications
    /// ping far more often than this.
    pub const TUNNEL_IDLE: Duration = Duration::from_secs(3600);
    /// From the first byte of a request head to its end (slow-loris guard).
    pub const HEADER_READ: Duration = Duration::from_secs(10);
    /// In-cluster connects take microseconds; a SYN left unanswered is a dead pod.
    pub const CONNECT: Duration = Duration::from_secs(1);
    /// Shorter than every common app keep-alive (gunicorn 2 s, Node.js/uvicorn/Apache 5 s), so
    /// a pooled connection is never reused just as the app closes it.
    pub const POOL_IDLE: Duration = Duration::from_millis(1500);
    pub const MAX_IDLE_PER_ENDPOINT: usize = 128;
    pub const MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
    /// Client connections at once: about 30 MiB of idle connections (1.7 KiB each).
    pub const MAX_CONNECTIONS: usize = 16_384;
    /// The kernel caps it at net.core.somaxconn (4096 on current kernels).
    pub const LISTEN_BACKLOG: u32 = 4096;
    /// nginx's 4-8 KiB `proxy_buffer_size` is a classic 502 source; be generous.
    pub const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;
    /// Total tries per request, the first included.
    pub const RETRY_ATTEMPTS: u32 = 3;
    /// Retried by default: failures that say nothing about the request itself. Timeouts are not
    /// (a slow backend retried is a slower backend).
    pub const RETRY_ON: &'static [&'static str] =
        &["connect-failure", "refused-stream", "reset", "502", "503"];
    /// Retries may add this share of the requests...
    pub const RETRY_BUDGET_RATIO: f64 = 0.2;
    /// ...plus this many per second, so that low traffic can still retry.
    pub const RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
    /// Bodies up to this size are kept for re-sending (and read whole before the first try).
    pub const MAX_REPLAY_BYTES: usize = 64 * 1024;
    /// Consecutive failures (connect failure, reset, 502/503/504, per-try timeout) that eject
    /// an endpoint. An unanswered connect (`connect_timeout`) ejects at once: it is what a
    /// deleted pod's address does, and every request sent there pays the whole timeout.
    pub const OUTLIER_CONSECUTIVE_FAILURES: u32 = 3;
    /// First ejection; each further one doubles it, up to `OUTLIER_MAX_EJECTION`.
    pub const OUTLIER_BASE_EJECTION: Duration = Duration::from_secs(1);
    pub const OUTLIER_MAX_EJECTION: Duration = Duration::from_secs(30);
    /// At most this share of a backend's endpoints is ejected at once (always at least one).
    pub const OUTLIER_MAX_EJECTED_PERCENT: u32 = 50;
    /// Long enough for a single-replica restart or a sidecar's app restart to be invisible,
    /// short enough that a real outage is reported within seconds.
    pub const HOLD: Duration = Duration::from_secs(3);
    /// Active health checks, when configured: often enough to find a new pod ready within a
    /// second or two, each on a new connection.
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
    /// Readiness off, still serving: long enough for the endpoint removal to reach every
    /// kube-proxy and load balancer (a few seconds in a healthy cluster).
    pub const DRAIN_DELAY: Duration = Duration::from_secs(5);
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
    /// Kubernetes' default `terminationGracePeriodSeconds`.
    pub const GRACE_PERIOD: Duration = Duration::from_secs(30);
    /// Readiness probes run every 10 s by default and fail after one miss at best; endpoint
    /// removal then takes a second or two to propagate.
    pub const MIN_SENSIBLE_DRAIN_DELAY: Duration = Duration::from_secs(2);
    pub const CONTROL_SOCKET: &'static str = "/tmp/hitless.sock";
    /// Envoy's default circuit-breaker limit; excess gets a fast 503 instead of a queue.
    pub const MAX_CONCURRENT_REQUESTS: usize = 1024;
}

/// When a failed attempt is tried again (Envoy's `retry_on`, nginx's `proxy_next_upstream`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub reset: bool,
    pub status_502: bool,
    pub status_503: bool,
    pub status_504: bool,
    pub backend_timeout: bool,
}

impl RetryOn {
    pub const NAMES: [&'static str; 7] = [
        "connect-failure",
        "refused-stream",
        "reset",
        "502",
        "503",
        "504",
        "backend-timeout",
    ];

    fn set(&mut self, name: &str) -> bool {
        let slot = match name {
            "connect-failure" => &mut self.connect_failure,
            "refused-stream" => &mut self.refused_stream,
            "reset" => &mut self.reset,
            "502" => &mut self.status_502,
            "503" => &mut self.status_503,
            "504" => &mut self.status_504,
            "backend-timeout" => &mut self.backend_timeout,
            _ => return false,
        };
        *slot = true;
        true
    }

    pub fn names(&self) -> Vec<&'static str> {
        let flags = [
            self.connect_failure,
            self.refused_stream,
            self.reset,
            self.status_502,
            self.status_503,
            self.status_504,
            self.backend_timeout,
        ];
        Self::NAMES
            .iter()
            .zip(flags)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn status(&self, status: u16) -> bool {
        matches!(
            (status, self.status_502, self.status_503, self.status_504),
            (502, true, _, _) | (503, _, true, _) | (504, _, _, true)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, the first included (1 = no retry).
    pub attempts: u32,
    pub on: RetryOn,
    /// Treat every request on this route as idempotent (safe to send twice).
    pub idempotent: bool,
    /// Request bodies with a `Content-Length` up to this are read whole before the first try
    /// and kept until the response head arrives, so that they can be sent again.
    pub max_replay_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub ratio: f64,
    pub min_per_second: u32,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<SocketAddr>,
    /// TLS termination per listener (same order as `listeners`).
    pub listener_tls: Vec<Option<super::tls::ListenerTls>>,
    /// The port clients reach each listener on (same order; `public_port`, default the bound
    /// port, 0 when bound to port 0 without one: the port the kernel chose).
    pub listener_ports: Vec<u16>,
    pub admin: SocketAddr,
    pub downstream: Downstream,
    pub max_response_header_bytes: usize,
    pub backends: Vec<BackendConfig>,
    pub routes: Vec<RouteConfig>,
    pub access_log: bool,
    pub worker_threads: Option<usize>,
    /// Plain HTTP/1.1 requests to `http` backends are relayed as bytes (`proxy/direct.rs`);
    /// `false` sends every request through hyper.
    pub direct_path: bool,
    /// What the clients in front wait (hint for the timeout chain check only).
    pub client_timeout: Option<Duration>,
    pub drain: DrainConfig,
}

/// How hitless stops (see `runtime/drain.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct DrainConfig {
    /// Serving on after readiness turned off, while endpoint removal propagates.
    pub delay: Duration,
    /// Then at most this for in-flight requests to finish.
    pub timeout: Duration,
    /// Unix socket for `hitless drain`.
    pub control_socket: std::path::PathBuf,
    /// The pod's termination grace period, when given (else Kubernetes' default, 30 s).
    pub grace_period: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Downstream {
    pub idle: Duration,
    pub header_read: Duration,
    pub max_request_header_bytes: usize,
    pub tunnel_idle: Duration,
    /// Forward request header names with `_` (many backends read `Content_Length` as
    /// `Content-Length`: dropped by default).
    pub keep_underscore_headers: bool,
    /// Client connections open at once (0: no limit); beyond, hitless stops accepting until
    /// one closes (the kernel queues new ones, up to `listen_backlog`).
    pub max_connections: usize,
    pub listen_backlog: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Power of two random choices on outstanding requests.
    P2c,
    RoundRobin,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::P2c => "p2c",
            Balance::RoundRobin => "round_robin",
        }
    }
}

/// Active health checks of a backend's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub path: String,
    /// gRPC health protocol service name, for grpc/grpcs backends.
    pub grpc_service: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive health: when an endpoint is ejected, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// 0 disables ejection.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

/// How hitless speaks to a backend's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, pooled connections.
    Http,
    /// HTTP/2 without TLS (prior knowledge): one multiplexed connection per endpoint and worker.
    H2c,
    /// gRPC over h2c.
    Grpc,
    /// HTTP/1.1 over TLS (ALPN http/1.1), pooled.
    Https,
    /// gRPC: HTTP/2 over TLS (ALPN h2), multiplexed.
    Grpcs,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::H2c => "h2c",
            Protocol::Grpc => "grpc",
            Protocol::Https => "https",
            Protocol::Grpcs => "grpcs",
        }
    }

    pub fn is_h2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::Grpc | Protocol::Grpcs)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Grpcs)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    pub protocol: Protocol,
    /// For `https` and `grpcs`.
    pub tls: Option<super::tls::BackendTls>,
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints found at run time; `endpoints` is then empty.
    pub discovery: Option<super::discovery::Discovery>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub upstream_keepalive_timeout: Option<Duration>,
    pub retry_budget: BudgetConfig,
    pub outlier: OutlierConfig,
    /// Zero: no hold.
    pub hold_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub health_check: Option<HealthCheckConfig>,
    /// Zero: none.
    pub slow_start: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` is stored as `.example.com`: matches one or more labels before it.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// `match.path_regex`.
    Regex(PathRegex),
}

/// A compiled `match.path_regex` (the `regex` crate: matching in linear time, whatever the
/// pattern or the path), equal to another when their patterns are.
#[derive(Debug, Clone)]
pub struct PathRegex(pub regex::Regex);

impl PartialEq for PathRegex {
    fn eq(&self, other: &PathRegex) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for PathRegex {}

/// At most this long a `path_regex` (bytes), this large compiled, and this much lazy-DFA
/// cache per thread: a config cannot make matching slow or memory large.
const MAX_REGEX_LEN: usize = 1024;
const MAX_REGEX_SIZE: usize = 1 << 20;
const MAX_REGEX_CACHE: usize = 256 << 10;

/// `pattern` compiled as a `path_regex` (or a header or query `pattern`), within the limits
/// above; `Err`: why not (one line). The one builder: validation and the ingress translation
/// (`ingress/routes.rs`) both use it.
pub fn compile_path_regex(pattern: &str) -> Result<PathRegex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!("longer than {MAX_REGEX_LEN} bytes"));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_CACHE)
        .build()
        .map(PathRegex)
        .map_err(|e| {
            let why = e.to_string();
            let last = why.lines().last().unwrap_or("invalid").trim().to_string();
            format!("not a valid regular expression: {last}")
        })
}

fn parse_path_regex(errors: &mut Errors, at: &str, pattern: &str) -> PathMatch {
    match compile_path_regex(pattern) {
        Ok(re) => PathMatch::Regex(re),
        Err(why) => {
            errors.push(at, why);
            PathMatch::Prefix("/".into())
        }
    }
}

/// What a route does with a request it matches.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to one backend (an index into `Config::backends`).
    Forward { backend: usize },
    /// Forward each request to one of these, drawn by weight (`backends:`, in file order).
    Split(Vec<WeightedBackend>),
    /// Answer directly (`respond:`).
    Respond(FixedResponse),
    /// Answer with a `Location` built from the request (`redirect:`).
    Redirect(Redirect),
}

impl Action {
    /// Whether requests go to a backend (and so have retries, timeouts, faults).
    pub fn forwards(&self) -> bool {
        matches!(self, Action::Forward { .. } | Action::Split(_))
    }
}

/// Method, header and query conditions of a route, beyond host and path: all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `http` or `https`: how the client reached hitless (plain or TLS listener).
    pub scheme: Option<&'static str>,
    pub method: Option<http::Method>,
    /// A field of this name (any case) must carry exactly this value, or one the pattern
    /// matches.
    pub headers: Vec<(HeaderName, ValueMatch<HeaderValue>)>,
    /// The first parameter of this name must have this value (or one the pattern matches),
    /// both compared percent-decoded (`+` read as a space, as form parsers do): what the
    /// application will see.
    pub query: Vec<(String, ValueMatch<String>)>,
}

/// A header or query value condition: `value` (exact) or `pattern` (a regular expression,
/// with `path_regex`'s syntax, limits and anchoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch<T> {
    Exact(T),
    Pattern(PathRegex),
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.scheme.is_none()
            && self.method.is_none()
            && self.headers.is_empty()
            && self.query.is_empty()
    }

    /// Every request that meets `other` meets these too (for the shadowing warning).
    pub fn implied_by(&self, other: &Conditions) -> bool {
        self.scheme.is_none_or(|s| other.scheme == Some(s))
            && self
                .method
                .as_ref()
                .is_none_or(|m| other.method.as_ref() == Some(m))
            && self.headers.iter().all(|h| other.headers.contains(h))
            && self.query.iter().all(|q| other.query.contains(q))
    }
}

/// One backend of a weighted split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedBackend {
    /// Index into `Config::backends`.
    pub backend: usize,
    /// 0: takes no traffic.
    pub weight: u32,
}

/// `request_headers:` / `response_headers:`, applied as removals, then replacements, then
/// additions. Validation keeps framing, hop-by-hop fields and the request id out of reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFilter {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderFilter {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A new path for a request: the whole of it, or the part the route's `path_prefix` matched
/// (Gateway API's `ReplaceFullPath` and `ReplacePrefixMatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathReplace {
    Full(String),
    Prefix(String),
}

/// `redirect:`: hitless answers with a `Location` built from the request and these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `http` or `https`; `None`: the listener's.
    pub scheme: Option<&'static str>,
    /// `None`: the request's host (without its port).
    pub host: Option<String>,
    /// `None`: the new scheme's default port when `scheme` is given, else the request's port.
    pub port: Option<u16>,
    pub path: Option<PathReplace>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status: StatusCode,
}

/// `rewrite:`: what the backend is sent instead of the client's Host and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub host: Option<HeaderValue>,
    pub path: Option<PathReplace>,
}

#[derive(Debug, Clone)]
pub struct FixedResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// `match.listener_ports`: the listeners (by public port) the route serves, sorted; empty:
    /// all. Checked with host and path (the direct HTTP/1.1 path takes such routes too).
    pub listener_ports: Vec<u16>,
    /// `match.method`, `match.headers`, `match.query`.
    pub conditions: Conditions,
    pub action: Action,
    pub request_headers: HeaderFilter,
    pub response_headers: HeaderFilter,
    pub rewrite: Option<Rewrite>,
    pub request_timeout: Duration,
    pub backend_request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Failures injected on purpose (`fault:`); `None`: never.
    pub fault: Option<super::fault::FaultConfig>,
    /// `mirror:`: copies of requests to another backend; `None`: none.
    pub mirror: Option<MirrorConfig>,
}

/// `routes[].mirror`: a copy of each request (of `share` of them) goes to `backend` too,
/// its answer dropped; the client's exchange never waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Index into `Config::backends`.
    pub backend: usize,
    pub share: super::fault::Share,
}

impl RouteConfig {
    /// The backends this route may forward to (indices into `Config::backends`): its one
    /// `backend`, or the entries of its split that take traffic.
    pub fn forward_backends(&self) -> impl Iterator<Item = usize> + '_ {
        let (single, split) = match &self.action {
            Action::Forward { backend } => (Some(*backend), &[][..]),
            Action::Split(split) => (None, split.as_slice()),
            Action::Respond(_) | Action::Redirect(_) => (None, &[][..]),
        };
        let split = split.iter().filter(|w| w.weight > 0);
        single.into_iter().chain(split.map(|w| w.backend))
    }
}

use super::errors::{dur, Errors};
pub use super::errors::{ConfigError, ConfigErrors};

fn parse_health_check(errors: &mut Errors, base: &str, raw: &RawHealthCheck) -> HealthCheckConfig {
    let path = raw.path.clone().unwrap_or_else(|| "/healthz".to_string());
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        errors.push(
            format!("{base}.health_check.path"),
            format!("expected a path like \"/healthz\", got \"{path}\""),
        );
    }
    let interval = positive(
        errors,
        &format!("{base}.health_check.interval"),
        dur(raw.interval, Defaults::HEALTH_INTERVAL),
    );
    let timeout = positive(
        errors,
        &format!("{base}.health_check.timeout"),
        dur(raw.timeout, Defaults::HEALTH_TIMEOUT),
    );
    if timeout > interval {
        errors.push(
            format!("{base}.health_check.timeout"),
            format!(
                "must not exceed the interval ({}), got {}",
                humantime::format_duration(interval),
                humantime::format_duration(timeout)
            ),
        );
    }
    let threshold = |errors: &mut Errors, name: &str, v: Option<u64>, default: u32| match v {
        None => default,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            errors.push(
                format!("{base}.health_check.{name}"),
                format!("must be between 1 and 100, got {n}"),
            );
            default
        }
    };
    let grpc_service = raw.grpc_service.clone().unwrap_or_default();
    if grpc_service.len() > 127 {
        errors.push(
            format!("{base}.health_check.grpc_service"),
            "must be at most 127 bytes",
        );
    }
    HealthCheckConfig {
        grpc_service,
        path,
        interval,
        timeout,
        healthy_threshold: threshold(errors, "healthy_threshold", raw.healthy_threshold, 1),
        unhealthy_threshold: threshold(errors, "unhealthy_threshold", raw.unhealthy_threshold, 2),
    }
}

fn parse_outlier(errors: &mut Errors, base: &str, raw: Option<&RawOutlier>) -> OutlierConfig {
    let consecutive_failures = match raw.and_then(|o| o.consecutive_failures) {
        None => Defaults::OUTLIER_CONSECUTIVE_FAILURES,
        Some(n) if n <= 1000 => n as u32,
        Some(n) => {
            errors.push(
                format!("{base}.outlier.consecutive_failures"),
                format!("must be between 0 (off) and 1000, got {n}"),
            );
            Defaults::OUTLIER_CONSECUTIVE_FAILURES
        }
    };
    let base_ejection = positive(
        errors,
        &format!("{base}.outlier.base_ejection"),
        dur(
            raw.and_then(|o| o.base_ejection),
            Defaults::OUTLIER_BASE_EJECTION,
        ),
    );
    let max_ejection = dur(
        raw.and_then(|o| o.max_ejection),
        Defaults::OUTLIER_MAX_EJECTION,
    );
    if max_ejection < base_ejection {
        errors.push(
            format!("{base}.outlier.max_ejection"),
            format!(
                "must be at least base_ejection ({}), got {}",
                humantime::format_duration(base_ejection),
                humantime::format_duration(max_ejection)
            ),
        );
    }
    let max_ejected_percent = match raw.and_then(|o| o.max_ejected_percent) {
        None => Defaults::OUTLIER_MAX_EJECTED_PERCENT,
        Some(n) if n <= 100 => n as u32,
        Some(n) => {
            errors.push(
                format!("{base}.outlier.max_ejected_percent"),
                format!("must be between 0 and 100, got {n}"),
            );
            Defaults::OUTLIER_MAX_EJECTED_PERCENT
        }
    };
    OutlierConfig {
        consecutive_failures,
        base_ejection,
        max_ejection,
        max_ejected_percent,
    }
}

fn positive(errors: &mut Errors, path: &str, d: Duration) -> Duration {
    if d.is_zero() {
        errors.push(path, "must be greater than zero");
    }
    d
}

fn parse_bind(errors: &mut Errors, path: &str, value: &str) -> SocketAddr {
    match value.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            errors.push(
                path,
                format!("expected an address like \"0.0.0.0:8080\", got \"{value}\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    }
}

/// `host:port` or `ip:port`; a name is resolved once, here (DNS re-resolution is discovery's job).
fn parse_endpoint(errors: &mut Errors, path: &str, value: &str) -> Option<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(addr);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        errors.push(
            path,
            format!("expected \"host:port\", got \"{value}\" (the port is required)"),
        );
        return None;
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        errors.push(path, format!("expected \"host:port\", got \"{value}\""));
        return None;
    }
    match value.to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(addr) => Some(addr),
            None => {
                errors.push(path, format!("\"{value}\" resolved to no address"));
                None
            }
        },
        Err(e) => {
            errors.push(path, format!("cannot resolve \"{value}\": {e}"));
            None
        }
    }
}

fn parse_host(errors: &mut Errors, path: &str, value: &str) -> Option<HostMatch> {
    let host = value.trim().to_ascii_lowercase();
    let valid_chars = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if let Some(suffix) = host.strip_prefix("*.") {
        if valid_chars(suffix) && !suffix.contains('*') {
            return Some(HostMatch::Suffix(format!(".{suffix}")));
        }
    } else if valid_chars(&host) {
        return Some(HostMatch::Exact(host));
    }
    errors.push(
        path,
        format!(
            "expected a host name like \"api.example.com\" or \"*.example.com\" (no port), got \"{value}\""
        ),
    );
    None
}

fn parse_path(errors: &mut Errors, path: &str, value: &str) -> String {
    if !value.starts_with('/') {
        errors.push(path, format!("must start with \"/\", got \"{value}\""));
    }
    value.to_string()
}

/// A retry policy from `raw` on top of `base` (the top-level defaults, or built-in ones).
fn parse_retry(
    errors: &mut Errors,
    path: &str,
    raw: Option<&RawRetry>,
    base: RetryPolicy,
) -> RetryPolicy {
    let Some(raw) = raw else { return base };
    let mut policy = base;
    if let Some(n) = raw.attempts {
        if (1..=10).contains(&n) {
            policy.attempts = n as u32;
        } else {
            errors.push(
                format!("{path}.attempts"),
                format!("must be between 1 (no retry) and 10, got {n}"),
            );
        }
    }
    if let Some(list) = &raw.on {
        let mut on = RetryOn::default();
        for (i, name) in list.iter().enumerate() {
            if !on.set(name) {
                errors.push(
                    format!("{path}.on[{i}]"),
                    format!(
                        "expected one of {}, got \"{name}\"",
                        RetryOn::NAMES.join(", ")
                    ),
                );
            }
        }
        policy.on = on;
    }
    if let Some(idempotent) = raw.idempotent {
        policy.idempotent = idempotent;
    }
    if let Some(n) = raw.max_replay_bytes {
        if n <= 16 << 20 {
            policy.max_replay_bytes = n as usize;
        } else {
            errors.push(
                format!("{path}.max_replay_bytes"),
                format!("must be at most 16777216 (bodies are held in memory), got {n}"),
            );
        }
    }
    policy
}

fn default_retry() -> RetryPolicy {
    let mut on = RetryOn::default();
    for name in Defaults::RETRY_ON {
        on.set(name);
    }
    RetryPolicy {
        attempts: Defaults::RETRY_ATTEMPTS,
        on,
        idempotent: false,
        max_replay_bytes: Defaults::MAX_REPLAY_BYTES,
    }
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errors = Errors(Vec::new());

    let mut listeners: Vec<SocketAddr> = raw
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| parse_bind(&mut errors, &format!("listeners[{i}].bind"), &l.bind))
        .collect();
    let mut listener_tls = Vec::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else {
            listener_tls.push(None);
            continue;
        };
        let self_signed = tls.self_signed.unwrap_or(false);
        if tls.certificates.is_empty() && !self_signed {
            errors.push(
                format!("listeners[{i}].tls.certificates"),
                "at least one certificate is required (or `self_signed: true`)",
            );
            listener_tls.push(None);
            continue;
        }
        let files = tls
            .certificates
            .iter()
            .map(|c| super::tls::CertificateFiles {
                cert: c.cert.clone().into(),
                key: c.key.clone().into(),
                server_names: c
                    .server_names
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect(),
            })
            .collect();
        match super::tls::build(files, self_signed) {
            Ok(built) => listener_tls.push(Some(built)),
            Err(problems) => {
                for (c, field, message) in problems {
                    errors.push(
                        format!("listeners[{i}].tls.certificates[{c}].{field}"),
                        message,
                    );
                }
                listener_tls.push(None);
            }
        }
    }
    if listeners.is_empty() {
        listeners.push(SocketAddr::from(([0, 0, 0, 0], 8080)));
    }
    listener_tls.resize(listeners.len(), None);
    let listener_ports = public_ports(&mut errors, &raw.listeners, &listeners);
    let admin = match raw.admin.as_ref().and_then(|a| a.bind.as_deref()) {
        Some(bind) => parse_bind(&mut errors, "admin.bind", bind),
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
    };

    let t = &raw.timeouts;
    let default_request = positive(
        &mut errors,
        "timeouts.request",
        dur(t.request, Defaults::REQUEST),
    );
    let default_backend_request = positive(
        &mut errors,
        "timeouts.backend_request",
        dur(t.backend_request, Defaults::BACKEND_REQUEST),
    );
    let downstream = Downstream {
        idle: positive(&mut errors, "timeouts.idle", dur(t.idle, Defaults::IDLE)),
        header_read: positive(
            &mut errors,
            "timeouts.header_read",
            dur(t.header_read, Defaults::HEADER_READ),
        ),
        max_request_header_bytes: Defaults::MAX_REQUEST_HEADER_BYTES,
        tunnel_idle: positive(
            &mut errors,
            "timeouts.tunnel_idle",
            dur(t.tunnel_idle, Defaults::TUNNEL_IDLE),
        ),
        keep_underscore_headers: raw
            .limits
            .as_ref()
            .and_then(|l| l.keep_underscore_headers)
            .unwrap_or(false),
        max_connections: Defaults::MAX_CONNECTIONS,
        listen_backlog: Defaults::LISTEN_BACKLOG,
    };
    let mut config_limits = (downstream, Defaults::MAX_RESPONSE_HEADER_BYTES);
    if let Some(limits) = &raw.limits {
        // hyper's parser buffers need at least 8 KiB; more than 16 MiB of headers is a mistake.
        let bytes = |errors: &mut Errors, path: &str, v: Option<u64>, default: usize| match v {
            None => default,
            Some(n) if (8192..=16 << 20).contains(&n) => n as usize,
            Some(n) => {
                errors.push(path, format!("must be between 8192 and 16777216, got {n}"));
                default
            }
        };
        config_limits.0.max_request_header_bytes = bytes(
            &mut errors,
            "limits.max_request_header_bytes",
            limits.max_request_header_bytes,
            Defaults::MAX_REQUEST_HEADER_BYTES,
        );
        config_limits.1 = bytes(
            &mut errors,
            "limits.max_response_header_bytes",
            limits.max_response_header_bytes,
            Defaults::MAX_RESPONSE_HEADER_BYTES,
        );
        if let Some(n) = limits.max_connections {
            match usize::try_from(n) {
                Ok(n) if n <= 10_000_000 => config_limits.0.max_connections = n,
                _ => errors.push(
                    "limits.max_connections",
                    format!("must be at most 10000000 (0: no limit), got {n}"),
                ),
            }
        }
        if let Some(n) = limits.listen_backlog {
            match u32::try_from(n) {
                Ok(n) if (1..=65535).contains(&n) => config_limits.0.listen_backlog = n,
                _ => errors.push(
                    "limits.listen_backlog",
                    format!("must be between 1 and 65535, got {n}"),
                ),
            }
        }
    }
    let (downstream, max_response_header_bytes) = config_limits;

    let default_retry = parse_retry(&mut errors, "retry", raw.retry.as_ref(), default_retry());
    let mut backends = Vec::new();
    for (name, b) in &raw.backends {
        let base = format!("backends.{name}");
        let mut endpoints = Vec::new();
        for (i, e) in b.endpoints.iter().enumerate() {
            if let Some(addr) = parse_endpoint(&mut errors, &format!("{base}.endpoints[{i}]"), e) {
                endpoints.push(addr);
            }
        }
        let discovery = b
            .discovery
            .as_ref()
            .and_then(|d| super::discovery::parse(&mut errors, &format!("{base}.discovery"), d));
        if discovery.is_some() && !b.endpoints.is_empty() {
            errors.push(
                format!("{base}.discovery"),
                "set either endpoints or discovery, not both",
            );
        }
        let balance = match b.balance.as_deref() {
            None | Some("p2c") => Balance::P2c,
            Some("round_robin") => Balance::RoundRobin,
            Some(other) => {
                errors.push(
                    format!("{base}.balance"),
                    format!("expected \"p2c\" or \"round_robin\", got \"{other}\""),
                );
                Balance::P2c
            }
        };
        let pool = b.pool.as_ref();
        let max_idle = match pool.and_then(|p| p.max_idle_per_endpoint) {
            None => Defaults::MAX_IDLE_PER_ENDPOINT,
            Some(n) if (1..=65536).contains(&n) => n as usize,
            Some(n) => {
                errors.push(
                    format!("{base}.pool.max_idle_per_endpoint"),
                    format!("must be between 1 and 65536, got {n}"),
                );
                Defaults::MAX_IDLE_PER_ENDPOINT
            }
        };
        let budget = b.retry_budget.as_ref();
        let ratio = match budget.and_then(|b| b.ratio) {
            None => Defaults::RETRY_BUDGET_RATIO,
            Some(r) if (0.0..=1.0).contains(&r) => r,
            Some(r) => {
                errors.push(
                    format!("{base}.retry_budget.ratio"),
                    format!("must be between 0 and 1 (a share of the request rate), got {r}"),
                );
                Defaults::RETRY_BUDGET_RATIO
            }
        };
        let min_per_second = match budget.and_then(|b| b.min_per_second) {
            None => Defaults::RETRY_BUDGET_MIN_PER_SECOND,
            Some(n) if n <= 100_000 => n as u32,
            Some(n) => {
                errors.push(
                    format!("{base}.retry_budget.min_per_second"),
                    format!("must be at most 100000, got {n}"),
                );
                Defaults::RETRY_BUDGET_MIN_PER_SECOND
            }
        };
        let protocol = match b.protocol.as_deref() {
            None | Some("http") => Protocol::Http,
            Some("h2c") => Protocol::H2c,
            Some("grpc") => Protocol::Grpc,
            Some("https") => Protocol::Https,
            Some("grpcs") => Protocol::Grpcs,
            Some(other) => {
                errors.push(
                    format!("{base}.protocol"),
                    format!("expected one of http, h2c, grpc, https, grpcs; got \"{other}\""),
                );
                Protocol::Http
            }
        };
        let tls = if protocol.is_tls() {
            let raw = b.tls.as_ref();
            let settings = super::tls::ClientSettings {
                ca_file: raw.and_then(|t| t.ca_file.as_deref()),
                server_name: raw.and_then(|t| t.server_name.as_deref()),
                client_cert: raw.and_then(|t| t.client_cert.as_deref()),
                client_key: raw.and_then(|t| t.client_key.as_deref()),
                insecure_skip_verify: raw.and_then(|t| t.insecure_skip_verify).unwrap_or(false),
            };
            match super::tls::client(&settings, protocol) {
                Ok(tls) => Some(tls),
                Err((field, message)) => {
                    errors.push(format!("{base}.tls.{field}"), message);
                    None
                }
            }
        } else {
            if b.tls.is_some() {
                errors.push(
                    format!("{base}.tls"),
                    format!(
                        "only for protocol https or grpcs (this backend is {})",
                        protocol.as_str()
                    ),
                );
            }
            None
        };
        backends.push(BackendConfig {
            protocol,
            tls,
            retry_budget: BudgetConfig {
                ratio,
                min_per_second,
            },
            name: name.clone(),
            endpoints,
            discovery,
            balance,
            connect_timeout: positive(
                &mut errors,
                &format!("{base}.connect_timeout"),
                dur(b.connect_timeout, Defaults::CONNECT),
            ),
            pool_idle_timeout: positive(
                &mut errors,
                &format!("{base}.pool.idle_timeout"),
                dur(pool.and_then(|p| p.idle_timeout), Defaults::POOL_IDLE),
            ),
            max_idle_per_endpoint: max_idle,
            upstream_keepalive_timeout: b.upstream_keepalive_timeout.map(|d| d.0),
            outlier: parse_outlier(&mut errors, &base, b.outlier.as_ref()),
            health_check: b
                .health_check
                .as_ref()
                .map(|h| parse_health_check(&mut errors, &base, h)),
            slow_start: dur(b.slow_start, Duration::ZERO),
            hold_timeout: dur(b.hold_timeout, Defaults::HOLD),
            max_concurrent_requests: match b.max_concurrent_requests {
                None => Defaults::MAX_CONCURRENT_REQUESTS,
                Some(n) if (1..=1_000_000).contains(&n) => n as usize,
                Some(n) => {
                    errors.push(
                        format!("{base}.max_concurrent_requests"),
                        format!("must be between 1 and 1000000, got {n}"),
                    );
                    Defaults::MAX_CONCURRENT_REQUESTS
                }
            },
        });
    }

    if raw.routes.is_empty() {
        errors.push("routes", "at least one route is required");
    }
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        if let Some(route) = validate_route(
            &mut errors,
            i,
            r,
            &backends,
            default_request,
            default_backend_request,
            default_retry,
        ) {
            routes.push(route);
        }
    }
    for (i, r) in raw.routes.iter().enumerate() {
        for port in &r.matcher.listener_ports {
            if !listener_ports.contains(port) {
                let known: Vec<String> = listener_ports.iter().map(u16::to_string).collect();
                errors.push(
                    format!("routes[{i}].match.listener_ports"),
                    format!(
                        "no listener has port {port} (theirs: {}; set listeners[].public_port)",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !seen.insert(r.name.clone()) {
            errors.push(
                format!("routes[{i}].name"),
                format!("duplicate route name \"{}\"", r.name),
            );
        }
    }

    let worker_threads = match raw.runtime.as_ref().and_then(|r| r.worker_threads) {
        None => None,
        Some(n) if (1..=1024).contains(&n) => Some(n as usize),
        Some(n) => {
            errors.push(
                "runtime.worker_threads",
                format!("must be between 1 and 1024, got {n}"),
            );
            None
        }
    };

    if !errors.0.is_empty() {
        return Err(ConfigErrors(errors.0));
    }
    Ok(Config {
        listener_tls,
        listener_ports,
        listeners,
        admin,
        downstream,
        max_response_header_bytes,
        backends,
        routes,
        access_log: raw.access_log.unwrap_or(true),
        worker_threads,
        direct_path: raw
            .runtime
            .as_ref()
            .and_then(|r| r.direct_path)
            .unwrap_or(true),
        client_timeout: raw.timeouts.client.map(|d| d.0),
        drain: DrainConfig {
            delay: dur(
                raw.drain.as_ref().and_then(|d| d.delay),
                Defaults::DRAIN_DELAY,
            ),
            timeout: positive(
                &mut errors,
                "drain.timeout",
                dur(
                    raw.drain.as_ref().and_then(|d| d.timeout),
                    Defaults::DRAIN_TIMEOUT,
                ),
            ),
            control_socket: raw
                .drain
                .as_ref()
                .and_then(|d| d.control_socket.clone())
                .unwrap_or_else(|| Defaults::CONTROL_SOCKET.to_string())
                .into(),
            grace_period: raw.drain.as_ref().and_then(|d| d.grace_period).map(|d| d.0),
        },
    })
}

fn validate_route(
    errors: &mut Errors,
    i: usize,
    r: &RawRoute,
    backends: &[BackendConfig],
    default_request: Duration,
    default_backend_request: Duration,
    default_retry: RetryPolicy,
) -> Option<RouteConfig> {
    let base = format!("routes[{i}]");
    let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
    let host = r
        .matcher
        .host
        .as_deref()
        .and_then(|h| parse_host(errors, &format!("{base}.match.host"), h));
    let path = parse_path_match(errors, &base, &r.matcher);
    let mut listener_ports: Vec<u16> = bounded(
        errors,
        &format!("{base}.match.listener_ports"),
        &r.matcher.listener_ports,
    )
    .map(|(_, p)| *p)
    .collect();
    listener_ports.sort_unstable();
    listener_ports.dedup();
    let conditions = parse_conditions(errors, &base, &r.matcher);
    let action = parse_action(errors, &base, r, backends, &path)?;
    let rt = r.timeouts.as_ref();
    let request_timeout = positive(
        errors,
        &format!("{base}.timeouts.request"),
        dur(rt.and_then(|t| t.request), default_request),
    );
    let backend_request_timeout = positive(
        errors,
        &format!("{base}.timeouts.backend_request"),
        dur(rt.and_then(|t| t.backend_request), default_backend_request),
    );
    let retry = parse_retry(
        errors,
        &format!("{base}.retry"),
        r.retry.as_ref(),
        default_retry,
    );
    let fault = r
        .fault
        .as_ref()
        .map(|f| super::fault::parse(errors, &base, f));
    let answers = !action.forwards();
    if fault.is_some() && answers {
        errors.push(
            format!("{base}.fault"),
            "faults are injected on routes with a `backend`; this route answers by itself",
        );
    }
    let mirror = r.mirror.as_ref().and_then(|m| {
        let at = format!("{base}.mirror");
        if answers {
            errors.push(
                at.as_str(),
                "requests are mirrored on routes with a `backend`; this route answers by itself",
            );
            return None;
        }
        let backend = find_backend(errors, &format!("{at}.backend"), &m.backend, backends)?;
        let percent = Some(m.percent.unwrap_or(100.0));
        let share = super::fault::share(errors, &format!("{at}.percent"), percent)?;
        Some(MirrorConfig { backend, share })
    });
    let request_headers = r
        .request_headers
        .as_ref()
        .map(|f| parse_header_filter(errors, &format!("{base}.request_headers"), f, true))
        .unwrap_or_default();
    let response_headers = r
        .response_headers
        .as_ref()
        .map(|f| parse_header_filter(errors, &format!("{base}.response_headers"), f, false))
        .unwrap_or_default();
    let rewrite = r
        .rewrite
        .as_ref()
        .map(|w| parse_rewrite(errors, &format!("{base}.rewrite"), w, &path));
    let forwarding_only = [
        ("request_headers", r.request_headers.is_some()),
        ("response_headers", r.response_headers.is_some()),
        ("rewrite", r.rewrite.is_some()),
    ];
    for (key, _) in forwarding_only
        .iter()
        .filter(|(_, given)| *given && answers)
    {
        errors.push(
            format!("{base}.{key}"),
            "applies to requests forwarded to a backend; this route answers by itself",
        );
    }
    let sets_host = request_headers
        .set
        .iter()
        .any(|(n, _)| n == http::header::HOST);
    if sets_host && rewrite.as_ref().is_some_and(|w| w.host.is_some()) {
        errors.push(
            format!("{base}.request_headers.set.host"),
            "the Host is set by `rewrite.host` already: keep one of the two",
        );
    }
    Some(RouteConfig {
        name,
        host,
        path,
        listener_ports,
        conditions,
        action,
        request_headers,
        response_headers,
        rewrite,
        request_timeout,
        backend_request_timeout,
        retry,
        fault,
        mirror,
    })
}

/// At most this many backends in a split, and conditions or changes in each list of a route.
const MAX_ROUTE_LIST: usize = 16;
/// Weights are relative; this bound keeps their sum far from overflowing.
const MAX_WEIGHT: u64 = 1_000_000;

fn parse_path_match(errors: &mut Errors, base: &str, m: &RawMatch) -> PathMatch {
    if let Some(pattern) = &m.path_regex {
        if m.path_prefix.is_some() || m.path.is_some() {
            errors.push(
                format!("{base}.match"),
                "set one of path_prefix, path (exact) or path_regex",
            );
            return PathMatch::Prefix("/".into());
        }
        return parse_path_regex(errors, &format!("{base}.match.path_regex"), pattern);
    }
    match (&m.path_prefix, &m.path) {
        (Some(_), Some(_)) => {
            errors.push(
                format!("{base}.match"),
                "set one of path_prefix, path (exact) or path_regex",
            );
            PathMatch::Prefix("/".into())
        }
        (Some(p), None) => {
            PathMatch::Prefix(parse_path(errors, &format!("{base}.match.path_prefix"), p))
        }
        (None, Some(p)) => PathMatch::Exact(parse_path(errors, &format!("{base}.match.path"), p)),
        (None, None) => PathMatch::Prefix("/".into()),
    }
}

/// `match.method`, `match.headers` and `match.query`.
fn parse_conditions(errors: &mut Errors, base: &str, m: &RawMatch) -> Conditions {
    let scheme = m.scheme.as_deref().and_then(|s| match s {
        "http" => Some("http"),
        "https" => Some("https"),
        other => {
            errors.push(
                format!("{base}.match.scheme"),
                format!("expected \"http\" or \"https\", got \"{other}\""),
            );
            None
        }
    });
    let method = m.method.as_deref().and_then(|v| {
        let path = format!("{base}.match.method");
        match http::Method::from_bytes(v.as_bytes()) {
            // Methods are case-sensitive: `get` would never match a browser's `GET`.
            Ok(method) if v.bytes().all(|b| !b.is_ascii_lowercase()) && v.len() <= 32 => {
                Some(method)
            }
            _ => {
                errors.push(
                    path,
                    format!("expected a method in capitals like \"GET\", got \"{v}\""),
                );
                None
            }
        }
    });
    let mut headers = Vec::new();
    for (j, h) in bounded(errors, &format!("{base}.match.headers"), &m.headers) {
        let path = format!("{base}.match.headers[{j}]");
        let Some(wanted) = value_match(errors, &path, h) else {
            continue;
        };
        let value = match wanted {
            ValueMatch::Exact(v) => {
                header_pair(errors, &path, &h.name, &v).map(|(n, v)| (n, ValueMatch::Exact(v)))
            }
            ValueMatch::Pattern(p) => match HeaderName::try_from(h.name.as_str()) {
                Ok(n) => Some((n, ValueMatch::Pattern(p))),
                Err(_) => {
                    errors.push(
                        path.as_str(),
                        format!("\"{}\" is not a valid header name", h.name),
                    );
                    None
                }
            },
        };
        let Some((name, value)) = value else {
            continue;
        };
        if name == http::header::HOST {
            errors.push(
                format!("{path}.name"),
                "match the host with `match.host` (it also covers HTTP/2's :authority)",
            );
            continue;
        }
        headers.push((name, value));
    }
    let mut query = Vec::new();
    for (j, q) in bounded(errors, &format!("{base}.match.query"), &m.query) {
        if q.name.is_empty() {
            errors.push(format!("{base}.match.query[{j}].name"), "must not be empty");
            continue;
        }
        if let Some(wanted) = value_match(errors, &format!("{base}.match.query[{j}]"), q) {
            query.push((q.name.clone(), wanted));
        }
    }
    Conditions {
        scheme,
        method,
        headers,
        query,
    }
}

/// The entries of a route's list, after an error at `path` when there are more than
/// `MAX_ROUTE_LIST` (those are ignored).
fn bounded<'a, T>(
    errors: &mut Errors,
    path: &str,
    items: &'a [T],
) -> impl Iterator<Item = (usize, &'a T)> + 'a {
    if items.len() > MAX_ROUTE_LIST {
        errors.push(
            path,
            format!("at most {MAX_ROUTE_LIST} entries, got {}", items.len()),
        );
    }
    items.iter().take(MAX_ROUTE_LIST).enumerate()
}

/// `value` or `pattern` (compiled) of a header or query condition at `path`.
fn value_match(errors: &mut Errors, path: &str, nv: &RawNameValue) -> Option<ValueMatch<String>> {
    match (&nv.value, &nv.pattern) {
        (Some(value), None) => Some(ValueMatch::Exact(value.clone())),
        (None, Some(pattern)) => match compile_path_regex(pattern) {
            Ok(regex) => Some(ValueMatch::Pattern(regex)),
            Err(why) => {
                errors.push(format!("{path}.pattern"), why);
                None
            }
        },
        _ => {
            errors.push(
                path,
                "set one of value (exact) or pattern (a regular expression)",
            );
            None
        }
    }
}

/// A header name and value, or an error at `path` naming which is invalid.
fn header_pair(
    errors: &mut Errors,
    path: &str,
    name: &str,
    value: &str,
) -> Option<(HeaderName, HeaderValue)> {
    match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        (Ok(n), Ok(v)) => Some((n, v)),
        (Err(_), _) => {
            errors.push(path, format!("\"{name}\" is not a valid header name"));
            None
        }
        (_, Err(_)) => {
            errors.push(path, "not a valid header value");
            None
        }
    }
}

/// Exactly one of `backend`, `backends`, `respond`, `redirect`: the route's action.
fn parse_action(
    errors: &mut Errors,
    base: &str,
    r: &RawRoute,
    backends: &[BackendConfig],
    path: &PathMatch,
) -> Option<Action> {
    let given: Vec<&str> = [
        ("`backend`", r.backend.is_some()),
        ("`backends`", r.backends.is_some()),
        ("`respond`", r.respond.is_some()),
        ("`redirect`", r.redirect.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(key, _)| *key)
    .collect();
    if given.len() != 1 {
        let got = listed(&given, " and ");
        errors.push(
            base,
            format!("a route needs exactly one of `backend` (forward), `backends` (weighted split), `respond` (answer directly) or `redirect`; got {got}"),
        );
        return None;
    }
    if let Some(b) = &r.backend {
        let backend = find_backend(errors, &format!("{base}.backend"), b, backends)?;
        return Some(Action::Forward { backend });
    }
    if let Some(entries) = &r.backends {
        let split = parse_split(errors, &format!("{base}.backends"), entries, backends)?;
        return Some(Action::Split(split));
    }
    if let Some(raw) = &r.redirect {
        let redirect = parse_redirect(errors, &format!("{base}.redirect"), raw, path);
        return Some(Action::Redirect(redirect));
    }
    let resp = r.respond.as_ref()?;
    Some(Action::Respond(parse_respond(errors, base, resp)))
}

/// `items` joined by `separator` for an error message, or `none`.
fn listed(items: &[&str], separator: &str) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(separator)
    }
}

/// The index of backend `name`, or an error at `path` listing the defined ones.
fn find_backend(
    errors: &mut Errors,
    path: &str,
    name: &str,
    backends: &[BackendConfig],
) -> Option<usize> {
    let found = backends.iter().position(|x| x.name == name);
    if found.is_none() {
        let known: Vec<&str> = backends.iter().map(|x| x.name.as_str()).collect();
        let known = listed(&known, ", ");
        errors.push(
            path,
            format!("unknown backend \"{name}\" (defined: {known})"),
        );
    }
    found
}

/// `backends: [{name, weight}]`: 1 to `MAX_ROUTE_LIST` distinct backends, weights up to
/// `MAX_WEIGHT`, at least one above 0.
fn parse_split(
    errors: &mut Errors,
    path: &str,
    entries: &[RawWeightedBackend],
    backends: &[BackendConfig],
) -> Option<Vec<WeightedBackend>> {
    if entries.is_empty() {
        errors.push(path, "needs at least one backend");
        return None;
    }
    let before = errors.0.len();
    let mut split: Vec<WeightedBackend> = Vec::new();
    for (j, e) in bounded(errors, path, entries) {
        let weight = e.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            errors.push(
                format!("{path}[{j}].weight"),
                format!("must be at most {MAX_WEIGHT}, got {weight}"),
            );
        }
        let Some(backend) = find_backend(errors, &format!("{path}[{j}].name"), &e.name, backends)
        else {
            continue;
        };
        if split.iter().any(|w| w.backend == backend) {
            errors.push(
                format!("{path}[{j}].name"),
                format!("backend \"{}\" is listed twice", e.name),
            );
        }
        let weight = u32::try_from(weight.min(MAX_WEIGHT)).unwrap_or(0);
        split.push(WeightedBackend { backend, weight });
    }
    if split.iter().all(|w| w.weight == 0) && errors.0.len() == before {
        errors.push(
            path,
            "the weights add up to 0: give at least one backend a weight above 0",
        );
    }
    (errors.0.len() == before).then_some(split)
}

/// `respond: {status, headers, body}`.
fn parse_respond(errors: &mut Errors, base: &str, resp: &RawRespond) -> FixedResponse {
    let status = match StatusCode::from_u16(resp.status.unwrap_or(200)) {
        Ok(s) if s.as_u16() >= 200 => s,
        _ => {
            errors.push(
                format!("{base}.respond.status"),
                format!(
                    "expected a status between 200 and 999, got {}",
                    resp.status.unwrap_or(0)
                ),
            );
            StatusCode::OK
        }
    };
    let mut headers = Vec::new();
    for (k, v) in &resp.headers {
        let path = format!("{base}.respond.headers.{k}");
        match (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v)) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            (Err(_), _) => errors.push(path, "not a valid header name"),
            (_, Err(_)) => errors.push(path, "not a valid header value"),
        }
    }
    FixedResponse {
        status,
        headers,
        body: Bytes::from(resp.body.clone().unwrap_or_default()),
    }
}

/// A host name for a `Location` or a `Host` (no wildcard, no port).
fn parse_plain_host(errors: &mut Errors, path: &str, value: &str) -> Option<String> {
    match parse_host(errors, path, value) {
        Some(HostMatch::Exact(host)) => Some(host),
        Some(HostMatch::Suffix(_)) => {
            errors.push(path, "a wildcard names no host to send: give one host");
            None
        }
        None => None,
    }
}

/// A path to put in a request line: starts with `/`, no query, no fragment.
fn parse_target_path(errors: &mut Errors, path: &str, value: &str) -> String {
    let valid = value.starts_with('/')
        && !value.contains(['?', '#'])
        && value.parse::<http::uri::PathAndQuery>().is_ok();
    if !valid {
        errors.push(
            path,
            format!("expected a path like \"/new\" (no query), got \"{value}\""),
        );
    }
    value.to_string()
}

/// `path` or `path_prefix` of a redirect or rewrite at `base`; a prefix only replaces what a
/// `match.path_prefix` matched.
fn parse_path_replace(
    errors: &mut Errors,
    base: &str,
    full: Option<&String>,
    prefix: Option<&String>,
    matched: &PathMatch,
) -> Option<PathReplace> {
    match (full, prefix) {
        (Some(_), Some(_)) => {
            errors.push(base, "set either path or path_prefix, not both");
            None
        }
        (Some(p), None) => Some(PathReplace::Full(parse_target_path(
            errors,
            &format!("{base}.path"),
            p,
        ))),
        (None, Some(p)) => {
            let path = format!("{base}.path_prefix");
            if let PathMatch::Exact(exact) = matched {
                errors.push(
                    path.as_str(),
                    format!("replaces what `match.path_prefix` matched, but this route matches the exact path \"{exact}\": use `path`"),
                );
            }
            if let PathMatch::Regex(re) = matched {
                errors.push(
                    path.as_str(),
                    format!("replaces what `match.path_prefix` matched, but this route matches the regular expression \"{}\": use `path`", re.0.as_str()),
                );
            }
            Some(PathReplace::Prefix(parse_target_path(errors, &path, p)))
        }
        (None, None) => None,
    }
}

fn parse_redirect(
    errors: &mut Errors,
    base: &str,
    raw: &RawRedirect,
    matched: &PathMatch,
) -> Redirect {
    let scheme = raw.scheme.as_deref().and_then(|s| match s {
        "http" => Some("http"),
        "https" => Some("https"),
        _ => {
            errors.push(
                format!("{base}.scheme"),
                format!("expected \"http\" or \"https\", got \"{s}\""),
            );
            None
        }
    });
    let host = raw
        .host
        .as_deref()
        .and_then(|h| parse_plain_host(errors, &format!("{base}.host"), h));
    let port = raw.port.and_then(|p| match u16::try_from(p) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            errors.push(
                format!("{base}.port"),
                format!("expected a port between 1 and 65535, got {p}"),
            );
            None
        }
    });
    let path = parse_path_replace(
        errors,
        base,
        raw.path.as_ref(),
        raw.path_prefix.as_ref(),
        matched,
    );
    let code = raw.status.unwrap_or(302);
    let status = match StatusCode::from_u16(code) {
        Ok(s) if matches!(code, 301 | 302 | 303 | 307 | 308) => s,
        _ => {
            errors.push(
                format!("{base}.status"),
                format!("expected 301, 302, 303, 307 or 308, got {code}"),
            );
            StatusCode::FOUND
        }
    };
    let given = [
        raw.scheme.is_some(),
        raw.host.is_some(),
        raw.port.is_some(),
        raw.path.is_some(),
        raw.path_prefix.is_some(),
    ];
    if !given.contains(&true) {
        errors.push(
            base,
            "needs at least one of scheme, host, port, path or path_prefix (a redirect to the same URL loops)",
        );
    }
    Redirect {
        scheme,
        host,
        port,
        path,
        status,
    }
}

fn parse_rewrite(
    errors: &mut Errors,
    base: &str,
    raw: &RawRewrite,
    matched: &PathMatch,
) -> Rewrite {
    let host = raw
        .host
        .as_deref()
        .and_then(|h| parse_plain_host(errors, &format!("{base}.host"), h))
        .and_then(|h| HeaderValue::try_from(h).ok());
    let path = parse_path_replace(
        errors,
        base,
        raw.path.as_ref(),
        raw.path_prefix.as_ref(),
        matched,
    );
    if raw.host.is_none() && raw.path.is_none() && raw.path_prefix.is_none() {
        errors.push(base, "needs host, path or path_prefix");
    }
    Rewrite { host, path }
}

/// Why a filter must not touch the field `name`, if it must not. `request`: a
/// `request_headers` filter; `set`: the change replaces the field.
fn untouchable(name: &HeaderName, request: bool, set: bool) -> Option<&'static str> {
    match name.as_str() {
        "content-length" | "transfer-encoding" => {
            Some("frames the body: hitless writes it from the body it relays")
        }
        "connection" | "keep-alive" | "proxy-connection" | "te" | "upgrade" => {
            Some("hop-by-hop: it describes one connection, not the message")
        }
        "x-request-id" => {
            Some("the request id hitless logs and returns: changing it would break the link")
        }
        "x-hitless-mirror" if request => {
            Some("marks hitless's mirrored copies: applications trust it to skip side effects")
        }
        "expect" if request => Some("governs how the body is sent: hitless has sent it already"),
        // Gateway API may set the Host (as `rewrite.host` does); without one, or with two,
        // an HTTP/1.1 request is invalid.
        "host" if request && !set => Some("may only be `set` (a request has exactly one)"),
        _ => None,
    }
}

/// `request_headers:` or `response_headers:` at `base`.
fn parse_header_filter(
    errors: &mut Errors,
    base: &str,
    raw: &RawHeaderFilter,
    request: bool,
) -> HeaderFilter {
    let mut filter = HeaderFilter::default();
    let mut named: Vec<HeaderName> = Vec::new();
    let mut check = |errors: &mut Errors, path: &str, name: &HeaderName, set: bool| {
        if let Some(why) = untouchable(name, request, set) {
            errors.push(path, format!("\"{name}\" cannot be changed: {why}"));
            return false;
        }
        if named.contains(name) {
            errors.push(
                path,
                format!("\"{name}\" is named twice (one of set, add or remove, once)"),
            );
            return false;
        }
        named.push(name.clone());
        true
    };
    for (op, map) in [("set", &raw.set), ("add", &raw.add)] {
        if map.len() > MAX_ROUTE_LIST {
            errors.push(
                format!("{base}.{op}"),
                format!("at most {MAX_ROUTE_LIST} entries, got {}", map.len()),
            );
        }
        for (k, v) in map.iter().take(MAX_ROUTE_LIST) {
            let path = format!("{base}.{op}.{k}");
            let Some((name, value)) = header_pair(errors, &path, k, v) else {
                continue;
            };
            if check(errors, &path, &name, op == "set") {
                let list = if op == "set" {
                    &mut filter.set
                } else {
                    &mut filter.add
                };
                list.push((name, value));
            }
        }
    }
    for (j, k) in bounded(errors, &format!("{base}.remove"), &raw.remove) {
        let path = format!("{base}.remove[{j}]");
        match HeaderName::try_from(k.as_str()) {
            Ok(name) => {
                if check(errors, &path, &name, false) {
                    filter.remove.push(name);
                }
            }
            Err(_) => errors.push(path, format!("\"{k}\" is not a valid header name")),
        }
    }
    filter
}

/// A timeout-chain or routing problem that does not stop hitless from running but will
/// produce errors in production. Each names the setting that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning: {}: {}", self.path, self.message)
    }
}

fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// The timeout chain must hold: client > proxy (request) >= per-try (backend_request) >
    /// connect, and pooled connections must idle out before the upstream closes them.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        let mut warn = |path: String, message: String| out.push(Warning { path, message });
        for (i, r) in self.routes.iter().enumerate() {
            if !r.action.forwards() {
                continue;
            }
            if r.backend_request_timeout > r.request_timeout {
                warn(
                    format!("routes[{i}].timeouts.backend_request"),
                    format!(
                        "per-try timeout {} exceeds the request timeout {}: lower backend_request or raise routes[{i}].timeouts.request",
                        fmt_d(r.backend_request_timeout),
                        fmt_d(r.request_timeout)
                    ),
                );
            }
            let worst = r.backend_request_timeout * r.retry.attempts;
            if r.retry.attempts > 1
                && r.backend_request_timeout <= r.request_timeout
                && worst > r.request_timeout
            {
                warn(
                    format!("routes[{i}].timeouts.request"),
                    format!(
                        "{} attempts x per-try timeout {} = {} do not fit in the request timeout {}: later attempts are cut short; raise routes[{i}].timeouts.request or lower backend_request",
                        r.retry.attempts,
                        fmt_d(r.backend_request_timeout),
                        fmt_d(worst),
                        fmt_d(r.request_timeout)
                    ),
                );
            }
            for b in r.forward_backends().filter_map(|k| self.backends.get(k)) {
                backend_chain(r, b, &mut warn);
            }
            if let Some(client) = self.client_timeout {
                if r.request_timeout >= client {
                    warn(
                        format!("routes[{i}].timeouts.request"),
                        format!(
                            "request timeout {} is not below the clients' timeout {} (timeouts.client): the client gives up first and sees its own error; lower routes[{i}].timeouts.request",
                            fmt_d(r.request_timeout),
                            fmt_d(client)
                        ),
                    );
                }
            }
        }
        let d = &self.drain;
        let grace = d.grace_period.unwrap_or(Defaults::GRACE_PERIOD);
        if d.delay + d.timeout > grace {
            warn(
                "drain.timeout".to_string(),
                format!(
                    "drain.delay {} + drain.timeout {} exceed the termination grace period {}: Kubernetes kills hitless (SIGKILL) before in-flight requests finish; lower drain.timeout or raise terminationGracePeriodSeconds (and drain.grace_period)",
                    fmt_d(d.delay),
                    fmt_d(d.timeout),
                    fmt_d(grace)
                ),
            );
        }
        if d.delay < Defaults::MIN_SENSIBLE_DRAIN_DELAY {
            warn(
                "drain.delay".to_string(),
                format!(
                    "drain.delay {} is shorter than endpoint removal takes to reach kube-proxy and load balancers (seconds): requests routed to this pod after it stops listening fail; raise drain.delay to 5s",
                    fmt_d(d.delay)
                ),
            );
        }
        for b in &self.backends {
            if let Some(app) = b.upstream_keepalive_timeout {
                if b.pool_idle_timeout >= app {
                    warn(
                        format!("backends.{}.pool.idle_timeout", b.name),
                        format!(
                            "pooled connections idle up to {} but the upstream closes them after {}: a request can meet a closing connection (502 after idle); set backends.{}.pool.idle_timeout below {}",
                            fmt_d(b.pool_idle_timeout),
                            fmt_d(app),
                            b.name,
                            fmt_d(app)
                        ),
                    );
                }
            }
            if b.endpoints.is_empty() && b.discovery.is_none() {
                warn(
                    format!("backends.{}.endpoints", b.name),
                    "backend has no endpoints: its routes will answer 503 no_endpoints".into(),
                );
            }
        }
        if let Some(client) = self.client_timeout {
            if self.downstream.idle <= client {
                warn(
                    "timeouts.idle".into(),
                    format!(
                        "client keep-alive idle timeout {} is not above the clients' timeout {}: hitless may close a connection the client is about to reuse; raise timeouts.idle",
                        fmt_d(self.downstream.idle),
                        fmt_d(client)
                    ),
                );
            }
        }
        for (j, later) in self.routes.iter().enumerate() {
            if let Some(i) = self.routes[..j].iter().position(|e| shadows(e, later)) {
                warn(
                    format!("routes[{j}].match"),
                    format!(
                        "never matches: routes[{i}] (\"{}\") comes first and matches everything it would (first match wins); move it above",
                        self.routes[i].name
                    ),
                );
            }
        }
        out
    }
}

/// The timeout chain between a route and one backend it forwards to.
fn backend_chain(r: &RouteConfig, b: &BackendConfig, warn: &mut impl FnMut(String, String)) {
    if b.connect_timeout >= r.backend_request_timeout {
        warn(
            format!("backends.{}.connect_timeout", b.name),
            format!(
                "connect timeout {} is not below route \"{}\"'s per-try timeout {}: lower backends.{}.connect_timeout",
                fmt_d(b.connect_timeout),
                r.name,
                fmt_d(r.backend_request_timeout),
                b.name
            ),
        );
    }
    if !b.hold_timeout.is_zero() && b.hold_timeout >= r.request_timeout {
        warn(
            format!("backends.{}.hold_timeout", b.name),
            format!(
                "hold {} is not below route \"{}\"'s request timeout {}: a held request times out (504) instead of getting 503 no_healthy_endpoints; lower backends.{}.hold_timeout",
                fmt_d(b.hold_timeout),
                r.name,
                fmt_d(r.request_timeout),
                b.name
            ),
        );
    }
}

/// Each listener's public port: `public_port`, or the bound one. Listeners sharing a public
/// port (IPv4 and IPv6 binds, say) must agree on TLS: a port is one thing to its clients and
/// to the Gateways that name it.
fn public_ports(errors: &mut Errors, raw: &[RawListener], binds: &[SocketAddr]) -> Vec<u16> {
    let mut ports = Vec::with_capacity(binds.len());
    for (i, bind) in binds.iter().enumerate() {
        let port = match raw.get(i).and_then(|l| l.public_port) {
            Some(0) => {
                errors.push(format!("listeners[{i}].public_port"), "must be 1 to 65535");
                bind.port()
            }
            Some(p) => p,
            None => bind.port(),
        };
        let is_tls = |k: usize| raw.get(k).is_some_and(|l| l.tls.is_some());
        if let Some(k) = ports.iter().position(|p| *p == port && port != 0) {
            if is_tls(k) != is_tls(i) {
                errors.push(
                    format!("listeners[{i}].public_port"),
                    format!("port {port} is listeners[{k}]'s too, and only one of them has TLS"),
                );
            }
        }
        ports.push(port);
    }
    ports
}

/// Whether `earlier` matches every request that `later` matches.
fn shadows(earlier: &RouteConfig, later: &RouteConfig) -> bool {
    let host_covers = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostMatch::Exact(a)), Some(HostMatch::Exact(b))) => a == b,
        (Some(HostMatch::Suffix(a)), Some(HostMatch::Exact(b))) => b.ends_with(a.as_str()),
        (Some(HostMatch::Suffix(a)), Some(HostMatch::Suffix(b))) => b.ends_with(a.as_str()),
        (Some(HostMatch::Exact(_)), Some(HostMatch::Suffix(_))) => false,
    };
    let path_covers = match (&earlier.path, &later.path) {
        (PathMatch::Prefix(a), PathMatch::Prefix(b) | PathMatch::Exact(b)) => {
            b.starts_with(a.as_str())
        }
        (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
        (PathMatch::Exact(_), PathMatch::Prefix(_)) => false,
        // What a regular expression matches is not compared: only `/` surely covers it.
        (PathMatch::Prefix(a), PathMatch::Regex(_)) => a == "/",
        (PathMatch::Regex(a), PathMatch::Regex(b)) => a == b,
        (PathMatch::Regex(_), _) | (PathMatch::Exact(_), PathMatch::Regex(_)) => false,
    };
    // A route with method, header or query conditions lets through what fails them: it
    // covers only routes whose own conditions imply its.
    let ports_cover = earlier.listener_ports.is_empty()
        || (!later.listener_ports.is_empty()
            && later
                .listener_ports
                .iter()
                .all(|p| earlier.listener_ports.contains(p)));
    host_covers && path_covers && ports_cover && earlier.conditions.implied_by(&later.conditions)
}
