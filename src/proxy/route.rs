//! The routing table: which route a request belongs to, by host and path. First match wins, in
//! the order of the config file (as Envoy's route lists): predictable, and `hitless check`
//! warns when an earlier route shadows a later one.
//!
//! Host matching ignores case and the port; `*.example.com` matches one or more labels in front
//! of `example.com` (not `example.com` itself). Path prefixes match whole segments, as Gateway
//! API's `PathPrefix` does: `/api` matches `/api` and `/api/v1`, not `/apiary`.
//! The table is immutable; a reload builds a new one and swaps the `Arc`.

use std::sync::Arc;
use std::time::Duration;

use super::fault::Faults;
use crate::config::{Action, FixedResponse, HostMatch, PathMatch, RetryPolicy};
use crate::runtime::metrics::RouteMetrics;
use crate::upstream::Backend;

pub enum RouteAction {
    Forward(Arc<Backend>),
    Respond(FixedResponse),
}

pub struct Route {
    pub name: String,
    host: Option<HostMatch>,
    path: PathMatch,
    pub action: RouteAction,
    pub request_timeout: Duration,
    pub backend_request_timeout: Duration,
    pub retry: RetryPolicy,
    pub metrics: RouteMetrics,
    /// `fault:`: requests to delay, abort or reset on purpose.
    pub fault: Option<Faults>,
}

impl Route {
    pub fn new(
        config: &crate::config::RouteConfig,
        backends: &[Arc<Backend>],
        metrics: RouteMetrics,
    ) -> Route {
        let action = match &config.action {
            Action::Forward { backend } => match backends.get(*backend) {
                Some(b) => RouteAction::Forward(Arc::clone(b)),
                // Validation guarantees the index; answer 503-style rather than panic anyway.
                None => RouteAction::Respond(FixedResponse {
                    status: http::StatusCode::SERVICE_UNAVAILABLE,
                    headers: Vec::new(),
                    body: bytes::Bytes::from_static(b"backend missing\n"),
                }),
            },
            Action::Respond(fixed) => RouteAction::Respond(fixed.clone()),
        };
        Route {
            name: config.name.clone(),
            host: config.host.clone(),
            path: config.path.clone(),
            action,
            request_timeout: config.request_timeout,
            backend_request_timeout: config.backend_request_timeout,
            retry: config.retry,
            metrics,
            fault: config.fault.clone().map(Faults::new),
        }
    }

    pub fn backend_name(&self) -> &str {
        match &self.action {
            RouteAction::Forward(b) => &b.name,
            RouteAction::Respond(_) => "-",
        }
    }

    fn matches(&self, host: &str, path: &str) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => host.eq_ignore_ascii_case(h),
            Some(HostMatch::Suffix(s)) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        };
        host_ok
            && match &self.path {
                PathMatch::Exact(p) => path == p,
                PathMatch::Prefix(p) => prefix_matches(p, path),
            }
    }
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

    /// The first route matching `host` (port allowed) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = host_without_port(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        self.routes.iter().find(|r| r.matches(host, path))
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
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
    }
}
