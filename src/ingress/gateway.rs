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
    /// The hostnames the Gateway takes the route for; `Err(reason, message)`: a Gateway of ours
    /// that does not take this route.
    pub allowed: Result<Hosts, (&'static str, String)>,
}

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
}

impl<'a> Ours<'a> {
    pub fn new(
        classes: impl IntoIterator<Item = &'a Value>,
        gateways: impl IntoIterator<Item = &'a Value>,
        namespaces: Option<BTreeMap<&'a str, &'a Value>>,
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
                        allows(g, text(r, "/sectionName"), route, &from, kind)
                    }
                    None => Ok(Hosts::AsWritten),
                };
                Parent {
                    reference: r,
                    gateway,
                    allowed,
                }
            })
            .collect()
    }

    /// The hostnames the Gateways of ours that take `route` serve it for; `None`: none takes it.
    pub fn attached(&self, route: &'a Value) -> Option<Hosts> {
        let mut only: Vec<String> = Vec::new();
        let mut taken = false;
        for parent in self.parents(route) {
            match (parent.gateway, parent.allowed) {
                (Some(_), Ok(Hosts::AsWritten)) => return Some(Hosts::AsWritten),
                (Some(_), Ok(Hosts::Only(hosts))) => {
                    taken = true;
                    for h in hosts {
                        if !only.contains(&h) {
                            only.push(h);
                        }
                    }
                }
                _ => {}
            }
        }
        taken.then_some(Hosts::Only(only))
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

/// Whether a listener of `gateway` (the one named `section`, or any) takes `route`, of `kind`
/// from `from`, and for which hostnames.
fn allows(
    gateway: &Value,
    section: Option<&str>,
    route: &Value,
    from: &From<'_>,
    kind: &str,
) -> Result<Hosts, (&'static str, String)> {
    let namespace = from.namespace;
    let listeners = gateway
        .pointer("/spec/listeners")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let named: Vec<&Value> = listeners
        .iter()
        .filter(|l| section.is_none_or(|s| text(l, "/name") == Some(s)))
        .collect();
    if named.is_empty() {
        return Err((
            "NoMatchingParent",
            format!("the Gateway has no listener {:?}", section.unwrap_or("")),
        ));
    }
    let gateway_namespace = text(gateway, "/metadata/namespace").unwrap_or_default();
    let mut why = String::new();
    let mut hosts: Vec<String> = Vec::new();
    let mut taken = false;
    for listener in named {
        if !matches!(text(listener, "/protocol"), Some("HTTP" | "HTTPS")) {
            // TCP, TLS passthrough, UDP: not hitless's (its status says so).
            if why.is_empty() {
                why = "the listener's protocol is not HTTP or HTTPS".into();
            }
            continue;
        }
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
                Hosts::AsWritten => return Ok(Hosts::AsWritten),
                Hosts::Only(shared) if shared.is_empty() => {
                    if why.is_empty() {
                        why = "no hostname of the route is within the listener's hostname".into();
                    }
                    continue;
                }
                Hosts::Only(shared) => {
                    taken = true;
                    for h in shared {
                        if !hosts.contains(&h) {
                            hosts.push(h);
                        }
                    }
                    continue;
                }
            }
        }
        if why.is_empty() {
            why = if namespace_ok {
                format!("the listener does not allow {kind}")
            } else {
                format!("the listener allows routes from namespace {gateway_namespace} only")
            };
        }
    }
    if taken {
        return Ok(Hosts::Only(hosts));
    }
    if why.starts_with("no hostname") {
        return Err(("NoMatchingListenerHostname", why));
    }
    Err(("NotAllowedByListeners", why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
