//! The routing table: which route a request belongs to, by host and path, then by the scheme
//! it came in with (plain or TLS listener), method, headers and query. First match wins, in the order of the config file (as Envoy's route
//! lists): predictable, and `hitless check` warns when an earlier route shadows a later one.
//!
//! Host matching ignores case and the port; `*.example.com` matches one or more labels in front
//! of `example.com` (not `example.com` itself). Path prefixes match whole segments, as Gateway
//! API's `PathPrefix` does: `/api` matches `/api` and `/api/v1`, not `/apiary`. Header
//! conditions match a field of that name (any case) with exactly that value; query conditions
//! compare the first parameter of that name, percent-decoded (`+` as a space, as form
//! parsers do), with the configured text: what the application will read.
//!
//! A route also knows what it does to a request besides forwarding it: the weighted pick of a
//! backend (`Split`), header changes and the URL rewrite (`Filters`), and redirects. Only
//! hyper's engine applies conditions, filters and redirects; `Route::direct` tells the direct
//! engine which routes it may serve.
//! The table is immutable; a reload builds a new one and swaps the `Arc`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

use super::fault::Faults;
use super::mirror::Mirror;
use crate::config::{
    Action, Conditions, FixedResponse, HeaderFilter, HostMatch, PathMatch, PathReplace, Protocol,
    Redirect, RetryPolicy, Rewrite, RouteConfig, ValueMatch,
};
use crate::runtime::metrics::RouteMetrics;
use crate::runtime::random::random_below;
use crate::upstream::Backend;

pub enum RouteAction {
    Forward(Arc<Backend>),
    /// `backends:`: each request takes one of these routes, drawn by weight (`Route::pick`).
    Split(Split),
    Respond(FixedResponse),
    /// `redirect:`: answered with a `Location` built from the request (`Route::location`).
    Redirect(Redirect),
}

/// A weighted split: one route per backend that takes traffic, each with the split's settings,
/// its own backend and its own metrics, so that the access log and the metrics name the backend
/// a request went to, and its retries stay there.
pub struct Split {
    /// Each route, with the sum of the weights up to and including its own.
    choices: Box<[(u32, Arc<Route>)]>,
    total: u32,
}

impl Split {
    fn new(
        config: &RouteConfig,
        backends: Vec<(u32, Arc<Backend>)>,
        shared: &Shared,
        direct: bool,
        metrics: &dyn Fn(&str) -> RouteMetrics,
    ) -> Split {
        let mut total = 0u32;
        let mut choices = Vec::with_capacity(backends.len());
        for (weight, backend) in backends {
            // Validation bounds the weights (16 of at most 1,000,000): this never saturates.
            total = total.saturating_add(weight);
            let m = metrics(&backend.name);
            let route = Route::with(config, RouteAction::Forward(backend), m, shared, direct);
            choices.push((total, Arc::new(route)));
        }
        Split {
            choices: choices.into_boxed_slice(),
            total,
        }
    }

    fn pick(&self) -> Option<&Arc<Route>> {
        let draw = u32::try_from(random_below(self.total as usize)).unwrap_or(0);
        self.choices
            .iter()
            .find(|(upto, _)| draw < *upto)
            .map(|(_, route)| route)
    }
}

/// What hyper's engine does to a forwarded request and its answer besides hitless's own
/// rules. `None` on a route without any: one pointer test per request.
pub struct Filters {
    pub request_headers: HeaderFilter,
    pub response_headers: HeaderFilter,
    pub rewrite: Option<Rewrite>,
}

impl Filters {
    fn of(config: &RouteConfig) -> Option<Filters> {
        let none = config.request_headers.is_empty()
            && config.response_headers.is_empty()
            && config.rewrite.is_none();
        (!none).then(|| Filters {
            request_headers: config.request_headers.clone(),
            response_headers: config.response_headers.clone(),
            rewrite: config.rewrite.clone(),
        })
    }
}

pub struct Route {
    pub name: String,
    host: Option<HostMatch>,
    path: PathMatch,
    /// `match.listener_ports`: the public ports of the listeners it serves (empty: all).
    listener_ports: Box<[u16]>,
    /// `None` when the route has none (the common case: no pointer chased).
    conditions: Option<Box<Conditions>>,
    pub action: RouteAction,
    pub request_timeout: Duration,
    pub backend_request_timeout: Duration,
    pub retry: RetryPolicy,
    pub metrics: RouteMetrics,
    /// `fault:`: requests to delay, abort or reset on purpose (shared by a split's routes: one
    /// sequence of draws).
    pub fault: Option<Arc<Faults>>,
    /// `mirror:`: copies of requests to another backend (shared by a split's routes).
    pub mirror: Option<Arc<Mirror>>,
    /// `request_headers:`, `response_headers:`, `rewrite:`.
    pub filters: Option<Arc<Filters>>,
    /// The direct engine may serve the route: no conditions, filters, redirect or faults, and
    /// every backend plain `http`. A split's routes share the split's answer, so that the
    /// engine never changes the odds of a draw.
    pub direct: bool,
}

/// A backend the direct engine can reach: plain HTTP/1.1 over its raw pooled connections.
fn direct_backend(backend: &Backend) -> bool {
    backend.config.protocol == Protocol::Http && backend.config.tls.is_none()
}

/// Where a route's requests go, before routes are made of it.
enum Target {
    Forward(Arc<Backend>),
    Split(Vec<(u32, Arc<Backend>)>),
    Respond(FixedResponse),
    Redirect(Redirect),
}

impl Target {
    fn of(config: &RouteConfig, backends: &[Arc<Backend>]) -> Target {
        // Validation guarantees the indices; answer 503-style rather than panic anyway.
        let missing = || {
            Target::Respond(FixedResponse {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                headers: Vec::new(),
                body: bytes::Bytes::from_static(b"backend missing\n"),
            })
        };
        match &config.action {
            Action::Forward { backend } => backends
                .get(*backend)
                .map(|b| Target::Forward(Arc::clone(b)))
                .unwrap_or_else(missing),
            Action::Split(split) => {
                let split: Option<Vec<(u32, Arc<Backend>)>> = split
                    .iter()
                    .filter(|w| w.weight > 0)
                    .map(|w| backends.get(w.backend).map(|b| (w.weight, Arc::clone(b))))
                    .collect();
                split.map(Target::Split).unwrap_or_else(missing)
            }
            Action::Respond(fixed) => Target::Respond(fixed.clone()),
            Action::Redirect(redirect) => Target::Redirect(redirect.clone()),
        }
    }

    /// Whether the direct engine can serve requests of a route with this target.
    fn direct(&self) -> bool {
        match self {
            Target::Forward(b) => direct_backend(b),
            Target::Split(split) => split.iter().all(|(_, b)| direct_backend(b)),
            Target::Respond(_) => true,
            Target::Redirect(_) => false,
        }
    }
}

impl Route {
    /// The route of `config`. `metrics` gives the handles of the route with one backend's
    /// name (`-` for routes that answer by themselves).
    pub fn new(
        config: &RouteConfig,
        backends: &[Arc<Backend>],
        metrics: &dyn Fn(&str) -> RouteMetrics,
        mirror: Option<Mirror>,
    ) -> Route {
        let target = Target::of(config, backends);
        let shared = Shared {
            fault: config.fault.clone().map(|f| Arc::new(Faults::new(f))),
            mirror: mirror.map(Arc::new),
            filters: Filters::of(config).map(Arc::new),
            conditions: (!config.conditions.is_empty())
                .then(|| Box::new(config.conditions.clone())),
        };
        let direct = target.direct()
            && shared.fault.is_none()
            && shared.mirror.is_none()
            && shared.filters.is_none()
            && shared.conditions.is_none();
        let (action, metrics) = match target {
            Target::Forward(b) => {
                let m = metrics(&b.name);
                (RouteAction::Forward(b), m)
            }
            Target::Respond(fixed) => (RouteAction::Respond(fixed), metrics("-")),
            Target::Redirect(r) => (RouteAction::Redirect(r), metrics("-")),
            Target::Split(split) => {
                // The same series as the first choice's: the split itself records nothing
                // (requests are logged under the route they picked).
                let m = metrics(split.first().map(|(_, b)| b.name.as_str()).unwrap_or("-"));
                let split = Split::new(config, split, &shared, direct, metrics);
                (RouteAction::Split(split), m)
            }
        };
        Route::with(config, action, metrics, &shared, direct)
    }

    fn with(
        config: &RouteConfig,
        action: RouteAction,
        metrics: RouteMetrics,
        shared: &Shared,
        direct: bool,
    ) -> Route {
        Route {
            name: config.name.clone(),
            host: config.host.clone(),
            path: config.path.clone(),
            listener_ports: config.listener_ports.clone().into_boxed_slice(),
            conditions: shared.conditions.clone(),
            action,
            request_timeout: config.request_timeout,
            backend_request_timeout: config.backend_request_timeout,
            retry: config.retry,
            metrics,
            fault: shared.fault.clone(),
            mirror: shared.mirror.clone(),
            filters: shared.filters.clone(),
            direct,
        }
    }

    pub fn backend_name(&self) -> &str {
        match &self.action {
            RouteAction::Forward(b) => &b.name,
            // Not reached through `pick`: requests are logged under the route they picked.
            RouteAction::Split(_) | RouteAction::Respond(_) | RouteAction::Redirect(_) => "-",
        }
    }

    /// The route a request takes: this one, or for a split the route of one of its backends,
    /// drawn by weight (one random number; nothing allocated).
    pub fn pick(self: &Arc<Route>) -> &Arc<Route> {
        match &self.action {
            RouteAction::Split(split) => split.pick().unwrap_or(self),
            _ => self,
        }
    }

    /// Listener, host and path (port removed from `host` already); `port` is the public port
    /// of the listener the request came in on.
    fn matches(&self, port: u16, host: &str, path: &str) -> bool {
        if !self.listener_ports.is_empty() && !self.listener_ports.contains(&port) {
            return false;
        }
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => host.eq_ignore_ascii_case(h),
            Some(HostMatch::Suffix(s)) => host
                .len()
                .checked_sub(s.len())
                .filter(|&at| host.is_char_boundary(at))
                .and_then(|at| host.get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(s)),
        };
        host_ok
            && match &self.path {
                PathMatch::Exact(p) => path == p,
                PathMatch::Prefix(p) => prefix_matches(p, path),
                PathMatch::Regex(r) => r.0.is_match(path),
            }
    }

    /// Whether the route's method, header and query conditions hold (true when it has none).
    fn meets(
        &self,
        scheme: &str,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> bool {
        let Some(c) = &self.conditions else {
            return true;
        };
        c.scheme.is_none_or(|s| s == scheme)
            && c.method.as_ref().is_none_or(|m| m == method)
            && c.headers.iter().all(|(name, wanted)| {
                headers.get_all(name).iter().any(|v| match wanted {
                    ValueMatch::Exact(value) => v == value,
                    // Bytes beyond ASCII (obs-text, UTF-8 sent raw) read as UTF-8, as an
                    // application would, invalid sequences as U+FFFD.
                    ValueMatch::Pattern(p) => p.0.is_match(&String::from_utf8_lossy(v.as_bytes())),
                })
            })
            && c.query
                .iter()
                .all(|(name, wanted)| query_matches(query.unwrap_or(""), name, wanted))
    }

    /// `path` with `replace` applied (Gateway API's `ReplaceFullPath`, `ReplacePrefixMatch`):
    /// the prefix form swaps what this route's `path_prefix` matched for the replacement and
    /// keeps the rest (`/foo` -> `/`: `/foo/bar` becomes `/bar`, `/foo` becomes `/`).
    pub fn replaced_path(&self, replace: &PathReplace, path: &str) -> String {
        let (replacement, prefix) = match (replace, &self.path) {
            (PathReplace::Full(full), _) => return full.clone(),
            (PathReplace::Prefix(r), PathMatch::Prefix(p)) => (r, p),
            // Validation refuses a prefix replacement on an exact match: the whole path then.
            // Refused by validation (a prefix replaces what `path_prefix` matched).
            (PathReplace::Prefix(r), PathMatch::Exact(_) | PathMatch::Regex(_)) => {
                return r.clone()
            }
        };
        // Without its trailing slash the prefix leaves "" or "/..." (matching is by segment).
        let rest = path
            .strip_prefix(prefix.trim_end_matches('/'))
            .unwrap_or(path);
        let mut out = String::with_capacity(replacement.len().saturating_add(rest.len()));
        out.push_str(replacement.trim_end_matches('/'));
        out.push_str(rest);
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// The `Location` of a redirect for a request to `authority` (`Host`, or HTTP/2's
    /// `:authority`) with `path` and `query`, that arrived over `scheme` (the listener's).
    pub fn location(
        &self,
        redirect: &Redirect,
        scheme: &str,
        authority: &str,
        path: &str,
        query: Option<&str>,
    ) -> String {
        let host = redirect
            .host
            .as_deref()
            .unwrap_or_else(|| host_without_port(authority));
        // A new scheme without a port goes to that scheme's default port (Gateway API).
        let port = match (redirect.port, redirect.scheme) {
            (Some(port), _) => Some(port),
            (None, Some(_)) => None,
            (None, None) => port_of(authority),
        };
        let scheme = redirect.scheme.unwrap_or(scheme);
        let default_port = if scheme == "https" { 443 } else { 80 };
        let path = match &redirect.path {
            Some(replace) => self.replaced_path(replace, path),
            None => path.to_string(),
        };
        let mut out = String::with_capacity(64);
        out.push_str(scheme);
        out.push_str("://");
        if host.contains(':') {
            // An IPv6 address keeps its brackets in a URL.
            out.push('[');
            out.push_str(host);
            out.push(']');
        } else {
            out.push_str(host);
        }
        if let Some(port) = port.filter(|&p| p != default_port) {
            out.push(':');
            out.push_str(&port.to_string());
        }
        out.push_str(&path);
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            out.push('?');
            out.push_str(query);
        }
        out
    }
}

/// The settings every route made from one config entry shares (a split's routes too).
struct Shared {
    fault: Option<Arc<Faults>>,
    mirror: Option<Arc<Mirror>>,
    filters: Option<Arc<Filters>>,
    conditions: Option<Box<Conditions>>,
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/')
}

/// Whether the first parameter called `name` in `query` has the value `wanted`, or one it
/// matches.
fn query_matches(query: &str, name: &str, wanted: &ValueMatch<String>) -> bool {
    match wanted {
        ValueMatch::Exact(value) => query_value_is(query, name, value),
        ValueMatch::Pattern(p) => first_value(query, name).is_some_and(|v| p.0.is_match(&v)),
    }
}

/// The first value of parameter `name`, percent-decoded (`+` as a space; invalid UTF-8 as
/// U+FFFD).
fn first_value(query: &str, name: &str) -> Option<String> {
    let pair = query.split('&').find(|pair| {
        let (n, _) = pair.split_once('=').unwrap_or((pair, ""));
        decoded_eq(n.as_bytes(), name.as_bytes())
    })?;
    let mut raw = pair.split_once('=').map_or("", |(_, v)| v).as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    loop {
        let (byte, rest) = match raw {
            [] => return Some(String::from_utf8_lossy(&out).into_owned()),
            [b'%', hi, lo, rest @ ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                ((hex(*hi) << 4) | hex(*lo), rest)
            }
            [b'+', rest @ ..] => (b' ', rest),
            [b, rest @ ..] => (*b, rest),
        };
        out.push(byte);
        raw = rest;
    }
}

/// Whether the first parameter called `name` in `query` has the value `value`, both read
/// percent-decoded with `+` as a space (a parameter without `=` has the value "").
fn query_value_is(query: &str, name: &str, value: &str) -> bool {
    for pair in query.split('&') {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decoded_eq(n.as_bytes(), name.as_bytes()) {
            return decoded_eq(v.as_bytes(), value.as_bytes());
        }
    }
    false
}

/// Whether `raw`, percent-decoded (`+` as a space; a `%` not followed by two hex digits is
/// itself), is `expected`: compared as it is decoded, nothing allocated.
fn decoded_eq(mut raw: &[u8], mut expected: &[u8]) -> bool {
    loop {
        let (byte, rest) = match raw {
            [] => return expected.is_empty(),
            [b'%', hi, lo, rest @ ..] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                ((hex(*hi) << 4) | hex(*lo), rest)
            }
            [b'+', rest @ ..] => (b' ', rest),
            [b, rest @ ..] => (*b, rest),
        };
        match expected {
            [e, more @ ..] if *e == byte => {
                expected = more;
                raw = rest;
            }
            _ => return false,
        }
    }
}

/// The value of an ASCII hex digit (0 for anything else; callers check first).
fn hex(digit: u8) -> u8 {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
        .unwrap_or(0)
}

/// The host part of a `Host` header or authority: without port, without IPv6 brackets' port.
pub fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [::1]:8080 -> ::1
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The port of a `Host` header or authority, when it has one.
fn port_of(authority: &str) -> Option<u16> {
    let (_, port) = authority.rsplit_once(':')?;
    // `[::1]` alone ends in `]`, not in a port.
    port.parse().ok()
}

#[derive(Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Router {
        Router {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The first route matching the listener (`port`, its public port), `host` (port
    /// allowed) and `path`, its other conditions not evaluated: the direct engine's candidate,
    /// handed to hyper's engine when it has any.
    pub fn find(&self, port: u16, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = normal_host(host);
        self.routes.iter().find(|r| r.matches(port, host, path))
    }

    /// The first route matching the whole request that came in on the listener of public
    /// port `port` over `scheme`: `host` (port allowed), then the path, method, headers and
    /// query of `parts`.
    pub fn find_request(
        &self,
        host: &str,
        (scheme, port): (&str, u16),
        parts: &http::request::Parts,
    ) -> Option<&Arc<Route>> {
        let host = normal_host(host);
        let (path, query) = (parts.uri.path(), parts.uri.query());
        self.routes.iter().find(|r| {
            r.matches(port, host, path) && r.meets(scheme, &parts.method, &parts.headers, query)
        })
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// A host as routes compare it: no port, no trailing dot.
fn normal_host(host: &str) -> &str {
    let host = host_without_port(host);
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apiary"));
        assert!(prefix_matches("/api/", "/api/v1"));
        assert!(!prefix_matches("/api/", "/api"));
    }

    #[test]
    fn host_port_is_ignored() {
        assert_eq!(host_without_port("api.example.com:8080"), "api.example.com");
        assert_eq!(host_without_port("api.example.com"), "api.example.com");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(port_of("api.example.com:8080"), Some(8080));
        assert_eq!(port_of("api.example.com"), None);
        assert_eq!(port_of("[::1]"), None);
        assert_eq!(port_of("[::1]:8443"), Some(8443));
    }

    #[test]
    fn query_values_compare_decoded_and_first_wins() {
        assert!(query_value_is("debug=1", "debug", "1"));
        assert!(query_value_is("a=b&debug=1&debug=2", "debug", "1"));
        assert!(!query_value_is("debug=2&debug=1", "debug", "1"));
        assert!(query_value_is("q=a%20b", "q", "a b"));
        assert!(query_value_is("q=a+b", "q", "a b"));
        assert!(query_value_is("q=%E2%9C%93", "q", "✓"));
        assert!(query_value_is("q=100%", "q", "100%"));
        assert!(query_value_is("q=%zz", "q", "%zz"));
        assert!(query_value_is("flag", "flag", ""));
        assert!(query_value_is("na%6De=x", "name", "x"));
        assert!(!query_value_is("debug=10", "debug", "1"));
        assert!(!query_value_is("debug=", "debug", "1"));
        assert!(!query_value_is("", "debug", "1"));
        assert!(!query_value_is("debugx=1", "debug", "1"));
    }
}
