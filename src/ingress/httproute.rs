//! Gateway API HTTPRoutes and GRPCRoutes as hitless routes. Each rule's matches become routes
//! (one per hostname), with what the spec says of them:
//! - path `Exact` / `PathPrefix` / `RegularExpression`, `method`, `headers` and `queryParams`
//!   of type `Exact` or `RegularExpression` (the whole value must match: `^(?:...)$`, as
//!   Envoy's; GRPCRoute: a `method` match by service and method, as the path
//!   `/service/method`);
//! - `backendRefs` with weights: one backend, or a weighted split (`backends:`); a rule whose
//!   references all have weight 0 answers 500, as the spec says;
//! - filters `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`, `URLRewrite`;
//! - `timeouts.request` and `timeouts.backendRequest` (a route whose `backendRequest` exceeds
//!   its `request` is rejected whole: `Outcome::Rejected`);
//! - `RequestMirror` (one per rule) as `mirror:` (a copy of each request, or of a share).
//!
//! GRPCRoute method regular expressions, `ExtensionRef`, `CORS` and per-backend filters are
//! reported, and a match that needs what hitless cannot check is left out (imported without
//! its condition it would take traffic that is not its own).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::gateway::Placement;
use super::grants::{self, Grants};
use super::nginx::Settings;
use super::routes::{
    backend_entry, matched, matched_regex, note, regex_problem, route_base, route_value,
    BackendRef, Route,
};
use super::{Note, Outcome};
use crate::lint::{Inventory, Object};

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn list<'a>(value: Option<&'a Value>, key: &str) -> &'a [Value] {
    value
        .and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Where the routes of one object go.
pub(super) struct Out<'a> {
    pub backends: &'a mut BTreeMap<String, Value>,
    pub routes: &'a mut Vec<Route>,
}

/// What a route's translation reads besides the route.
pub(super) struct Context<'a> {
    /// Where the controller serves it (hostnames within its listeners', on their ports);
    /// `None`: its hostnames as written, on every listener.
    pub placement: Option<&'a Placement>,
    /// The Services its references resolve against.
    pub inventory: &'a Inventory<'a>,
    /// The ReferenceGrants that let it refer to another namespace's Services.
    pub grants: &'a Grants<'a>,
}

/// Add the routes of `object` (an HTTPRoute or a GRPCRoute), served where `context` says.
pub(super) fn translate(
    object: &Object,
    context: &Context<'_>,
    out: Out<'_>,
    notes: &mut Vec<Note>,
) {
    let Out { backends, routes } = out;
    let placement = context.placement;
    if timeouts_inverted(object, notes) {
        return;
    }
    let grpc = object.kind == "GRPCRoute";
    let spec = object.value.get("spec");
    // Each hostname (`None`: any) with the listener ports it is served on (empty: all).
    let hostnames: Vec<(Option<&str>, &[u16])> = match placement {
        Some(placement) => placement
            .iter()
            .map(|(host, ports)| (host.as_deref(), ports.as_slice()))
            .collect(),
        None => match list(spec, "hostnames") {
            [] => vec![(None, &[][..])],
            h => h.iter().map(|h| (h.as_str(), &[][..])).collect(),
        },
    };
    let base = route_base(object);
    for (i, rule) in list(spec, "rules").iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let mut settings = Settings::default();
        if grpc {
            settings.backend.insert("protocol".into(), json!("grpc"));
        }
        timeouts(object, rule, &field, &mut settings, notes);
        let changes = filters(object, rule, &field, notes);
        let (action, mirror) = match &changes.redirect {
            Some(redirect) => (json!({ "redirect": redirect }), None),
            None => match targets(object, context, rule, &field, &settings, backends, notes) {
                Some(action) => {
                    // Reported, not translated: a route with both would not load.
                    let refused = if grpc {
                        Some("RequestMirror on a GRPCRoute: gRPC request bodies come without a length, and hitless copies only requests whose body it holds (retry.max_replay_bytes); no request would be copied")
                    } else if action.get("respond").is_some() {
                        Some("the rule answers 500 itself (no usable backendRef): no request to copy")
                    } else {
                        None
                    };
                    let mirror = match (refused, first_mirror(rule)) {
                        (_, None) => None,
                        (Some(why), Some(k)) => {
                            let at = format!("{field}.filters[{k}]");
                            note(notes, object, &at, Outcome::Unsupported, why.into());
                            None
                        }
                        (None, Some(_)) => {
                            mirror(object, context, rule, &field, &settings, backends, notes)
                        }
                    };
                    (action, mirror)
                }
                None => continue,
            },
        };
        let no_condition = [json!({})];
        let matches = match list(Some(rule), "matches") {
            [] => &no_condition[..],
            m => m,
        };
        for (j, m) in matches.iter().enumerate() {
            let Some(condition) =
                condition(object, m, grpc, &format!("{field}.matches[{j}]"), notes)
            else {
                continue;
            };
            for (k, (host, ports)) in hostnames.iter().enumerate() {
                let (mut matcher, mut rank) = if condition.regex {
                    // `condition` checked the pattern.
                    let written = condition
                        .path
                        .strip_prefix("^(?:")
                        .and_then(|p| p.strip_suffix(")$"))
                        .unwrap_or(&condition.path);
                    let Ok(found) = matched_regex(*host, &condition.path, written) else {
                        continue;
                    };
                    found
                } else {
                    matched(*host, condition.exact, &condition.path)
                };
                matcher.extend(condition.extra.clone());
                if !ports.is_empty() {
                    matcher.insert("listener_ports".into(), json!(ports));
                }
                (rank.3, rank.4, rank.5) = condition.rank;
                // GRPCRoutes' rules are `g`: an HTTPRoute of the same name is another object.
                let rule = if grpc { "g" } else { "r" };
                let name = format!("{base}-{rule}{i}-m{j}-h{k}");
                let mut value = route_value(name, matcher, String::new(), &settings);
                if let Some(route) = value.as_object_mut() {
                    route.remove("backend");
                    if let Some(action) = action.as_object() {
                        route.extend(action.clone());
                    }
                    route.extend(changes.route.clone());
                    if let Some(mirror) = &mirror {
                        route.insert("mirror".into(), mirror.clone());
                    }
                    if changes.redirect.is_some() {
                        // A redirect answers by itself: no timeouts or retries to set.
                        route.remove("timeouts");
                        route.remove("retry");
                    }
                }
                routes.push(Route {
                    rank,
                    value,
                    source: None,
                });
            }
        }
    }
}

/// Gateway API says a `backendRequest` timeout longer than the `request` timeout makes the
/// route invalid: the whole object is rejected (and its status says why).
fn timeouts_inverted(object: &Object, notes: &mut Vec<Note>) -> bool {
    for (i, rule) in list(object.value.get("spec"), "rules").iter().enumerate() {
        let get = |key: &str| {
            rule.pointer(&format!("/timeouts/{key}"))
                .and_then(Value::as_str)
                .and_then(crate::lint::duration)
                .filter(|d| !d.is_zero())
        };
        if let (Some(request), Some(backend)) = (get("request"), get("backendRequest")) {
            if backend > request {
                note(
                    notes,
                    object,
                    &format!("spec.rules[{i}].timeouts"),
                    Outcome::Rejected,
                    format!(
                        "backendRequest ({backend:?}) is longer than request ({request:?}): \
                         Gateway API makes the route invalid; not applied"
                    ),
                );
                return true;
            }
        }
    }
    false
}

fn timeouts(
    object: &Object,
    rule: &Value,
    field: &str,
    settings: &mut Settings,
    notes: &mut Vec<Note>,
) {
    let Some(timeouts) = rule.get("timeouts") else {
        return;
    };
    for (from, to) in [
        ("request", "request"),
        ("backendRequest", "backend_request"),
    ] {
        match text(timeouts, from) {
            Some(d) if crate::lint::duration(d).is_some_and(|d| d.is_zero()) => note(
                notes,
                object,
                &format!("{field}.timeouts.{from}"),
                Outcome::Differs,
                "0s (no timeout): hitless keeps its default (timeouts need a bound)".into(),
            ),
            Some(d) => {
                settings.timeouts.insert(to.into(), json!(d));
            }
            None => {}
        }
    }
}

/// What a rule's filters add to its routes.
#[derive(Default)]
struct Changes {
    /// `request_headers`, `response_headers`, `rewrite`.
    route: Map<String, Value>,
    /// A `RequestRedirect`: the route answers with it instead of forwarding.
    redirect: Option<Value>,
}

fn filters(object: &Object, rule: &Value, field: &str, notes: &mut Vec<Note>) -> Changes {
    let mut changes = Changes::default();
    for (k, filter) in list(Some(rule), "filters").iter().enumerate() {
        let at = format!("{field}.filters[{k}]");
        match text(filter, "type").unwrap_or_default() {
            "RequestHeaderModifier" => {
                let value = header_changes(filter.get("requestHeaderModifier"));
                changes.route.insert("request_headers".into(), value);
            }
            "ResponseHeaderModifier" => {
                let value = header_changes(filter.get("responseHeaderModifier"));
                changes.route.insert("response_headers".into(), value);
            }
            "RequestRedirect" => {
                let r = filter.get("requestRedirect").unwrap_or(&Value::Null);
                let mut redirect = Map::new();
                if let Some(scheme) = text(r, "scheme") {
                    redirect.insert("scheme".into(), json!(scheme));
                }
                if let Some(host) = text(r, "hostname") {
                    redirect.insert("host".into(), json!(host));
                }
                if let Some(port) = r.get("port").and_then(Value::as_u64) {
                    redirect.insert("port".into(), json!(port));
                }
                if let Some(status) = r.get("statusCode").and_then(Value::as_u64) {
                    redirect.insert("status".into(), json!(status));
                }
                path_change(r.get("path"), &mut redirect);
                changes.redirect = Some(Value::Object(redirect));
            }
            // Needs a backend: `mirror` reads it.
            "RequestMirror" => {}
            "URLRewrite" => {
                let r = filter.get("urlRewrite").unwrap_or(&Value::Null);
                let mut rewrite = Map::new();
                if let Some(host) = text(r, "hostname") {
                    rewrite.insert("host".into(), json!(host));
                }
                path_change(r.get("path"), &mut rewrite);
                changes.route.insert("rewrite".into(), Value::Object(rewrite));
            }
            other => note(
                notes,
                object,
                &at,
                Outcome::Unsupported,
                format!("filter {other}: not applied by hitless (header changes, redirects and rewrites are)"),
            ),
        }
    }
    changes
}

/// `{set: [{name, value}], add: [...], remove: [name]}` as hitless writes it.
fn header_changes(modifier: Option<&Value>) -> Value {
    let pairs = |key: &str| -> Map<String, Value> {
        list(modifier, key)
            .iter()
            .filter_map(|p| Some((text(p, "name")?.to_string(), json!(text(p, "value")?))))
            .collect()
    };
    let mut out = Map::new();
    for key in ["set", "add"] {
        let map = pairs(key);
        if !map.is_empty() {
            out.insert(key.into(), Value::Object(map));
        }
    }
    let remove = list(modifier, "remove");
    if !remove.is_empty() {
        out.insert("remove".into(), Value::Array(remove.to_vec()));
    }
    Value::Object(out)
}

/// A `path` modifier (`ReplaceFullPath` or `ReplacePrefixMatch`) as `path` or `path_prefix`.
fn path_change(path: Option<&Value>, into: &mut Map<String, Value>) {
    let Some(path) = path else {
        return;
    };
    match text(path, "type") {
        Some("ReplaceFullPath") => {
            if let Some(p) = text(path, "replaceFullPath") {
                into.insert("path".into(), json!(p));
            }
        }
        Some("ReplacePrefixMatch") => {
            if let Some(p) = text(path, "replacePrefixMatch") {
                into.insert("path_prefix".into(), json!(p));
            }
        }
        _ => {}
    }
}

/// Where the rule's first `RequestMirror` filter is.
fn first_mirror(rule: &Value) -> Option<usize> {
    list(Some(rule), "filters")
        .iter()
        .position(|f| text(f, "type") == Some("RequestMirror"))
}

/// A rule's `RequestMirror` filter as `mirror: {backend, percent}` (`percent`, or `fraction`,
/// or all); hitless copies to one backend per route, and reports a second mirror.
fn mirror(
    object: &Object,
    context: &Context<'_>,
    rule: &Value,
    field: &str,
    settings: &Settings,
    backends: &mut BTreeMap<String, Value>,
    notes: &mut Vec<Note>,
) -> Option<Value> {
    let mut found = None;
    for (k, filter) in list(Some(rule), "filters").iter().enumerate() {
        if text(filter, "type") != Some("RequestMirror") {
            continue;
        }
        let at = format!("{field}.filters[{k}]");
        if found.is_some() {
            let message =
                "a second RequestMirror: hitless copies a route's requests to one backend";
            note(notes, object, &at, Outcome::Unsupported, message.into());
            continue;
        }
        let m = filter.get("requestMirror").unwrap_or(&Value::Null);
        let Some(r) = m.get("backendRef") else {
            let message = "a RequestMirror without a backendRef: nothing to copy to";
            note(notes, object, &at, Outcome::Unsupported, message.into());
            continue;
        };
        let number = |v: Option<&Value>| v.and_then(Value::as_f64);
        let percent = match (number(m.get("percent")), m.get("fraction")) {
            (Some(p), _) => p.clamp(0.0, 100.0),
            (None, Some(f)) => {
                let numerator = number(f.get("numerator")).unwrap_or(0.0);
                let denominator = number(f.get("denominator")).unwrap_or(100.0);
                if denominator > 0.0 {
                    (numerator / denominator * 100.0).clamp(0.0, 100.0)
                } else {
                    0.0
                }
            }
            (None, None) => 100.0,
        };
        let at = format!("{at}.requestMirror.backendRef");
        let Some(name) = service_backend(object, context, r, &at, settings, backends, notes) else {
            continue;
        };
        found = Some(json!({"backend": name, "percent": percent}));
    }
    found
}

/// The hitless backend for `r`, a reference to a Service (as `backendRefs` and
/// `RequestMirror` write them), added to `backends`; `None`, reported, when it cannot be used.
fn service_backend(
    object: &Object,
    context: &Context<'_>,
    r: &Value,
    at: &str,
    settings: &Settings,
    backends: &mut BTreeMap<String, Value>,
    notes: &mut Vec<Note>,
) -> Option<String> {
    let kind = text(r, "kind").unwrap_or("Service");
    let group = text(r, "group").unwrap_or("");
    if kind != "Service" || !group.is_empty() {
        note(
            notes,
            object,
            at,
            Outcome::Unsupported,
            format!("{kind} backends: hitless forwards to Services only"),
        );
        return None;
    }
    let service = text(r, "name")?;
    let own = object.namespace.as_deref().unwrap_or("default");
    let namespace = text(r, "namespace").unwrap_or(own);
    let from = grants::From {
        kind: &object.kind,
        namespace: own,
    };
    let to = grants::To {
        kind: "Service",
        namespace,
        name: service,
    };
    if !context.grants.permit(from, to) {
        // Without this check any route could expose any Service.
        note(
            notes,
            object,
            &format!("{at}.namespace"),
            Outcome::Unsupported,
            format!(
                "Service {namespace}/{service}: another namespace's Service needs a \
                 ReferenceGrant there for this {} (none found): refused",
                object.kind
            ),
        );
        return None;
    }
    let backend = BackendRef {
        // As written: a route without a namespace (a file for `import`) keeps none.
        namespace: match text(r, "namespace") {
            Some(ns) => Some(ns.to_string()),
            None => object.namespace.clone(),
        },
        service: service.to_string(),
        port: r.get("port").cloned().unwrap_or(Value::Null),
    };
    Some(backend_entry(
        object,
        context.inventory,
        &backend,
        settings,
        backends,
        notes,
    ))
}

/// Where a rule forwards: `{backend}` or `{backends: [...]}` (or `{respond: 500}` when every
/// reference has weight 0 or none is usable, as the spec says); `None` without references.
fn targets(
    object: &Object,
    context: &Context<'_>,
    rule: &Value,
    field: &str,
    settings: &Settings,
    backends: &mut BTreeMap<String, Value>,
    notes: &mut Vec<Note>,
) -> Option<Value> {
    let mut split: Vec<(String, u64)> = Vec::new();
    for (k, r) in list(Some(rule), "backendRefs").iter().enumerate() {
        let at = format!("{field}.backendRefs[{k}]");
        if !list(Some(r), "filters").is_empty() {
            note(
                notes,
                object,
                &format!("{at}.filters"),
                Outcome::Unsupported,
                "filters on one backend: not applied (rule filters are)".into(),
            );
        }
        let Some(name) = service_backend(object, context, r, &at, settings, backends, notes) else {
            continue;
        };
        let weight = r.get("weight").and_then(Value::as_u64).unwrap_or(1);
        if !split.iter().any(|(n, _)| *n == name) {
            split.push((name, weight));
        }
    }
    let given = !list(Some(rule), "backendRefs").is_empty();
    match split.as_slice() {
        // References, none usable: the spec's 500 for the rule's traffic.
        [] if given => Some(json!({
            "respond": {"status": 500, "body": "no usable backend for this route\n"}
        })),
        [] => {
            note(
                notes,
                object,
                &format!("{field}.backendRefs"),
                Outcome::Unsupported,
                "no Service to forward to: the rule is not imported".into(),
            );
            None
        }
        s if s.iter().all(|(_, w)| *w == 0) => Some(json!({
            // The spec: every backend weighted 0 means 500 for the rule's traffic.
            "respond": {"status": 500, "body": "no backend takes traffic (every weight is 0)\n"}
        })),
        [(name, _)] => Some(json!({ "backend": name })),
        s => Some(json!({
            "backends": s.iter().map(|(name, weight)| json!({"name": name, "weight": weight})).collect::<Vec<_>>()
        })),
    }
}

/// One match as hitless can check it.
struct Condition {
    exact: bool,
    path: String,
    /// `path` is a regular expression (`RegularExpression`, matched whole).
    regex: bool,
    /// `method`, `headers`, `query` for the route's `match:`.
    extra: Map<String, Value>,
    /// (no method match, negative header count, negative query count): the spec's tie-breakers.
    rank: (u8, isize, isize),
}

fn condition(
    object: &Object,
    m: &Value,
    grpc: bool,
    field: &str,
    notes: &mut Vec<Note>,
) -> Option<Condition> {
    let unsupported = |notes: &mut Vec<Note>, at: String, what: &str| {
        note(
            notes,
            object,
            &at,
            Outcome::Unsupported,
            format!("{what}: this match is not imported (without its condition it would take traffic that is not its own)"),
        )
    };
    let (kind, path) = if grpc {
        match grpc_path(m.get("method")) {
            Some(found) => found,
            None => {
                unsupported(
                    notes,
                    format!("{field}.method"),
                    "a method without its service, or a regular expression",
                );
                return None;
            }
        }
    } else {
        let path = m.get("path");
        let kind = path.and_then(|p| text(p, "type")).unwrap_or("PathPrefix");
        let value = path.and_then(|p| text(p, "value")).unwrap_or("/");
        (kind, value.to_string())
    };
    let regex = kind == "RegularExpression";
    let path = if regex { anchored(&path) } else { Ok(path) };
    let path = match path {
        Ok(path) => path,
        Err(why) => {
            note(
                notes,
                object,
                &format!("{field}.path"),
                Outcome::Unsupported,
                format!(
                    "a regular expression hitless cannot match ({why}): this match is not imported"
                ),
            );
            return None;
        }
    };
    let mut extra = Map::new();
    let mut exacts = |key: &str, into: &str, notes: &mut Vec<Note>| -> Option<isize> {
        let mut pairs = Vec::new();
        for (k, h) in list(Some(m), key).iter().enumerate() {
            let (name, value) = (text(h, "name")?, text(h, "value")?);
            match text(h, "type").unwrap_or("Exact") {
                "Exact" => pairs.push(json!({"name": name, "value": value})),
                "RegularExpression" => match anchored(value) {
                    Ok(pattern) => pairs.push(json!({"name": name, "pattern": pattern})),
                    Err(why) => {
                        let what = format!("a regular expression hitless cannot match ({why})");
                        unsupported(notes, format!("{field}.{key}[{k}]"), &what);
                        return None;
                    }
                },
                other => {
                    let what = format!("match type {other}");
                    unsupported(notes, format!("{field}.{key}[{k}]"), &what);
                    return None;
                }
            }
        }
        let count = isize::try_from(pairs.len()).unwrap_or(isize::MAX);
        if !pairs.is_empty() {
            extra.insert(into.into(), Value::Array(pairs));
        }
        Some(count)
    };
    let headers = exacts("headers", "headers", notes)?;
    let query = if grpc {
        0
    } else {
        exacts("queryParams", "query", notes)?
    };
    let method = if grpc { None } else { text(m, "method") };
    if let Some(method) = method {
        extra.insert("method".into(), json!(method));
    }
    Some(Condition {
        exact: kind == "Exact",
        path,
        regex,
        extra,
        rank: (u8::from(method.is_none()), -headers, -query),
    })
}

/// A Gateway API `RegularExpression` value as a hitless pattern: Gateway API leaves the
/// anchoring to implementations, and the whole value must match, as Envoy's does. The value
/// alone must be an expression: `/x)|(.*` would escape the anchors once wrapped.
fn anchored(value: &str) -> Result<String, String> {
    let wrapped = format!("^(?:{value})$");
    match regex_problem(value).or_else(|| regex_problem(&wrapped)) {
        Some(why) => Err(why),
        None => Ok(wrapped),
    }
}

/// A GRPCRoute method match as a path match: `/service/method` exactly, or the `/service`
/// prefix; no match at all is every path. `None`: a method without a service, or a regular
/// expression.
fn grpc_path(method: Option<&Value>) -> Option<(&'static str, String)> {
    let Some(method) = method else {
        return Some(("PathPrefix", "/".into()));
    };
    if text(method, "type").unwrap_or("Exact") != "Exact" {
        return None;
    }
    match (text(method, "service"), text(method, "method")) {
        (Some(s), Some(m)) => Some(("Exact", format!("/{s}/{m}"))),
        (Some(s), None) => Some(("PathPrefix", format!("/{s}"))),
        (None, None) => Some(("PathPrefix", "/".into())),
        (None, Some(_)) => None,
    }
}
