//! Where a backend's endpoints come from when they are not listed: DNS (a headless Service
//! name, re-resolved on its TTL) or the Kubernetes EndpointSlices of a Service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::errors::{dur, Errors};
use super::raw::{RawDiscovery, RawPortRef};

#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    Dns(DnsDiscovery),
    Kubernetes(KubernetesDiscovery),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsDiscovery {
    pub host: String,
    pub port: u16,
    /// Re-resolve no sooner than this after an answer (a TTL of 0 would mean a query storm)...
    pub min_ttl: Duration,
    /// ...and no later than this (a TTL of a day would hide a rollout for a day).
    pub max_ttl: Duration,
    /// Empty: the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesDiscovery {
    pub service: String,
    /// `None`: the namespace of the kubeconfig context or of the pod's service account.
    pub namespace: Option<String>,
    /// `None`: the EndpointSlices' only port.
    pub port: Option<PortRef>,
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Name(String),
    Number(u16),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Name(name) => f.write_str(name),
            PortRef::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Discovery {
    /// What the logs and `hitless check` call it.
    pub fn describe(&self) -> String {
        match self {
            Discovery::Dns(d) => format!("dns {}:{}", d.host, d.port),
            Discovery::Kubernetes(k) => format!(
                "kubernetes service {}/{}",
                k.namespace.as_deref().unwrap_or("(default namespace)"),
                k.service
            ),
        }
    }
}

pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(30);

/// A Kubernetes object name (RFC 1123 label: what Service and Namespace names must be).
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(super) fn parse(errors: &mut Errors, base: &str, raw: &RawDiscovery) -> Option<Discovery> {
    match (&raw.dns, &raw.kubernetes) {
        (Some(_), Some(_)) | (None, None) => {
            errors.push(base, "set exactly one of dns or kubernetes");
            None
        }
        (Some(dns), None) => {
            let base = format!("{base}.dns");
            let Some(name) = dns.name.as_deref() else {
                errors.push(
                    format!("{base}.name"),
                    "required: \"host:port\", e.g. \"api.default.svc.cluster.local:8080\"",
                );
                return None;
            };
            let (host, port) = match name.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
                Some((host, Ok(port))) if !host.is_empty() && port > 0 => (host, port),
                _ => {
                    errors.push(
                        format!("{base}.name"),
                        format!("expected \"host:port\", got \"{name}\""),
                    );
                    return None;
                }
            };
            let min_ttl = dur(dns.min_ttl, MIN_TTL);
            let max_ttl = dur(dns.max_ttl, MAX_TTL.max(min_ttl));
            if min_ttl < Duration::from_millis(100) {
                errors.push(
                    format!("{base}.min_ttl"),
                    format!("must be at least 100ms, got {min_ttl:?}"),
                );
            }
            if max_ttl < min_ttl {
                errors.push(
                    format!("{base}.max_ttl"),
                    format!("must not be below min_ttl ({min_ttl:?}), got {max_ttl:?}"),
                );
            }
            let mut nameservers = Vec::new();
            for (i, ns) in dns.nameservers.iter().enumerate() {
                match ns.parse::<SocketAddr>() {
                    Ok(addr) => nameservers.push(addr),
                    Err(_) => errors.push(
                        format!("{base}.nameservers[{i}]"),
                        format!("expected \"ip:port\", got \"{ns}\""),
                    ),
                }
            }
            Some(Discovery::Dns(DnsDiscovery {
                host: host.to_string(),
                port,
                min_ttl,
                max_ttl,
                nameservers,
            }))
        }
        (None, Some(k)) => {
            let base = format!("{base}.kubernetes");
            let service = match k.service.as_deref() {
                Some(s) if is_label(s) => s.to_string(),
                Some(s) => {
                    errors.push(
                        format!("{base}.service"),
                        format!(
                            "expected a Service name (lowercase letters, digits, '-'), got \"{s}\""
                        ),
                    );
                    return None;
                }
                None => {
                    errors.push(format!("{base}.service"), "required: the Service's name");
                    return None;
                }
            };
            let namespace = match k.namespace.as_deref() {
                Some(ns) if !is_label(ns) => {
                    errors.push(
                        format!("{base}.namespace"),
                        format!("expected a namespace name (lowercase letters, digits, '-'), got \"{ns}\""),
                    );
                    None
                }
                ns => ns.map(String::from),
            };
            let port = match &k.port {
                None => None,
                Some(RawPortRef::Number(n)) => match u16::try_from(*n) {
                    Ok(n) if n > 0 => Some(PortRef::Number(n)),
                    _ => {
                        errors.push(
                            format!("{base}.port"),
                            format!("expected a port name or a number 1-65535, got {n}"),
                        );
                        None
                    }
                },
                Some(RawPortRef::Name(name)) if name.is_empty() => {
                    errors.push(format!("{base}.port"), "empty port name");
                    None
                }
                Some(RawPortRef::Name(name)) => Some(PortRef::Name(name.clone())),
            };
            Some(Discovery::Kubernetes(KubernetesDiscovery {
                service,
                namespace,
                port,
                kubeconfig: k.kubeconfig.as_ref().map(PathBuf::from),
            }))
        }
    }
}
