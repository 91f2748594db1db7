//! What hitless did with each object, written where `kubectl get` and `kubectl describe` show
//! it (by the leader only, `leader.rs`):
//! - an Ingress applied: `status.loadBalancer.ingress` = the publish address;
//! - an HTTPRoute or GRPCRoute, for each parent Gateway of ours: `Accepted` (false with
//!   `NotAllowedByListeners`, `NoMatchingParent` or `UnsupportedValue` and the reason) and
//!   `ResolvedRefs` (false with `BackendNotFound` when a Service is missing);
//! - a Gateway of ours: `Accepted` and `Programmed` (`ListenersNotValid` when a listener
//!   cannot be served), its listeners' conditions (a protocol other than HTTP and HTTPS:
//!   `UnsupportedProtocol`; a port where hitless has no listener of that kind:
//!   `PortUnavailable`; `gateway::Ours::fit` decides) and the routes each listener takes, the
//!   publish address; a GatewayClass of ours: `Accepted`;
//! - an Event per setting that differs, is unsupported or refused, and per object rejected,
//!   once per process (the same finding is not repeated at every change).
//!
//! Each status is patched only when it differs from what the object shows (conditions compared
//! without their times), so a watch event of our own patch changes nothing, and two leaders in
//! a row write the same thing.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::{json, Value};

use super::cluster::{object_id, Built, Cluster, Kind};
use super::gateway::{self, Ours};
use super::grants::{self, Grants};
use super::Outcome;

/// Writes statuses and Events.
pub struct Writer {
    client: Client,
    publish_address: Option<String>,
    recorder: Recorder,
    /// Findings already published as Events.
    published: HashSet<String>,
}

impl Writer {
    pub fn new(client: Client, publish_address: Option<String>) -> Writer {
        let reporter = Reporter {
            controller: "hitless".into(),
            instance: Some(super::leader::identity()),
        };
        Writer {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            publish_address,
            published: HashSet::new(),
        }
    }

    /// Another replica writes now: what this one published is its to repeat if it leads again.
    pub fn step_down(&mut self) {
        self.published.clear();
    }

    /// Write everything `built` says about the cluster's objects.
    pub(super) async fn write(&mut self, cluster: &Cluster, built: &Built) {
        self.ingresses(built).await;
        self.gateway_api(cluster, built).await;
        self.events(built).await;
    }

    async fn ingresses(&self, built: &Built) {
        let Some(address) = &self.publish_address else {
            return;
        };
        let wanted = json!([ingress_address(address)]);
        for ingress in built.applied.values().filter(|v| v["kind"] == "Ingress") {
            if ingress.pointer("/status/loadBalancer/ingress") == Some(&wanted) {
                continue;
            }
            let Some((namespace, name)) = namespace_name(ingress) else {
                continue;
            };
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({ "status": { "loadBalancer": { "ingress": wanted } } });
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(ingress = %format!("{namespace}/{name}"), error = %e, "ingress controller: cannot write the Ingress status");
            }
        }
    }

    async fn gateway_api(&self, cluster: &Cluster, built: &Built) {
        let ours = Ours::new(
            cluster.of(Kind::GatewayClass),
            cluster.of(Kind::Gateway),
            cluster.namespace_labels(),
            gateway::Port::of(&built.config),
        );
        for class in cluster.of(Kind::GatewayClass) {
            let Some(name) = class.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            if !ours.classes.contains(name) {
                continue;
            }
            let conditions = vec![condition(
                class,
                "Accepted",
                true,
                "Accepted",
                "hitless serves this class",
            )];
            let status = json!({ "conditions": merge_times(class.pointer("/status/conditions"), conditions) });
            self.patch(Kind::GatewayClass, class, status).await;
        }
        let routes: Vec<&Value> = cluster
            .of(Kind::HttpRoute)
            .chain(cluster.of(Kind::GrpcRoute))
            .collect();
        let grants = Grants::new(cluster.of(Kind::ReferenceGrant));
        for route in &routes {
            let parents = ours.parents(route);
            if parents.iter().all(|p| p.gateway.is_none()) {
                // No longer on a Gateway of ours: take our entries out of its status.
                let all = route.pointer("/status/parents").and_then(Value::as_array);
                let others: Vec<Value> = all
                    .into_iter()
                    .flatten()
                    .filter(|p| p["controllerName"] != gateway::CONTROLLER)
                    .cloned()
                    .collect();
                if all.is_some_and(|a| a.len() != others.len()) {
                    self.patch(kind_of(route), route, json!({ "parents": others }))
                        .await;
                }
                continue;
            }
            let id = object_id(route);
            let resolved = unresolved_backend(cluster, &grants, route);
            let mut entries: Vec<Value> = route
                .pointer("/status/parents")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| p["controllerName"] != gateway::CONTROLLER)
                .cloned()
                .collect();
            for parent in parents.iter().filter(|p| p.gateway.is_some()) {
                let accepted = match (&parent.allowed, built.rejected.get(&id)) {
                    (Err((reason, message)), _) => {
                        condition(route, "Accepted", false, reason, message)
                    }
                    (Ok(_), Some((_, why))) => {
                        condition(route, "Accepted", false, "UnsupportedValue", why)
                    }
                    (Ok(_), None) => {
                        condition(route, "Accepted", true, "Accepted", "routes applied")
                    }
                };
                let refs = match &resolved {
                    Some((reason, missing)) => {
                        condition(route, "ResolvedRefs", false, reason, missing)
                    }
                    None => condition(
                        route,
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "every backend Service exists",
                    ),
                };
                let previous = route
                    .pointer("/status/parents")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter()
                            .find(|p| p.get("parentRef") == Some(parent.reference))
                    })
                    .and_then(|p| p.get("conditions"));
                entries.push(json!({
                    "parentRef": parent.reference,
                    "controllerName": gateway::CONTROLLER,
                    "conditions": merge_times(previous, vec![accepted, refs]),
                }));
            }
            self.patch(kind_of(route), route, json!({ "parents": entries }))
                .await;
        }
        for gateway in &ours.gateways {
            let status = self.gateway_status(gateway, &ours, &routes, &grants, built);
            self.patch(Kind::Gateway, gateway, status).await;
        }
    }

    fn gateway_status(
        &self,
        gateway: &Value,
        ours: &Ours<'_>,
        routes: &[&Value],
        grants: &Grants<'_>,
        built: &Built,
    ) -> Value {
        let id = object_id(gateway);
        let listeners = gateway
            .pointer("/spec/listeners")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let previous = gateway
            .pointer("/status/listeners")
            .and_then(Value::as_array);
        // The conditions a listener shows now (their transition times are kept).
        let old_conditions = |name: &str| {
            previous
                .and_then(|ls| {
                    ls.iter()
                        .find(|l| l.get("name").and_then(Value::as_str) == Some(name))
                })
                .and_then(|l| l.get("conditions"))
        };
        let mut statuses = Vec::new();
        for listener in listeners {
            let name = listener
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Err((reason, message)) = ours.fit(listener) {
                // Routes never attach here (`Ours::allows` skips such listeners).
                let kinds = if reason == "UnsupportedProtocol" {
                    json!([])
                } else {
                    supported_kinds()
                };
                let old = old_conditions(name);
                statuses.push(json!({
                    "name": name,
                    "attachedRoutes": 0,
                    "supportedKinds": kinds,
                    "conditions": merge_times(old, vec![
                        condition(gateway, "Accepted", false, reason, &message),
                        condition(gateway, "Programmed", false, "Invalid", &message),
                        condition(gateway, "ResolvedRefs", true, "ResolvedRefs", "references resolved"),
                    ]),
                }));
                continue;
            }
            let programmed = condition(
                gateway,
                "Programmed",
                true,
                "Programmed",
                "served by hitless's listener on this port",
            );
            // Routes applied that this very listener takes.
            let attached = routes
                .iter()
                .filter(|r| built.applied.contains_key(&object_id(r)))
                .filter(|r| {
                    ours.parents(r).iter().any(|p| {
                        p.gateway.is_some_and(|g| object_id(g) == id)
                            && p.allowed
                                .as_ref()
                                .is_ok_and(|taken| taken.iter().any(|t| t.listener == name))
                    })
                })
                .count();
            // A certificate this listener names that could not be used (reported per Secret).
            let own = gateway
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let bad_certificate = listener
                .pointer("/tls/certificateRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|r| {
                    let secret = r.get("name").and_then(Value::as_str)?;
                    let ns = r.get("namespace").and_then(Value::as_str).unwrap_or(own);
                    let from = grants::From {
                        kind: "Gateway",
                        namespace: own,
                    };
                    let to = grants::To {
                        kind: "Secret",
                        namespace: ns,
                        name: secret,
                    };
                    let source = format!("Secret/{ns}/{secret}");
                    let note = built
                        .notes
                        .iter()
                        .find(|n| n.object == id && n.source == source)?;
                    let reason = if grants.permit(from, to) {
                        "InvalidCertificateRef"
                    } else {
                        "RefNotPermitted"
                    };
                    Some((reason, note.message.as_str()))
                });
            let refs = match bad_certificate {
                Some((reason, message)) => {
                    condition(gateway, "ResolvedRefs", false, reason, message)
                }
                None => condition(
                    gateway,
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "references resolved",
                ),
            };
            let old = old_conditions(name);
            statuses.push(json!({
                "name": name,
                "attachedRoutes": attached,
                "supportedKinds": supported_kinds(),
                "conditions": merge_times(old, vec![
                    condition(gateway, "Accepted", true, "Accepted", "listener accepted"),
                    programmed,
                    refs,
                ]),
            }));
        }
        // Gateway API: `ListenersNotValid` when some listener cannot be served (still
        // accepted while one can).
        let served = listeners.iter().filter(|l| ours.fit(l).is_ok()).count();
        let conditions = if served == listeners.len() {
            vec![
                condition(
                    gateway,
                    "Accepted",
                    true,
                    "Accepted",
                    "hitless serves this Gateway",
                ),
                condition(
                    gateway,
                    "Programmed",
                    true,
                    "Programmed",
                    "routes applied to hitless's listeners",
                ),
            ]
        } else {
            let message = format!(
                "{} of {} listeners cannot be served by hitless (see their conditions)",
                listeners.len().saturating_sub(served),
                listeners.len()
            );
            vec![
                condition(
                    gateway,
                    "Accepted",
                    served > 0,
                    "ListenersNotValid",
                    &message,
                ),
                if served > 0 {
                    condition(
                        gateway,
                        "Programmed",
                        true,
                        "Programmed",
                        "routes applied to hitless's listeners that can serve them",
                    )
                } else {
                    condition(gateway, "Programmed", false, "Invalid", &message)
                },
            ]
        };
        let mut status = json!({
            "conditions": merge_times(gateway.pointer("/status/conditions"), conditions),
            "listeners": statuses,
        });
        if let Some(address) = &self.publish_address {
            status["addresses"] = json!([gateway_address(address)]);
        }
        status
    }

    /// Merge-patch `status` into `object`'s status subresource, unless it shows that already.
    async fn patch(&self, kind: Kind, object: &Value, status: Value) {
        if same_status(object.get("status"), &status) {
            return;
        }
        let Some(resource) = kind.resource() else {
            return;
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let api: Api<DynamicObject> = match object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let patch = json!({ "status": status });
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(object = %object_id(object), error = %e, "ingress controller: cannot write the status");
        }
    }

    /// An Event per finding not published yet.
    async fn events(&mut self, built: &Built) {
        let mut findings: Vec<(&Value, EventType, &'static str, String)> = Vec::new();
        for note in built.notes.iter().filter(|n| n.outcome != Outcome::Maps) {
            let Some(object) = built
                .applied
                .get(&note.object)
                .or_else(|| built.rejected.get(&note.object).map(|(v, _)| v))
            else {
                continue;
            };
            let (kind, reason) = match note.outcome {
                Outcome::Differs => (EventType::Normal, "SettingDiffers"),
                Outcome::Unsupported => (EventType::Warning, "SettingUnsupported"),
                Outcome::Refused => (EventType::Warning, "SettingRefused"),
                Outcome::Rejected | Outcome::Maps => (EventType::Warning, "Rejected"),
            };
            findings.push((
                object,
                kind,
                reason,
                format!("{}: {}", note.source, note.message),
            ));
        }
        for (object, why) in built.rejected.values() {
            findings.push((
                object,
                EventType::Warning,
                "Rejected",
                format!("not applied: {why}"),
            ));
        }
        // Only the findings of now are remembered: the set stays as large as the cluster's
        // current findings, and one that comes back is published again.
        let current: HashSet<String> = findings
            .iter()
            .map(|(object, _, reason, message)| format!("{}|{reason}|{message}", object_id(object)))
            .collect();
        self.published.retain(|k| current.contains(k));
        for (object, type_, reason, message) in findings {
            let key = format!("{}|{reason}|{message}", object_id(object));
            if self.published.contains(&key) {
                continue;
            }
            let event = Event {
                type_,
                reason: reason.into(),
                // The API server caps an Event's note at 1 KiB.
                note: Some(message.chars().take(1000).collect()),
                action: "Translate".into(),
                secondary: None,
            };
            match self.recorder.publish(&event, &reference(object)).await {
                Ok(()) => {
                    self.published.insert(key);
                }
                Err(e) => {
                    tracing::warn!(object = %object_id(object), error = %e, "ingress controller: cannot publish an Event");
                }
            }
        }
    }
}

fn kind_of(route: &Value) -> Kind {
    if route["kind"] == "GRPCRoute" {
        Kind::GrpcRoute
    } else {
        Kind::HttpRoute
    }
}

/// The first backendRef of `route` hitless cannot use, with the reason's code and words.
fn unresolved_backend(
    cluster: &Cluster,
    grants: &Grants<'_>,
    route: &Value,
) -> Option<(&'static str, String)> {
    let namespace = route
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let rules = route.pointer("/spec/rules").and_then(Value::as_array);
    rules
        .into_iter()
        .flatten()
        .flat_map(|r| {
            r.get("backendRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find_map(|r| {
            let kind = r.get("kind").and_then(Value::as_str).unwrap_or("Service");
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            let ns = r
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace);
            if kind != "Service" {
                return Some((
                    "InvalidKind",
                    format!("{kind} {name}: hitless forwards to Services only"),
                ));
            }
            let from = grants::From {
                kind: route["kind"].as_str().unwrap_or("HTTPRoute"),
                namespace,
            };
            let to = grants::To {
                kind: "Service",
                namespace: ns,
                name,
            };
            if !grants.permit(from, to) {
                return Some((
                    "RefNotPermitted",
                    format!("Service {ns}/{name}: another namespace's Service needs a ReferenceGrant there (none found)"),
                ));
            }
            let key = format!("{ns}/{name}");
            cluster
                .get(Kind::Service, &key)
                .is_none()
                .then(|| ("BackendNotFound", format!("Service {key} not found")))
        })
}

fn condition(object: &Value, kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0),
        "lastTransitionTime": now(),
    })
}

/// `conditions` with the `lastTransitionTime` of `previous` kept where the status did not move.
fn merge_times(previous: Option<&Value>, mut conditions: Vec<Value>) -> Vec<Value> {
    let previous = previous.and_then(Value::as_array);
    for c in &mut conditions {
        let old = previous.and_then(|p| p.iter().find(|o| o.get("type") == c.get("type")));
        if let Some(old) = old.filter(|o| o.get("status") == c.get("status")) {
            if let Some(time) = old.get("lastTransitionTime") {
                c["lastTransitionTime"] = time.clone();
            }
        }
    }
    conditions
}

/// Whether `current` already shows every field of `wanted` (condition times aside).
fn same_status(current: Option<&Value>, wanted: &Value) -> bool {
    fn strip(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let Some(current) = current else {
        return false;
    };
    wanted
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| current.get(k).map(strip) == Some(strip(v)))
}

fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    // RFC 3339 to the second, as the API server writes times.
    format!("{:.0}", now)
}

fn is_ip(address: &str) -> bool {
    address.parse::<std::net::IpAddr>().is_ok()
}

/// An Ingress's `status.loadBalancer.ingress` entry.
fn ingress_address(address: &str) -> Value {
    if is_ip(address) {
        json!({ "ip": address })
    } else {
        json!({ "hostname": address })
    }
}

/// A Gateway's `status.addresses` entry.
fn gateway_address(address: &str) -> Value {
    let kind = if is_ip(address) {
        "IPAddress"
    } else {
        "Hostname"
    };
    json!({ "type": kind, "value": address })
}

fn namespace_name(object: &Value) -> Option<(&str, &str)> {
    Some((
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)?,
        object.pointer("/metadata/name").and_then(Value::as_str)?,
    ))
}

fn reference(object: &Value) -> ObjectReference {
    let text = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    ObjectReference {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        name: text("/metadata/name"),
        namespace: text("/metadata/namespace"),
        uid: text("/metadata/uid"),
        resource_version: text("/metadata/resourceVersion"),
        field_path: None,
    }
}

/// The route kinds an HTTP or HTTPS listener of hitless takes.
fn supported_kinds() -> Value {
    json!([
        {"group": gateway::GROUP, "kind": "HTTPRoute"},
        {"group": gateway::GROUP, "kind": "GRPCRoute"},
    ])
}
