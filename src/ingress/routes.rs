//! What Ingresses (`translate.rs`) and Gateway API routes (`httproute.rs`) share: routes and
//! the order they are tried in, and a backend per Service port. hitless tries routes in order
//! and takes the first match, so the specs' precedence is made explicit by sorting: an exact
//! host before a wildcard before none, then exact paths, then prefixes longest first (the
//! Ingress spec's "longest match wins"; Gateway API then prefers a method match, then more
//! header matches, then more query matches), default backends last. hitless's `path_prefix` is
//! segment-wise, as the specs' `Prefix`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::nginx::Settings;
use super::{Note, Outcome};
use crate::lint::{Inventory, Object};

/// Where a route sorts, smaller first: (host kind, path kind, negative path length, no method
/// match, negative header matches, negative query matches).
pub(super) type Rank = (u8, u8, isize, u8, isize, isize);

/// One route and where it sorts.
pub(super) struct Route {
    pub rank: Rank,
    pub value: Value,
    /// An Ingress path's host and path as written: a canary of the same merges into it.
    pub source: Option<(Option<String>, String)>,
}

/// The backend a route uses: a Service port, with the settings of the objects that use it.
#[derive(Clone, PartialEq)]
pub(super) struct BackendRef {
    pub namespace: Option<String>,
    pub service: String,
    /// The Service port's name or number, as the object wrote it.
    pub port: Value,
}

pub(super) fn note(
    notes: &mut Vec<Note>,
    object: &Object,
    source: &str,
    outcome: Outcome,
    message: String,
) {
    notes.push(Note {
        object: object.id(),
        source: source.to_string(),
        outcome,
        message,
    });
}

/// The `match:` of a route on `host` and `path` (exact, or a prefix: the specs ignore a
/// trailing slash, `/foo/` matches `/foo`), and where the route sorts.
pub(super) fn matched(host: Option<&str>, exact: bool, path: &str) -> (Map<String, Value>, Rank) {
    let mut matcher = Map::new();
    if let Some(h) = host {
        matcher.insert("host".into(), json!(h));
    }
    if exact {
        matcher.insert("path".into(), json!(path));
    } else {
        let prefix = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        matcher.insert("path_prefix".into(), json!(prefix));
    }
    (matcher, rank(host, exact, path))
}

/// A route's `match:` for a path given as a regular expression (`pattern`, as hitless will
/// match it), ranked like a prefix as long as `written` (ingress-nginx orders its
/// regular-expression locations by length); `Err`: hitless cannot match it (the `regex` crate
/// has no look-around and no back-references), and why.
pub(super) fn matched_regex(
    host: Option<&str>,
    pattern: &str,
    written: &str,
) -> Result<(Map<String, Value>, Rank), String> {
    if let Some(why) = regex_problem(pattern) {
        return Err(why);
    }
    let mut matcher = Map::new();
    if let Some(h) = host {
        matcher.insert("host".into(), json!(h));
    }
    matcher.insert("path_regex".into(), json!(pattern));
    Ok((matcher, rank(host, false, written)))
}

/// Why hitless cannot match `pattern` as a `path_regex`, if it cannot (the config's own
/// builder and limits).
pub(super) fn regex_problem(pattern: &str) -> Option<String> {
    crate::config::compile_path_regex(pattern).err()
}

/// `namespace/name` of an object: the prefix of its routes' names (unique in a cluster).
pub(super) fn route_base(object: &Object) -> String {
    match &object.namespace {
        Some(ns) => format!("{ns}/{}", object.name),
        None => object.name.clone(),
    }
}

fn rank(host: Option<&str>, exact: bool, path: &str) -> Rank {
    let host_rank = match host {
        Some(h) if h.starts_with("*.") => 1,
        Some(_) => 0,
        None => 2,
    };
    let length = isize::try_from(path.len()).unwrap_or(isize::MAX);
    (host_rank, u8::from(!exact), -length, 0, 0, 0)
}

/// The backend entry for `backend` with `settings`, added when new; its name.
pub(super) fn backend_entry(
    object: &Object,
    inventory: &Inventory,
    backend: &BackendRef,
    settings: &Settings,
    backends: &mut BTreeMap<String, Value>,
    notes: &mut Vec<Note>,
) -> String {
    let value = backend_value(object, inventory, backend, settings, notes);
    // Named after the port discovery follows, so `80` and `http` of one Service are one backend.
    let port = value
        .pointer("/discovery/kubernetes/port")
        .unwrap_or(&backend.port);
    let port_label = match port {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let mut name = [
        backend.namespace.as_deref().unwrap_or_default(),
        &backend.service,
        &port_label,
    ]
    .iter()
    .filter(|p| !p.is_empty())
    .cloned()
    .collect::<Vec<_>>()
    .join("-");
    // The same Service port with other settings (another Ingress's annotations): its own entry.
    let mut n = 1;
    let base = name.clone();
    while let Some(existing) = backends.get(&name) {
        if *existing == value {
            return name;
        }
        n += 1;
        name = format!("{base}-{n}");
    }
    backends.insert(name.clone(), value);
    name
}

fn backend_value(
    object: &Object,
    inventory: &Inventory,
    backend: &BackendRef,
    settings: &Settings,
    notes: &mut Vec<Note>,
) -> Value {
    let mut value = settings.backend.clone();
    let namespace = backend.namespace.as_deref();
    let service = inventory.find("Service", namespace, &backend.service);
    if settings.service_upstream {
        let number = match &backend.port {
            Value::Number(n) => n.as_u64(),
            Value::String(name) => service
                .and_then(|s| service_port(s, |p| p.get("name") == Some(&json!(name))))
                .and_then(|p| p.get("port"))
                .and_then(Value::as_u64),
            _ => None,
        };
        let host = format!(
            "{}.{}.svc.cluster.local",
            backend.service,
            namespace.unwrap_or("default")
        );
        value.insert(
            "discovery".into(),
            json!({ "dns": { "name": format!("{host}:{}", number.unwrap_or(80)) } }),
        );
        return Value::Object(value);
    }
    let mut kubernetes = Map::new();
    kubernetes.insert("service".into(), json!(backend.service));
    if let Some(ns) = namespace {
        kubernetes.insert("namespace".into(), json!(ns));
    }
    // A Service port that says what it speaks (its name or appProtocol) sets the protocol when
    // no annotation did: nginx would speak HTTP to an `https` port and answer 502.
    let port_spec = service.and_then(|s| {
        service_port(s, |p| match &backend.port {
            Value::String(name) => p.get("name") == Some(&json!(name)),
            Value::Number(n) => p.get("port") == Some(&Value::Number(n.clone())),
            _ => false,
        })
    });
    if !value.contains_key("protocol") {
        let says = port_spec.and_then(|p| {
            p.get("appProtocol")
                .or_else(|| p.get("name"))
                .and_then(Value::as_str)
        });
        let protocol = match says.map(str::to_ascii_lowercase).as_deref() {
            Some("https") => Some("https"),
            Some("grpc") | Some("kubernetes.io/h2c") => Some("grpc"),
            Some("grpcs") => Some("grpcs"),
            _ => None,
        };
        if let (Some(protocol), Some(says)) = (protocol, says) {
            value.insert("protocol".into(), json!(protocol));
            note(
                notes,
                object,
                &format!("Service/{}", backend.service),
                Outcome::Differs,
                format!(
                    "port \"{says}\" and no backend-protocol: protocol {protocol} (nginx would speak HTTP to it and answer 502)"
                ),
            );
        }
    }
    // EndpointSlices name their ports after the Service's: a port number is the Service's own
    // and becomes its name (or, unnamed, the pod port it targets).
    match &backend.port {
        Value::String(name) => {
            kubernetes.insert("port".into(), json!(name));
        }
        Value::Number(number) => {
            let port = service.and_then(|s| {
                service_port(s, |p| p.get("port") == Some(&Value::Number(number.clone())))
            });
            match port {
                Some(p) => {
                    if let Some(name) = p.get("name").and_then(Value::as_str) {
                        kubernetes.insert("port".into(), json!(name));
                    } else if let Some(target) = p.get("targetPort").filter(|t| t.is_number()) {
                        kubernetes.insert("port".into(), target.clone());
                    } else if p.get("targetPort").is_some() {
                        // A named container port: slices of a one-port Service carry no name;
                        // without `port`, discovery takes the slices' only port.
                    } else {
                        kubernetes.insert("port".into(), Value::Number(number.clone()));
                    }
                }
                None => {
                    kubernetes.insert("port".into(), Value::Number(number.clone()));
                    note(
                        notes,
                        object,
                        &format!("Service/{}", backend.service),
                        Outcome::Differs,
                        format!(
                            "port {number} is the Service's; hitless's discovery names the Service \
                             port or the pod's port number: pass the Service manifest too, or check \
                             backends.*.discovery.kubernetes.port"
                        ),
                    );
                }
            }
        }
        _ => {}
    }
    value.insert("discovery".into(), json!({ "kubernetes": kubernetes }));
    Value::Object(value)
}

fn service_port(service: &Object, wanted: impl Fn(&Value) -> bool) -> Option<&Value> {
    service
        .value
        .get("spec")?
        .get("ports")?
        .as_array()?
        .iter()
        .find(|p| wanted(p))
}

pub(super) fn route_value(
    name: String,
    matcher: Map<String, Value>,
    backend: String,
    settings: &Settings,
) -> Value {
    let mut route = Map::new();
    route.insert("name".into(), json!(name));
    route.insert("match".into(), Value::Object(matcher));
    route.insert("backend".into(), json!(backend));
    if !settings.timeouts.is_empty() {
        route.insert("timeouts".into(), Value::Object(settings.timeouts.clone()));
    }
    if !settings.retry.is_empty() {
        route.insert("retry".into(), Value::Object(settings.retry.clone()));
    }
    Value::Object(route)
}
