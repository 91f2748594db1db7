//! The serde mirror of the YAML file: shapes and types only, no cross-field rules.
//!
//! Every struct denies unknown keys so that a typo (`conect_timeout`) is an error at load, not a
//! silently ignored setting. Optional fields stay `Option` here; defaults are filled in by
//! `validate.rs`, in one place, so that `hitless check` can print the effective configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub backends: BTreeMap<String, RawBackend>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub access_log: Option<bool>,
    pub runtime: Option<RawRuntime>,
    /// Retry policy defaults for every route.
    pub retry: Option<RawRetry>,
    pub drain: Option<RawDrain>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrain {
    pub delay: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub control_socket: Option<String>,
    /// The pod's `terminationGracePeriodSeconds`, for `hitless check`.
    pub grace_period: Option<HumanDuration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<u64>,
    pub on: Option<Vec<String>>,
    pub idempotent: Option<bool>,
    pub max_replay_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub ratio: Option<f64>,
    pub min_per_second: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub bind: String,
    /// The port clients reach this listener on (a Service's `port` in front of it): what a
    /// Gateway listener's `port` and a route's `match.listener_ports` name. Default: the
    /// bound port.
    pub public_port: Option<u16>,
    pub tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    /// A certificate made at start for clients whose SNI names no certificate (as
    /// ingress-nginx's default "fake" certificate); the only one when `certificates` is empty.
    pub self_signed: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub request: Option<HumanDuration>,
    pub backend_request: Option<HumanDuration>,
    pub idle: Option<HumanDuration>,
    pub header_read: Option<HumanDuration>,
    /// An upgraded connection (WebSocket) with no byte either way for this long is closed.
    pub tunnel_idle: Option<HumanDuration>,
    /// How long the clients in front of hitless wait for an answer (a cloud load balancer's
    /// timeout, say). Only used by `hitless check` to verify the timeout chain.
    pub client: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_request_header_bytes: Option<u64>,
    pub max_response_header_bytes: Option<u64>,
    /// Forward request header names that contain `_` (dropped by default, as nginx does).
    pub keep_underscore_headers: Option<bool>,
    /// Client connections open at once, all listeners together (0: no limit).
    pub max_connections: Option<u64>,
    /// The listen backlog (connections the kernel queues before hitless accepts them).
    pub listen_backlog: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub worker_threads: Option<u64>,
    /// Plain HTTP/1.1 requests to `http` backends take the direct path (default true).
    pub direct_path: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Endpoints found at run time instead of listed (DNS or Kubernetes EndpointSlices).
    pub discovery: Option<RawDiscovery>,
    pub balance: Option<String>,
    /// `http` (HTTP/1.1, default), `h2c` (HTTP/2 prior knowledge), `grpc` (h2c), `https`
    /// (HTTP/1.1 over TLS) or `grpcs` (HTTP/2 over TLS).
    pub protocol: Option<String>,
    pub tls: Option<RawBackendTls>,
    pub connect_timeout: Option<HumanDuration>,
    pub pool: Option<RawPool>,
    /// The idle keep-alive timeout the application is known to use (Node.js 5s, gunicorn 2s...).
    /// `hitless check` warns when the pool would keep connections idle longer than this.
    pub upstream_keepalive_timeout: Option<HumanDuration>,
    pub retry_budget: Option<RawBudget>,
    pub outlier: Option<RawOutlier>,
    /// How long a request may wait for an endpoint when none can take it (0s: fail at once).
    pub hold_timeout: Option<HumanDuration>,
    /// Concurrent requests to this backend beyond which hitless answers 503 `overloaded`.
    pub max_concurrent_requests: Option<u64>,
    pub health_check: Option<RawHealthCheck>,
    /// A newly ready endpoint's share of requests ramps up over this window.
    pub slow_start: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub dns: Option<RawDns>,
    pub kubernetes: Option<RawKubernetes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// `host:port`, e.g. a headless Service `api.default.svc.cluster.local:8080`.
    pub name: Option<String>,
    pub min_ttl: Option<HumanDuration>,
    pub max_ttl: Option<HumanDuration>,
    /// `ip:port` of the name servers to ask instead of the ones in /etc/resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    pub service: Option<String>,
    pub namespace: Option<String>,
    /// The Service port's name (`http`), or the endpoints' port number.
    pub port: Option<RawPortRef>,
    /// A kubeconfig file; default: in-cluster service account, then $KUBECONFIG, ~/.kube/config.
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPortRef {
    Number(u64),
    Name(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    /// For grpc/grpcs backends: the service asked about (empty: the server as a whole).
    pub grpc_service: Option<String>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_threshold: Option<u64>,
    pub unhealthy_threshold: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    /// PEM file of the CA(s) that sign the backends' certificates.
    pub ca_file: Option<String>,
    /// The name to send as SNI and verify, when not the endpoint's host.
    pub server_name: Option<String>,
    /// A client certificate and key (PEM) for backends that require mTLS.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// Accept any certificate: test clusters only (logged loudly at every start).
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_failures: Option<u64>,
    pub base_ejection: Option<HumanDuration>,
    pub max_ejection: Option<HumanDuration>,
    pub max_ejected_percent: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub idle_timeout: Option<HumanDuration>,
    pub max_idle_per_endpoint: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub backend: Option<String>,
    /// A weighted split: each request goes to one of these (instead of `backend`).
    pub backends: Option<Vec<RawWeightedBackend>>,
    pub respond: Option<RawRespond>,
    pub redirect: Option<RawRedirect>,
    /// Changes to the request sent upstream, after hitless's own forwarding headers.
    pub request_headers: Option<RawHeaderFilter>,
    /// Changes to the backend's response before it goes to the client.
    pub response_headers: Option<RawHeaderFilter>,
    pub rewrite: Option<RawRewrite>,
    pub timeouts: Option<RawRouteTimeouts>,
    pub retry: Option<RawRetry>,
    pub fault: Option<RawFault>,
    /// A copy of each request (or of this share) to another backend; its answers are dropped.
    pub mirror: Option<RawMirror>,
}

/// `routes[].mirror`: `{backend: shadow, percent: 10}` (Gateway API's `RequestMirror`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub backend: String,
    /// Share of the requests copied (default 100).
    pub percent: Option<f64>,
}

/// `routes[].fault`: failures injected on purpose (see `config/fault.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    pub abort: Option<RawFaultAbort>,
    pub delay: Option<RawFaultDelay>,
    pub reset: Option<RawFaultShare>,
    /// Honour the `x-hitless-fault` request header (default: true).
    pub header: Option<bool>,
    /// Seed of the route's draws, for runs that repeat exactly (default: random).
    pub seed: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaultAbort {
    pub status: Option<u16>,
    pub percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaultDelay {
    pub duration: Option<HumanDuration>,
    pub percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaultShare {
    pub percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    /// A regular expression the path must match (unanchored unless it says `^`/`$`).
    pub path_regex: Option<String>,
    /// `http` or `https`: the listener the request came in on (plain or TLS).
    pub scheme: Option<String>,
    /// Exact request method (`GET`).
    pub method: Option<String>,
    /// Request headers that must all be present with these exact values.
    #[serde(default)]
    pub headers: Vec<RawNameValue>,
    /// Query parameters that must all be present with these exact values.
    #[serde(default)]
    pub query: Vec<RawNameValue>,
    /// The listeners the request may arrive on, by their `public_port` (any when empty).
    #[serde(default)]
    pub listener_ports: Vec<u16>,
}

/// `{name: x-env, value: canary}` or `{name: x-env, pattern: "^canary-"}`: one header or
/// query parameter condition, an exact value or a regular expression.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNameValue {
    pub name: String,
    pub value: Option<String>,
    pub pattern: Option<String>,
}

/// `{name: web-v2, weight: 10}`: one backend of a weighted split.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedBackend {
    pub name: String,
    /// Share of the requests relative to the other entries (default 1, as Gateway API's).
    pub weight: Option<u64>,
}

/// `request_headers:` / `response_headers:` (Gateway API's header modifier filters).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderFilter {
    /// Replace every field of this name with this one value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append a field, keeping those already there.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `redirect:` (Gateway API's RequestRedirect): answer with a `Location` built from the request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u64>,
    /// Replaces the whole path.
    pub path: Option<String>,
    /// Replaces the part of the path that the route's `match.path_prefix` matched.
    pub path_prefix: Option<String>,
    pub status: Option<u16>,
}

/// `rewrite:` (Gateway API's URLRewrite): what the backend is sent instead of the client's
/// Host and path.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteTimeouts {
    pub request: Option<HumanDuration>,
    pub backend_request: Option<HumanDuration>,
}

/// A duration written the way people write them: `250ms`, `5s`, `1m`, `1h30m`.
/// A bare number is rejected on purpose: `5` could mean seconds or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "expected a duration like \"5s\"";
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"250ms\", \"5s\" or \"1m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v.trim())
                    .map(HumanDuration)
                    .map_err(|_| E::custom(format!("{EXPECTED}, got \"{v}\"")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("{EXPECTED}, got \"{v}\" (add a unit)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("{EXPECTED}, got \"{v}\" (add a unit)")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("{EXPECTED}, got \"{v}\" (add a unit)")))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HumanDuration, E> {
                Err(E::custom(format!("{EXPECTED}, got \"{v}\"")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}
