//! Which Gateway API objects are hitless's: a GatewayClass whose `controllerName` is
//! [`CONTROLLER`], the Gateways of such a class, and the HTTPRoutes and GRPCRoutes whose
//! `parentRefs` name one of those Gateways and that the Gateway's listeners allow
//! (`allowedRoutes`: the route's namespace, `Same` by default, `All`, or `Selector` on the
//! namespace's labels, and its kind) and whose hostnames meet the listener's `hostname` (a
//! route then serves only the hostnames it shares with the listeners that take it: one
//! tenant's route cannot claim another's host). A `Selector` listener takes routes only from
//! namespaces the controller has listed and its selector selects: while Namespaces are not
//! known (not listed yet, or no permission), or the route's namespace is not among them, it
//! takes none, and says why. Listeners of other protocols than HTTP and HTTPS take none.
//!
//! A Gateway listener's `port` names one of hitless's listeners by its public port
//! (`listeners[].public_port`, the Service's port in front of it): an `HTTP` listener needs a
//! plain one there, `HTTPS` a TLS one; a listener without one takes no route (its status says
//! `PortUnavailable`). A route is served on the ports of the listeners that take it, each
//! hostname on the ports whose listeners take it for that hostname ([`Placement`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The `controllerName` of GatewayClasses hitless serves.
pub const CONTROLLER: &str = "hitless.dev/gateway";

/// The group of Gateway API objects.
pub const GROUP: &str = "gateway.networking.k8s.io";

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// `namespace/name` of an object.
pub fn key(object: &Value) -> String {
    format!(
        "{}/{}",
        text(object, "/metadata/namespace").unwrap_or_default(),
        text(object, "/metadata/name").unwrap_or_default()
    )
}

/// One `parentRefs` entry of a route, and what it names.
pub struct Parent<'a> {
    /// The entry as written (it keys the route's `status.parents`).
    pub reference: &'a Value,
    /// The Gateway it names, when that is one of ours.
    pub gateway: Option<&'a Value>,
    /// The listeners of the Gateway that take the route (at least one); `Err(reason,
    /// message)`: a Gateway of ours that does not take this route.
    pub allowed: Result<Vec<Taken<'a>>, (&'static str, String)>,
}

/// A Gateway listener that takes a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken<'a> {
    /// The listener's `name`.
    pub listener: &'a str,
    pub port: u16,
    /// The listener's `hostname` (`None`: any).
    pub hostname: Option<&'a str>,
    /// The hostnames it takes the route for.
    pub hosts: Hosts,
}

/// One of hitless's listeners as Gateway listeners see it: its public port, and TLS or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub port: u16,
    pub tls: bool,
}

impl std::fmt::Display for Port {
    /// `443 (HTTPS)`: what a Gateway listener on this port must say.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = if self.tls { "HTTPS" } else { "HTTP" };
        write!(f, "{} ({protocol})", self.port)
    }
}

impl Port {
    /// The listeners of a config (public ports, one entry per listener).
    pub fn of(config: &crate::config::Config) -> Vec<Port> {
        config
            .listener_ports
            .iter()
            .zip(&config.listener_tls)
            .map(|(port, tls)| Port {
                port: *port,
                tls: tls.is_some(),
            })
            .collect()
    }
}

/// Where a route is served: each hostname (`None`: any host) with the public ports it is
/// served on (empty: every listener of hitless).
pub type Placement = Vec<(Option<String>, Vec<u16>)>;

/// The hostnames a route is served for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// As the route says (every host when it names none).
    AsWritten,
    /// Only these (the route's hostnames within its listeners').
    Only(Vec<String>),
}

/// Our GatewayClasses and their Gateways.
pub struct Ours<'a> {
    pub classes: BTreeSet<String>,
    pub gateways: Vec<&'a Value>,
    /// Each namespace's labels (`metadata.labels`) by name; `None`: not known.
    namespaces: Option<BTreeMap<&'a str, &'a Value>>,
    /// hitless's own listeners.
    ports: Vec<Port>,
}

impl<'a> Ours<'a> {
    pub fn new(
        classes: impl IntoIterator<Item = &'a Value>,
        gateways: impl IntoIterator<Item = &'a Value>,
        namespaces: Option<BTreeMap<&'a str, &'a Value>>,
        ports: Vec<Port>,
    ) -> Ours<'a> {
        let classes: BTreeSet<String> = classes
            .into_iter()
            .filter(|c| text(c, "/spec/controllerName") == Some(CONTROLLER))
            .filter_map(|c| text(c, "/metadata/name").map(str::to_string))
            .collect();
        let gateways = gateways
            .into_iter()
            .filter(|g| text(g, "/spec/gatewayClassName").is_some_and(|c| classes.contains(c)))
            .collect();
        Ours {
            classes,
            gateways,
            namespaces,
            ports,
        }
    }

    /// Whether a listener of ours on `port` with a more specific hostname than `hostname`
    /// covers `host` (which it then serves instead).
    fn narrower_listener(&self, host: &str, port: u16, hostname: Option<&str>) -> bool {
        let rank = specificity(hostname);
        self.gateways
            .iter()
            .filter_map(|g| g.pointer("/spec/listeners").and_then(Value::as_array))
            .flatten()
            .filter(|l| l.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
            .filter(|l| self.fit(l).is_ok())
            .filter_map(|l| text(l, "/hostname"))
            .any(|other| {
                specificity(Some(other)) > rank
                    && meet(host, other).is_some_and(|m| m.eq_ignore_ascii_case(host))
            })
    }

    /// Whether hitless can serve a Gateway listener: `Err((reason, message))` for the
    /// listener's `Accepted` condition when it cannot (it then takes no route).
    pub fn fit(&self, listener: &Value) -> Result<(), (&'static str, String)> {
        let protocol = text(listener, "/protocol").unwrap_or_default();
        let tls = match protocol {
            "HTTP" => false,
            "HTTPS" if text(listener, "/tls/mode").is_some_and(|m| m != "Terminate") => {
                return Err((
                    "UnsupportedValue",
                    "hitless terminates TLS: tls.mode Passthrough is not served (HTTPS listeners \
                     use Terminate)"
                        .into(),
                ));
            }
            "HTTPS" => true,
            _ => {
                // TCP, TLS passthrough, UDP: not hitless's.
                return Err((
                    "UnsupportedProtocol",
                    "hitless serves HTTP and HTTPS listeners (HTTPRoute, GRPCRoute) only".into(),
                ));
            }
        };
        let port = listener
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        let theirs = || {
            let list: Vec<String> = self.ports.iter().map(Port::to_string).collect();
            list.join(", ")
        };
        let Some(port) = port else {
            return Err(("PortUnavailable", "the listener names no valid port".into()));
        };
        match self.ports.iter().find(|p| p.port == port) {
            None => Err((
                "PortUnavailable",
                format!(
                    "hitless has no listener on port {port} (its ports: {}; a listener's public_port in the config names the port clients use)",
                    theirs()
                ),
            )),
            Some(p) if p.tls != tls => Err((
                "PortUnavailable",
                if tls {
                    format!("port {port} is a plain-HTTP listener of hitless: HTTPS needs a listener with tls (listeners[].tls)")
                } else {
                    format!("port {port} is a TLS listener of hitless: HTTP is not served there")
                },
            )),
            Some(_) => Ok(()),
        }
    }

    /// The parents of `route` (an HTTPRoute or GRPCRoute) that are Gateways.
    pub fn parents(&self, route: &'a Value) -> Vec<Parent<'a>> {
        let namespace = text(route, "/metadata/namespace").unwrap_or_default();
        let kind = text(route, "/kind").unwrap_or("HTTPRoute");
        let refs = route
            .pointer("/spec/parentRefs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        refs.iter()
            .filter(|r| {
                text(r, "/group").unwrap_or(GROUP) == GROUP
                    && text(r, "/kind").unwrap_or("Gateway") == "Gateway"
            })
            .map(|r| {
                let gateway_namespace = text(r, "/namespace").unwrap_or(namespace);
                let name = text(r, "/name").unwrap_or_default();
                let gateway = self.gateways.iter().copied().find(|g| {
                    text(g, "/metadata/name") == Some(name)
                        && text(g, "/metadata/namespace").unwrap_or_default() == gateway_namespace
                });
                let allowed = match gateway {
                    Some(g) => {
                        let labels = self.namespaces.as_ref().map(|n| n.get(namespace).copied());
                        let from = From { namespace, labels };
                        self.allows(g, r, route, &from, kind)
                    }
                    None => Ok(Vec::new()),
                };
                Parent {
                    reference: r,
                    gateway,
                    allowed,
                }
            })
            .collect()
    }

    /// Where the Gateways of ours that take `route` serve it; `None`: none takes it.
    pub fn placement(&self, route: &'a Value) -> Option<Placement> {
        let written: Vec<Option<String>> =
            match route.pointer("/spec/hostnames").and_then(Value::as_array) {
                Some(names) if !names.is_empty() => names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|n| Some(n.to_ascii_lowercase()))
                    .collect(),
                _ => vec![None],
            };
        let mut placement: Placement = Vec::new();
        let mut add = |host: Option<String>, port: u16| match placement
            .iter_mut()
            .find(|(h, _)| *h == host)
        {
            Some((_, ports)) if ports.contains(&port) => {}
            Some((_, ports)) => ports.push(port),
            None => placement.push((host, vec![port])),
        };
        for parent in self.parents(route) {
            let (Some(_), Ok(taken)) = (parent.gateway, parent.allowed) else {
                continue;
            };
            for t in taken {
                let hosts = match t.hosts {
                    Hosts::AsWritten => written.clone(),
                    Hosts::Only(hosts) => hosts.into_iter().map(Some).collect(),
                };
                for host in hosts {
                    // A request goes to the most specific listener for its host on its port:
                    // a catch-all listener's route cannot take a host a narrower one serves.
                    if host
                        .as_deref()
                        .is_some_and(|h| self.narrower_listener(h, t.port, t.hostname))
                    {
                        continue;
                    }
                    add(host, t.port);
                }
            }
        }
        if placement.is_empty() {
            return None;
        }
        // On every port hitless listens on: no port condition to write.
        let mut all: Vec<u16> = self.ports.iter().map(|p| p.port).collect();
        all.sort_unstable();
        all.dedup();
        for (_, ports) in &mut placement {
            ports.sort_unstable();
            if *ports == all {
                ports.clear();
            }
        }
        Some(placement)
    }
}

/// How specific a listener's hostname is (Gateway API's order): none, then wildcards (longer
/// first), then exact names.
fn specificity(hostname: Option<&str>) -> (u8, usize) {
    match hostname {
        None => (0, 0),
        Some(h) if h.starts_with("*.") => (1, h.len()),
        Some(h) => (2, h.len()),
    }
}

/// Whether `name` (a host or a `*.` wildcard) and `pattern` (a listener's hostname) share
/// hosts; the narrower of the two when they do.
fn meet(name: &str, pattern: &str) -> Option<String> {
    // `*.example.com` covers `a.example.com` and `a.b.example.com`, not `example.com`.
    let covers = |wild: &str, host: &str| {
        wild.strip_prefix("*.").is_some_and(|suffix| {
            host.strip_suffix(suffix)
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty())
        })
    };
    let (name, pattern) = (name.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    if name == pattern || covers(&pattern, &name) {
        Some(name)
    } else if covers(&name, &pattern) {
        Some(pattern)
    } else {
        None
    }
}

/// The hostnames a route shares with a listener's `hostname` (`None`: any host).
fn shared_hosts(route: &Value, listener_host: Option<&str>) -> Hosts {
    let Some(pattern) = listener_host else {
        return Hosts::AsWritten;
    };
    let names: Vec<&str> = route
        .pointer("/spec/hostnames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if names.is_empty() {
        return Hosts::Only(vec![pattern.to_ascii_lowercase()]);
    }
    Hosts::Only(names.iter().filter_map(|n| meet(n, pattern)).collect())
}

/// Where a route comes from: its namespace, and that namespace's labels (`None`: namespaces
/// are not known; `Some(None)`: no such namespace listed).
struct From<'a> {
    namespace: &'a str,
    labels: Option<Option<&'a Value>>,
}

/// Whether a label selector (`matchLabels`, `matchExpressions`) selects `labels`; `Err` names
/// what is invalid in it, as the API server's validation would. An empty selector (`{}`)
/// selects every namespace; a missing one selects none (Kubernetes' rules).
fn selects(selector: Option<&Value>, labels: Option<&Value>) -> Result<bool, String> {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Err("from: Selector needs a selector".into());
    };
    if let Some(wanted) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in wanted {
            if label(key) != value.as_str() {
                return Ok(false);
            }
        }
    }
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in expressions {
        let Some(key) = text(e, "/key").filter(|k| !k.is_empty()) else {
            return Err("a matchExpressions entry has no key".into());
        };
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let operator = text(e, "/operator").unwrap_or_default();
        let needs_values = matches!(operator, "In" | "NotIn");
        if needs_values == values.is_empty() {
            return Err(format!(
                "matchExpressions {key:?}: {operator} {}",
                if needs_values {
                    "needs values"
                } else {
                    "takes no values"
                }
            ));
        }
        let have = label(key);
        let ok = match operator {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => return Err(format!("label selector operator {other:?} is not valid")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

impl<'a> Ours<'a> {
    /// Which listeners of `gateway` take `route`, of `kind` from `from`, and for which
    /// hostnames: those `reference` (a `parentRefs` entry) names by `sectionName` and `port`,
    /// or all when it names neither.
    fn allows(
        &self,
        gateway: &'a Value,
        reference: &Value,
        route: &Value,
        from: &From<'_>,
        kind: &str,
    ) -> Result<Vec<Taken<'a>>, (&'static str, String)> {
        let namespace = from.namespace;
        let listeners = gateway
            .pointer("/spec/listeners")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let section = text(reference, "/sectionName");
        let port = reference.get("port").and_then(Value::as_u64);
        let named: Vec<&Value> = listeners
            .iter()
            .filter(|l| section.is_none_or(|s| text(l, "/name") == Some(s)))
            .filter(|l| port.is_none_or(|p| l.get("port").and_then(Value::as_u64) == Some(p)))
            .collect();
        if named.is_empty() {
            let mut wanted = Vec::new();
            if let Some(s) = section {
                wanted.push(format!("named {s:?}"));
            }
            if let Some(p) = port {
                wanted.push(format!("on port {p}"));
            }
            return Err((
                "NoMatchingParent",
                format!("the Gateway has no listener {}", wanted.join(" ")),
            ));
        }
        let gateway_namespace = text(gateway, "/metadata/namespace").unwrap_or_default();
        let mut why = String::new();
        let mut taken: Vec<Taken<'a>> = Vec::new();
        for listener in named {
            if let Err((_, message)) = self.fit(listener) {
                // Its status says so.
                if why.is_empty() {
                    why = format!("the listener is not served: {message}");
                }
                continue;
            }
            let port = listener
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_default();
            let name = text(listener, "/name").unwrap_or_default();
            let allowed_from = text(listener, "/allowedRoutes/namespaces/from").unwrap_or("Same");
            let namespace_ok = match allowed_from {
                "All" => true,
                "Same" => namespace == gateway_namespace,
                "Selector" => {
                    let selector = listener.pointer("/allowedRoutes/namespaces/selector");
                    match from.labels {
                        None => {
                            why = format!(
                            "allowedRoutes.namespaces.from: Selector, and the labels of namespace {namespace} are not known (hitless needs list and watch on namespaces)"
                        );
                            false
                        }
                        Some(None) => {
                            // Not listed (yet): an exclusion (`NotIn`, `DoesNotExist`) must not
                            // let it in before its labels are known.
                            why = format!(
                            "allowedRoutes.namespaces.from: Selector, and namespace {namespace} is not known yet"
                        );
                            false
                        }
                        Some(labels) => match selects(selector, labels) {
                            Ok(true) => true,
                            Ok(false) => {
                                why = format!(
                                "the listener's namespace selector does not select namespace {namespace}"
                            );
                                false
                            }
                            Err(invalid) => {
                                why = format!("allowedRoutes.namespaces.selector: {invalid}");
                                false
                            }
                        },
                    }
                }
                other => {
                    why = format!(
                    "allowedRoutes.namespaces.from: {other} is not valid (Same, All or Selector)"
                );
                    false
                }
            };
            let kinds = listener
                .pointer("/allowedRoutes/kinds")
                .and_then(Value::as_array)
                .filter(|k| !k.is_empty());
            let kind_ok = kinds.is_none_or(|k| k.iter().any(|k| text(k, "/kind") == Some(kind)));
            if namespace_ok && kind_ok {
                match shared_hosts(route, text(listener, "/hostname")) {
                    Hosts::Only(shared) if shared.is_empty() => {
                        if why.is_empty() {
                            why =
                                "no hostname of the route is within the listener's hostname".into();
                        }
                    }
                    hosts => taken.push(Taken {
                        listener: name,
                        port,
                        hostname: text(listener, "/hostname"),
                        hosts,
                    }),
                }
                continue;
            }
            if why.is_empty() {
                why = if namespace_ok {
                    format!("the listener does not allow {kind}")
                } else {
                    format!("the listener allows routes from namespace {gateway_namespace} only")
                };
            }
        }
        if !taken.is_empty() {
            return Ok(taken);
        }
        if why.starts_with("no hostname") {
            return Err(("NoMatchingListenerHostname", why));
        }
        Err(("NotAllowedByListeners", why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours<'a>(gateways: &'a [Value], class: &'a Value) -> Ours<'a> {
        let ports = vec![
            Port {
                port: 80,
                tls: false,
            },
            Port {
                port: 443,
                tls: true,
            },
        ];
        Ours::new([class], gateways, None, ports)
    }

    #[test]
    fn routes_are_placed_on_the_ports_and_hosts_of_their_listeners() {
        let class =
            json!({"metadata": {"name": "hitless"}, "spec": {"controllerName": CONTROLLER}});
        let gateway = json!({"metadata": {"name": "edge", "namespace": "shop"},
            "spec": {"gatewayClassName": "hitless", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS"},
                {"name": "secure", "port": 80, "protocol": "HTTP", "hostname": "secure.example.com"},
                {"name": "passthrough", "port": 443, "protocol": "HTTPS", "tls": {"mode": "Passthrough"}},
                {"name": "alt", "port": 8080, "protocol": "HTTP"}]}});
        let gateways = [gateway];
        let ours = ours(&gateways, &class);
        let route = |parent: Value, hostnames: Value| {
            json!({"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "shop"},
                "spec": {"parentRefs": [parent], "hostnames": hostnames}})
        };
        let host = |h: &str, ports: &[u16]| (Some(h.to_string()), ports.to_vec());
        // Every port: no condition; names folded to lower case (one route per name).
        let all = route(json!({"name": "edge"}), json!(["Shop.example.com"]));
        assert_eq!(
            ours.placement(&all),
            Some(vec![host("shop.example.com", &[])])
        );
        // `port` in the parent reference picks the listeners on it.
        let tls_only = route(
            json!({"name": "edge", "port": 443}),
            json!(["shop.example.com"]),
        );
        assert_eq!(
            ours.placement(&tls_only),
            Some(vec![host("shop.example.com", &[443])])
        );
        let nowhere = route(json!({"name": "edge", "port": 8443}), json!([]));
        assert_eq!(ours.placement(&nowhere), None);
        let why = ours.parents(&nowhere).remove(0).allowed.unwrap_err();
        assert_eq!(why.0, "NoMatchingParent");
        // A host a narrower listener serves on a port is that listener's there: the catch-all
        // listener's route gets it on 443 only.
        let claims = route(
            json!({"name": "edge", "sectionName": "http"}),
            json!(["secure.example.com"]),
        );
        assert_eq!(ours.placement(&claims), None);
        let both = route(json!({"name": "edge"}), json!(["secure.example.com"]));
        assert_eq!(
            ours.placement(&both),
            Some(vec![host("secure.example.com", &[])]),
            "the narrower listener takes it on 80, the catch-all on 443: every port"
        );
        // Listeners hitless cannot serve: another port, TLS passthrough.
        let alt = ours.fit(&gateways[0]["spec"]["listeners"][4]).unwrap_err();
        assert_eq!(alt.0, "PortUnavailable");
        let passthrough = ours.fit(&gateways[0]["spec"]["listeners"][3]).unwrap_err();
        assert_eq!(passthrough.0, "UnsupportedValue");
    }

    #[test]
    fn label_selectors_select_namespaces_as_kubernetes_does() {
        let labels = json!({"team": "shop", "env": "prod"});
        let sel = |v: Value| selects(Some(&v), Some(&labels));
        assert_eq!(sel(json!({})), Ok(true), "an empty selector selects all");
        assert!(selects(None, Some(&labels)).is_err(), "a missing one: none");
        assert!(selects(Some(&Value::Null), Some(&labels)).is_err());
        assert_eq!(sel(json!({"matchLabels": {"team": "shop"}})), Ok(true));
        assert_eq!(
            sel(json!({"matchLabels": {"team": "shop", "env": "dev"}})),
            Ok(false)
        );
        let expr = |op: &str, values: Value| {
            sel(json!({"matchExpressions": [{"key": "env", "operator": op, "values": values}]}))
        };
        assert_eq!(expr("In", json!(["prod", "staging"])), Ok(true));
        assert_eq!(expr("In", json!(["dev"])), Ok(false));
        assert_eq!(expr("NotIn", json!(["dev"])), Ok(true));
        assert_eq!(expr("NotIn", json!(["prod"])), Ok(false));
        assert_eq!(expr("Exists", json!([])), Ok(true));
        assert_eq!(expr("DoesNotExist", json!([])), Ok(false));
        assert!(expr("Matches", json!(["x"])).is_err());
        // What the API server would refuse is refused, never read as "everything".
        assert!(expr("NotIn", json!([])).is_err(), "NotIn without values");
        assert!(expr("In", json!([])).is_err());
        assert!(expr("Exists", json!(["prod"])).is_err());
        assert!(sel(json!({"matchExpressions": [{"operator": "Exists"}]})).is_err());
        // A namespace without labels: only what needs no label selects it.
        assert_eq!(
            selects(Some(&json!({"matchLabels": {"team": "shop"}})), None),
            Ok(false)
        );
        assert_eq!(
            selects(
                Some(&json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]})),
                None
            ),
            Ok(true)
        );
    }
}
