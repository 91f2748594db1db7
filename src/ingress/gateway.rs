//! Which Gateway API objects are hitless's: a GatewayClass whose `controllerName` is
//! [`CONTROLLER`], the Gateways of such a class, and the HTTPRoutes and GRPCRoutes whose
//! `parentRefs` name one of those Gateways and that the Gateway's listeners allow
//! (`allowedRoutes`: the route's namespace, `Same` by default or `All`, and its kind).
//! `Selector` namespaces are not read: such a listener allows no route, and says so.

use std::collections::BTreeSet;

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
    /// `Err(reason, message)`: a Gateway of ours that does not take this route.
    pub allowed: Result<(), (&'static str, String)>,
}

/// Our GatewayClasses and their Gateways.
pub struct Ours<'a> {
    pub classes: BTreeSet<String>,
    pub gateways: Vec<&'a Value>,
}

impl<'a> Ours<'a> {
    pub fn new(
        classes: impl IntoIterator<Item = &'a Value>,
        gateways: impl IntoIterator<Item = &'a Value>,
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
        Ours { classes, gateways }
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
                    Some(g) => allows(g, text(r, "/sectionName"), namespace, kind),
                    None => Ok(()),
                };
                Parent {
                    reference: r,
                    gateway,
                    allowed,
                }
            })
            .collect()
    }

    /// Whether some Gateway of ours takes `route`.
    pub fn attached(&self, route: &'a Value) -> bool {
        self.parents(route)
            .iter()
            .any(|p| p.gateway.is_some() && p.allowed.is_ok())
    }
}

/// Whether a listener of `gateway` (the one named `section`, or any) takes a route of `kind`
/// from `namespace`.
fn allows(
    gateway: &Value,
    section: Option<&str>,
    namespace: &str,
    kind: &str,
) -> Result<(), (&'static str, String)> {
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
    for listener in named {
        let from = text(listener, "/allowedRoutes/namespaces/from").unwrap_or("Same");
        let namespace_ok = match from {
            "All" => true,
            "Same" => namespace == gateway_namespace,
            other => {
                why = format!("allowedRoutes.namespaces.from: {other} is not supported by hitless (Same or All)");
                false
            }
        };
        let kinds = listener
            .pointer("/allowedRoutes/kinds")
            .and_then(Value::as_array)
            .filter(|k| !k.is_empty());
        let kind_ok = kinds.is_none_or(|k| k.iter().any(|k| text(k, "/kind") == Some(kind)));
        if namespace_ok && kind_ok {
            return Ok(());
        }
        if why.is_empty() {
            why = if namespace_ok {
                format!("the listener does not allow {kind}")
            } else {
                format!("the listener allows routes from namespace {gateway_namespace} only")
            };
        }
    }
    Err(("NotAllowedByListeners", why))
}
