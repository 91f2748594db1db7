//! ReferenceGrants (`gateway.networking.k8s.io/v1beta1`): Gateway API's consent for a reference
//! into another namespace. A route's `backendRefs` to a Service, or a Gateway's
//! `certificateRefs` to a Secret, in another namespace hold only when a ReferenceGrant *in that
//! namespace* lists the referring kind and namespace in `from` and the target's kind (and name,
//! when it gives one) in `to`; without one the reference is refused (`RefNotPermitted`), so no
//! route can expose another team's Service and no Gateway can serve another team's key.

use serde_json::Value;

use super::gateway::GROUP;

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .pointer(&format!("/spec/{key}"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// What refers: a Gateway API kind (`HTTPRoute`, `GRPCRoute`, `Gateway`) in a namespace.
#[derive(Debug, Clone, Copy)]
pub struct From<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// What is referred to: a core kind (`Service`, `Secret`) by namespace and name.
#[derive(Debug, Clone, Copy)]
pub struct To<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The ReferenceGrants known.
#[derive(Default)]
pub struct Grants<'a> {
    grants: Vec<&'a Value>,
}

impl<'a> Grants<'a> {
    pub fn new(grants: impl IntoIterator<Item = &'a Value>) -> Grants<'a> {
        Grants {
            grants: grants
                .into_iter()
                .filter(|g| text(g, "kind") == Some("ReferenceGrant"))
                .collect(),
        }
    }

    /// Whether `from` may refer to `to` (always within one namespace).
    pub fn permit(&self, from: From<'_>, to: To<'_>) -> bool {
        if from.namespace == to.namespace {
            return true;
        }
        self.grants.iter().any(|g| {
            let namespace = g.pointer("/metadata/namespace").and_then(Value::as_str);
            namespace == Some(to.namespace)
                && list(g, "from").iter().any(|f| {
                    text(f, "group") == Some(GROUP)
                        && text(f, "kind") == Some(from.kind)
                        && text(f, "namespace") == Some(from.namespace)
                })
                && list(g, "to").iter().any(|t| {
                    // The core group is written "" (a missing group is not valid: not a match).
                    text(t, "group") == Some("")
                        && text(t, "kind") == Some(to.kind)
                        && text(t, "name").is_none_or(|n| n == to.name)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_grant_in_the_target_namespace_permits_what_it_lists() {
        let grant = json!({"kind": "ReferenceGrant", "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "metadata": {"name": "routes-to-db", "namespace": "data"},
            "spec": {"from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "shop"}],
                     "to": [{"group": "", "kind": "Service", "name": "catalog"}]}});
        let grants = Grants::new([&grant]);
        let route = From {
            kind: "HTTPRoute",
            namespace: "shop",
        };
        let to = |kind, namespace, name| To {
            kind,
            namespace,
            name,
        };
        assert!(grants.permit(route, to("Service", "data", "catalog")));
        assert!(
            grants.permit(route, to("Service", "shop", "any")),
            "same namespace"
        );
        assert!(
            !grants.permit(route, to("Service", "data", "users")),
            "another name"
        );
        assert!(
            !grants.permit(route, to("Secret", "data", "catalog")),
            "another kind"
        );
        assert!(
            !grants.permit(route, to("Service", "infra", "catalog")),
            "grant elsewhere"
        );
        let other = From {
            kind: "GRPCRoute",
            namespace: "shop",
        };
        assert!(
            !grants.permit(other, to("Service", "data", "catalog")),
            "another kind from"
        );
        let stranger = From {
            kind: "HTTPRoute",
            namespace: "web",
        };
        assert!(!grants.permit(stranger, to("Service", "data", "catalog")));
        assert!(!Grants::default().permit(route, to("Service", "data", "catalog")));
    }
}
