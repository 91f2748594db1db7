//! Objects as one hitless config: Ingresses here (hosts, paths, default backends, ingress-nginx
//! annotations through `nginx.rs`, canaries merged into their main routes, HTTPS redirects),
//! Gateway API routes in `httproute.rs`, the routes sorted by `routes.rs`'s precedence.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::cluster::object_id;
use super::gateway::Placement;
use super::grants::Grants;
use super::nginx::{self, Settings};
use super::routes::{
    backend_entry, matched, matched_regex, note, route_base, route_value, BackendRef, Route,
};
use super::{Note, Outcome};
use crate::lint::{Inventory, Object};

/// A canary Ingress's path: merged into the main Ingress's route of the same match.
struct Canary {
    object: Object,
    field: String,
    /// Host and path as written (what a canary shares with its main Ingress).
    source: (Option<String>, String),
    backend: String,
    settings: Settings,
}

/// How the config being written serves TLS, which decides what an Ingress's `spec.tls` becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tls {
    /// `hitless import`: a file config, whose certificates its author names (the report says
    /// so); HTTPS redirects are written.
    Files,
    /// Controller mode: the Secrets are served by the base config's TLS listeners, when it
    /// has one (`true`); without, HTTPS redirects would send clients nowhere and are left out.
    Secrets(bool),
}

/// Where each Gateway API route of the controller is served (by object id: `HTTPRoute/ns/name`).
pub(super) type Placements = BTreeMap<String, Placement>;

/// What the config being written serves: how TLS is served, and where the controller places
/// Gateway API routes (a route without a placement: its hostnames as written, every listener).
pub(super) struct Serving<'a> {
    pub tls: Tls,
    pub placements: &'a Placements,
}

impl Serving<'_> {
    /// `hitless import`: certificate files, routes as written.
    pub fn files() -> Serving<'static> {
        static NONE: Placements = BTreeMap::new();
        Serving {
            tls: Tls::Files,
            placements: &NONE,
        }
    }
}

pub(super) fn config(objects: &[Object], serving: &Serving<'_>, notes: &mut Vec<Note>) -> Value {
    let tls = serving.tls;
    let inventory = Inventory::new(objects);
    let grants = Grants::new(objects.iter().map(|o| &o.value));
    let mut backends: BTreeMap<String, Value> = BTreeMap::new();
    let mut routes: Vec<Route> = Vec::new();
    let mut canaries: Vec<Canary> = Vec::new();
    for object in objects {
        if object.is(&["networking.k8s.io", "extensions"], &["Ingress"]) {
            let out = Out {
                backends: &mut backends,
                routes: &mut routes,
                canaries: &mut canaries,
            };
            ingress(object, &inventory, tls, out, notes);
        } else if object.is(&["gateway.networking.k8s.io"], &["HTTPRoute", "GRPCRoute"]) {
            let context = super::httproute::Context {
                placement: serving.placements.get(&object_id(&object.value)),
                inventory: &inventory,
                grants: &grants,
            };
            let out = super::httproute::Out {
                backends: &mut backends,
                routes: &mut routes,
            };
            super::httproute::translate(object, &context, out, notes);
        }
    }
    for (k, canary) in canaries.into_iter().enumerate() {
        merge_canary(canary, k, &mut routes, notes);
    }
    if routes.is_empty() {
        return json!({});
    }
    routes.sort_by_key(|r| r.rank);
    json!({
        "backends": backends,
        "routes": routes.into_iter().map(|r| r.value).collect::<Vec<_>>(),
    })
}

/// Where an Ingress's translation goes.
struct Out<'a> {
    backends: &'a mut BTreeMap<String, Value>,
    routes: &'a mut Vec<Route>,
    canaries: &'a mut Vec<Canary>,
}

fn ingress(object: &Object, inventory: &Inventory, tls: Tls, out: Out<'_>, notes: &mut Vec<Note>) {
    let Out {
        backends,
        routes,
        canaries,
    } = out;
    let settings = nginx::settings(object, notes);
    let spec = object.value.get("spec");
    if tls == Tls::Files && spec.and_then(|s| s.get("tls")).is_some() {
        note(
            notes,
            object,
            "spec.tls",
            Outcome::Differs,
            "TLS: hitless terminates TLS with certificate files (listeners[].tls.certificates): \
             mount the Secret and name its tls.crt and tls.key there"
                .into(),
        );
    }
    let base = route_base(object);
    if !settings.canary && tls != Tls::Secrets(false) {
        https_redirects(object, &settings, &base, routes);
    }
    // `spec.backend`: the default backend of v1beta1 Ingresses (a canary's has no main route).
    let default = spec
        .and_then(|s| s.get("defaultBackend").or_else(|| s.get("backend")))
        .filter(|_| !settings.canary);
    if let Some(default) = default {
        let field = "spec.defaultBackend";
        if let Some(backend) = ingress_backend(object, default, field, notes) {
            let name = backend_entry(object, inventory, &backend, &settings, backends, notes);
            let (matcher, _) = matched(None, false, "/");
            let value = route_value(format!("{base}-default"), matcher, name, &settings);
            // After every rule, whatever its host.
            routes.push(Route {
                rank: (3, 0, 0, 0, 0, 0),
                value,
                source: None,
            });
        }
    }
    let rules = spec
        .and_then(|s| s.get("rules"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let host = rule.get("host").and_then(Value::as_str);
        let paths = rule
            .get("http")
            .and_then(|h| h.get("paths"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (j, path) in paths.iter().enumerate() {
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            let Some(backend) = path
                .get("backend")
                .and_then(|b| ingress_backend(object, b, &format!("{field}.backend"), notes))
            else {
                continue;
            };
            let written = path.get("path").and_then(Value::as_str).unwrap_or("/");
            let kind = path
                .get("pathType")
                .and_then(Value::as_str)
                .unwrap_or("ImplementationSpecific");
            let mut pattern = None;
            let (text, rewrite, idiom) = match nginx::path_plan(&settings, written) {
                nginx::PathPlan::Literal { rewrite } => (written.to_string(), rewrite, false),
                nginx::PathPlan::Prefix { prefix, rewrite } => (prefix, Some(rewrite), true),
                nginx::PathPlan::Pattern(regex) => {
                    pattern = Some(regex);
                    (written.to_string(), None, true)
                }
                nginx::PathPlan::Regex(why) => {
                    note(
                        notes,
                        object,
                        &format!("{field}.path"),
                        Outcome::Unsupported,
                        why,
                    );
                    continue;
                }
            };
            let exact = kind == "Exact" && !idiom;
            let (matcher, rank) = match &pattern {
                None => matched(host, exact, &text),
                Some(regex) => match matched_regex(host, regex, written) {
                    Ok(found) => found,
                    Err(why) => {
                        note(
                            notes,
                            object,
                            &format!("{field}.path"),
                            Outcome::Unsupported,
                            format!("{written:?} (use-regex): a regular expression hitless cannot match ({why})"),
                        );
                        continue;
                    }
                },
            };
            if !exact && kind != "Prefix" && !idiom {
                note(
                    notes,
                    object,
                    &format!("{field}.pathType"),
                    Outcome::Differs,
                    format!(
                        "{kind}: read as a segment-wise prefix (nginx reads it as a prefix, \
                         or a regular expression with use-regex)"
                    ),
                );
            }
            let name = backend_entry(object, inventory, &backend, &settings, backends, notes);
            if settings.canary {
                canaries.push(Canary {
                    object: object.clone(),
                    field,
                    source: (host.map(str::to_string), written.to_string()),
                    backend: name,
                    settings: settings.clone(),
                });
                continue;
            }
            let mut value = route_value(format!("{base}-r{i}-p{j}"), matcher, name, &settings);
            if let (Some(rewrite), Some(route)) = (rewrite, value.as_object_mut()) {
                route.insert("rewrite".into(), rewrite);
            }
            let source = Some((host.map(str::to_string), written.to_string()));
            routes.push(Route {
                rank,
                value,
                source,
            });
        }
    }
    if let Some(root) = settings.app_root.as_ref().filter(|_| !settings.canary) {
        for (k, host) in ingress_hosts(object).into_iter().enumerate() {
            let (matcher, rank) = matched(host.as_deref(), true, "/");
            routes.push(Route {
                rank,
                value: json!({
                    "name": format!("{base}-app-root-h{k}"),
                    "match": matcher,
                    "redirect": {"path": root, "status": 302},
                }),
                source: None,
            });
        }
    }
}

/// Merge a canary path into the main route of the same match: a header condition becomes a
/// route of its own tried first, a weight turns the main route's backend into a split.
fn merge_canary(canary: Canary, k: usize, routes: &mut Vec<Route>, notes: &mut Vec<Note>) {
    let s = &canary.settings;
    let main = routes
        .iter_mut()
        .find(|r| r.source.as_ref() == Some(&canary.source) && r.value.get("backend").is_some());
    let Some(main) = main else {
        note(
            notes,
            &canary.object,
            &canary.field,
            Outcome::Unsupported,
            "a canary without a main Ingress of the same host and path: not imported".into(),
        );
        return;
    };
    let mut rank = main.rank;
    if let Some(header) = &s.canary_header {
        let value = s.canary_header_value.as_deref().unwrap_or("always");
        // The main route's match (and rewrite), with the header condition.
        let mut matcher = match main.value.get("match") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        matcher.insert("headers".into(), json!([{"name": header, "value": value}]));
        // Before the main route: more header conditions sort first.
        rank.4 = -1;
        let name = format!("{}-canary-{k}", route_base(&canary.object));
        let mut value = route_value(name, matcher, canary.backend.clone(), s);
        if let (Some(rewrite), Some(route)) = (main.value.get("rewrite"), value.as_object_mut()) {
            route.insert("rewrite".into(), rewrite.clone());
        }
        if s.canary_weight.is_some() {
            weighted(main, &canary);
        }
        routes.push(Route {
            rank,
            value,
            source: None,
        });
        return;
    }
    if s.canary_weight.is_none() {
        note(
            notes,
            &canary.object,
            &canary.field,
            Outcome::Unsupported,
            "a canary without canary-weight or canary-by-header takes no traffic in hitless".into(),
        );
        return;
    }
    weighted(main, &canary);
}

/// The main route's backend as a split with the canary's, by `canary-weight`.
fn weighted(main: &mut Route, canary: &Canary) {
    let s = &canary.settings;
    let total = s.canary_weight_total.unwrap_or(100);
    let weight = s.canary_weight.unwrap_or(0).min(total);
    let Some(route) = main.value.as_object_mut() else {
        return;
    };
    // The same Service port (and settings) as the main route: nothing to split.
    if route.get("backend") == Some(&Value::from(canary.backend.as_str())) {
        return;
    }
    let Some(backend) = route.remove("backend") else {
        return;
    };
    route.insert(
        "backends".into(),
        json!([
            {"name": backend, "weight": total.saturating_sub(weight)},
            {"name": canary.backend, "weight": weight},
        ]),
    );
}

/// The hosts of an Ingress's rules (`None`: a rule without a host), each once.
fn ingress_hosts(object: &Object) -> Vec<Option<String>> {
    let mut hosts: Vec<Option<String>> = Vec::new();
    let rules = object
        .value
        .pointer("/spec/rules")
        .and_then(Value::as_array);
    for rule in rules.into_iter().flatten() {
        let host = rule.get("host").and_then(Value::as_str).map(str::to_string);
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// ingress-nginx redirects plain-HTTP requests for the hosts in `spec.tls` to HTTPS (308)
/// unless `ssl-redirect: "false"`, and for every host with `force-ssl-redirect: "true"`: a
/// route per host, tried before the host's others, that only plain-HTTP requests match.
fn https_redirects(object: &Object, settings: &Settings, base: &str, routes: &mut Vec<Route>) {
    let mut hosts: Vec<Option<String>> = Vec::new();
    if settings.force_ssl_redirect {
        hosts = ingress_hosts(object);
    } else if settings.ssl_redirect != Some(false) {
        let tls = object.value.pointer("/spec/tls").and_then(Value::as_array);
        for entry in tls.into_iter().flatten() {
            let named = entry.get("hosts").and_then(Value::as_array);
            match named.filter(|h| !h.is_empty()) {
                Some(named) => hosts.extend(
                    named
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|h| Some(h.to_string())),
                ),
                // No hosts: the Ingress's own.
                None => hosts.extend(ingress_hosts(object)),
            }
        }
    }
    let mut seen: Vec<Option<String>> = Vec::new();
    hosts.retain(|h| {
        let new = !seen.contains(h);
        seen.push(h.clone());
        new
    });
    // A rule without a host is left alone: a redirect of every host's `/` would take other
    // Ingresses' traffic too.
    for (k, host) in hosts.into_iter().flatten().enumerate() {
        let (mut matcher, mut rank) = matched(Some(&host), false, "/");
        matcher.insert("scheme".into(), json!("http"));
        // Before every other route of its host.
        rank.1 = 0;
        rank.2 = isize::MIN;
        routes.push(Route {
            rank,
            value: json!({
                "name": format!("{base}-https-h{k}"),
                "match": matcher,
                "redirect": {"scheme": "https", "status": 308},
            }),
            source: None,
        });
    }
}

/// An Ingress backend's Service and port (`resource` backends are reported, not imported).
fn ingress_backend(
    object: &Object,
    backend: &Value,
    field: &str,
    notes: &mut Vec<Note>,
) -> Option<BackendRef> {
    // v1beta1 (extensions, networking.k8s.io): `serviceName` and `servicePort`.
    if let Some(name) = backend.get("serviceName").and_then(Value::as_str) {
        return Some(BackendRef {
            namespace: object.namespace.clone(),
            service: name.to_string(),
            port: backend.get("servicePort").cloned().unwrap_or(Value::Null),
        });
    }
    let Some(service) = backend.get("service") else {
        note(
            notes,
            object,
            field,
            Outcome::Unsupported,
            "a resource backend: hitless forwards to Services only".into(),
        );
        return None;
    };
    let name = service.get("name").and_then(Value::as_str)?;
    let port = service.get("port").map(|p| {
        p.get("name")
            .cloned()
            .or_else(|| p.get("number").cloned())
            .unwrap_or(Value::Null)
    });
    Some(BackendRef {
        namespace: object.namespace.clone(),
        service: name.to_string(),
        port: port.unwrap_or(Value::Null),
    })
}
