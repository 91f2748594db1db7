//! ingress-nginx Ingresses: the annotations that turn a passing deploy or an idle connection
//! into a 502 (retries that skip errors, a read timeout the client does not wait for, an
//! upstream keep-alive the app closes first, HTTP spoken to an HTTPS or gRPC port, a buffer too
//! small for the response headers). Each value nginx falls back to is its documented default;
//! what nginx cannot know (the client's timeout, the app's keep-alive) comes from `hitless.dev/`
//! annotations, and without them the rule stays silent. Only Ingresses nginx serves are read.

use std::time::Duration;

use serde_json::Value;

use super::k8s::{annotation_field, Inventory, Object};
use super::rules::{
    NGINX_BACKEND_PROTOCOL, NGINX_BUFFER_SIZE, NGINX_KEEPALIVE, NGINX_NEXT_UPSTREAM,
    NGINX_READ_TIMEOUT,
};
use super::units::{self, show};
use super::Finding;

const PREFIX: &str = "nginx.ingress.kubernetes.io/";
const NEXT_UPSTREAM: &str = "nginx.ingress.kubernetes.io/proxy-next-upstream";
const READ_TIMEOUT: &str = "nginx.ingress.kubernetes.io/proxy-read-timeout";
const KEEPALIVE: &str = "nginx.ingress.kubernetes.io/upstream-keepalive-timeout";
const BACKEND_PROTOCOL: &str = "nginx.ingress.kubernetes.io/backend-protocol";
const BUFFER_SIZE: &str = "nginx.ingress.kubernetes.io/proxy-buffer-size";

/// What the client in front of nginx waits for an answer (e.g. its load balancer's timeout).
pub(crate) const CLIENT_TIMEOUT: &str = "hitless.dev/client-timeout";
/// How long the app keeps an idle connection open, on the Ingress or a backend Service.
pub(crate) const APP_KEEPALIVE: &str = "hitless.dev/app-keepalive-timeout";

/// ingress-nginx's defaults for `proxy-read-timeout` and `upstream-keepalive-timeout`.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
/// Below this, a response with a few cookies or a token does not fit (the default is 4k).
const MIN_BUFFER_SIZE: u64 = 8 * 1024;
/// What `proxy-next-upstream` must retry on so a pod that just stopped costs no request.
const RETRY_ON: [&str; 3] = ["error", "timeout", "http_502"];

/// Whether ingress-nginx serves this Ingress: an nginx class, or nginx's own annotations.
fn is_nginx(ingress: &Object) -> bool {
    let class = ingress
        .value
        .get("spec")
        .and_then(|s| s.get("ingressClassName"))
        .and_then(Value::as_str)
        .or_else(|| ingress.annotation("kubernetes.io/ingress.class"));
    class.is_some_and(|c| c.contains("nginx"))
        || ingress
            .annotations()
            .is_some_and(|a| a.keys().any(|k| k.starts_with(PREFIX)))
}

pub(crate) fn check(ingress: &Object, inventory: &Inventory, findings: &mut Vec<Finding>) {
    if !is_nginx(ingress) {
        return;
    }
    let backends = backends(ingress, inventory);
    next_upstream(ingress, findings);
    read_timeout(ingress, findings);
    keepalive(ingress, &backends, findings);
    backend_protocol(ingress, &backends, findings);
    buffer_size(ingress, findings);
}

/// One backend an Ingress sends to: where it is written, and the Service port it names.
struct Backend<'a> {
    /// The field path of the backend's port.
    field: String,
    service: Option<&'a Object>,
    /// The Service port's name or `appProtocol` (or the Ingress's port name when the Service
    /// is not in the input), lowercased.
    port_names: Vec<String>,
    port_text: String,
}

fn backends<'a>(ingress: &'a Object, inventory: &Inventory<'a>) -> Vec<Backend<'a>> {
    let mut found = Vec::new();
    let Some(spec) = ingress.value.get("spec") else {
        return found;
    };
    for key in ["defaultBackend", "backend"] {
        if let Some(backend) = spec.get(key) {
            found.extend(backend_of(
                ingress,
                inventory,
                backend,
                &format!("spec.{key}"),
            ));
        }
    }
    let rules = spec.get("rules").and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let paths = rule
            .get("http")
            .and_then(|h| h.get("paths"))
            .and_then(Value::as_array);
        for (j, path) in paths.into_iter().flatten().enumerate() {
            if let Some(backend) = path.get("backend") {
                let at = format!("spec.rules[{i}].http.paths[{j}].backend");
                found.extend(backend_of(ingress, inventory, backend, &at));
            }
        }
    }
    found
}

fn backend_of<'a>(
    ingress: &Object,
    inventory: &Inventory<'a>,
    backend: &Value,
    at: &str,
) -> Option<Backend<'a>> {
    // networking.k8s.io/v1 `service: {name, port: {number|name}}`, or the older
    // `serviceName` / `servicePort` of extensions/v1beta1.
    let (name, port, field) = match backend.get("service") {
        Some(service) => {
            let port = service.get("port");
            let port = port
                .and_then(|p| p.get("number"))
                .or_else(|| port.and_then(|p| p.get("name")));
            (service.get("name"), port, format!("{at}.service.port"))
        }
        None => (
            backend.get("serviceName"),
            backend.get("servicePort"),
            format!("{at}.servicePort"),
        ),
    };
    let name = name?.as_str()?;
    let port = port?;
    let service = inventory.find("Service", ingress.namespace.as_deref(), name);
    let service_port = service
        .and_then(|s| s.value.get("spec")?.get("ports")?.as_array())
        .into_iter()
        .flatten()
        .find(|p| match port {
            Value::Number(_) => p.get("port") == Some(port),
            _ => p.get("name") == Some(port),
        });
    let mut port_names: Vec<String> = match service_port {
        Some(p) => ["name", "appProtocol"]
            .iter()
            .filter_map(|k| p.get(*k)?.as_str())
            .map(str::to_ascii_lowercase)
            .collect(),
        None => Vec::new(),
    };
    if let Some(named) = port.as_str() {
        port_names.push(named.to_ascii_lowercase());
    }
    let port_text = match port {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(Backend {
        field,
        service,
        port_names,
        port_text: format!("{name}:{port_text}"),
    })
}

fn next_upstream(ingress: &Object, findings: &mut Vec<Finding>) {
    let Some(value) = ingress.annotation(NEXT_UPSTREAM) else {
        return;
    };
    let tokens: Vec<&str> = value.split_whitespace().collect();
    let missing: Vec<&str> = RETRY_ON
        .into_iter()
        .filter(|t| !tokens.contains(t))
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut wanted: Vec<&str> = tokens.into_iter().filter(|t| *t != "off").collect();
    wanted.extend(&missing);
    findings.push(NGINX_NEXT_UPSTREAM.finding(
        ingress,
        annotation_field(NEXT_UPSTREAM),
        format!(
            "proxy-next-upstream {value:?} does not retry on {}: a request that meets a pod \
             that just stopped fails instead of going to the next pod",
            missing.join(", ")
        ),
        format!("set {NEXT_UPSTREAM}: {:?}", wanted.join(" ")),
    ));
}

fn read_timeout(ingress: &Object, findings: &mut Vec<Finding>) {
    let Some(client) = ingress.annotation(CLIENT_TIMEOUT).and_then(units::duration) else {
        return;
    };
    let (read, how) = match ingress.annotation(READ_TIMEOUT) {
        Some(text) => match units::duration(text) {
            Some(read) => (read, String::new()),
            None => return,
        },
        None => (DEFAULT_READ_TIMEOUT, " (the default)".to_string()),
    };
    if read < client {
        return;
    }
    findings.push(NGINX_READ_TIMEOUT.finding(
        ingress,
        annotation_field(READ_TIMEOUT),
        format!(
            "nginx waits up to {}{how} for the backend's answer, not less than the client's \
             timeout {} ({CLIENT_TIMEOUT}): the client gives up first and sees a 504 or a reset",
            show(read),
            show(client)
        ),
        format!(
            "set {READ_TIMEOUT} below {} (seconds, e.g. \"{}\")",
            client.as_secs(),
            client.as_secs().saturating_sub(5).max(1)
        ),
    ));
}

fn keepalive(ingress: &Object, backends: &[Backend], findings: &mut Vec<Finding>) {
    // The shortest keep-alive the app is known by: the Ingress's own statement, or its Services'.
    let mut known: Vec<(Duration, String)> = Vec::new();
    if let Some(d) = ingress.annotation(APP_KEEPALIVE).and_then(units::duration) {
        known.push((d, format!("{APP_KEEPALIVE} on this Ingress")));
    }
    for service in backends.iter().filter_map(|b| b.service) {
        if let Some(d) = service.annotation(APP_KEEPALIVE).and_then(units::duration) {
            known.push((d, format!("{APP_KEEPALIVE} on {}", service.id())));
        }
    }
    // The first of equal minimums: the Ingress's own statement, then the Services in order.
    let Some((app, source)) = known.into_iter().min_by(|a, b| a.0.cmp(&b.0)) else {
        return;
    };
    let (nginx, how) = match ingress.annotation(KEEPALIVE) {
        Some(text) => match units::duration(text) {
            Some(d) => (d, String::new()),
            None => return,
        },
        None => (DEFAULT_KEEPALIVE, " (the default)".to_string()),
    };
    if nginx < app {
        return;
    }
    let example = match app.as_secs() {
        0 | 1 => String::new(),
        s => format!(" (e.g. \"{}\")", s - 1),
    };
    findings.push(NGINX_KEEPALIVE.finding(
        ingress,
        annotation_field(KEEPALIVE),
        format!(
            "nginx keeps idle upstream connections for {}{how}, not shorter than the app's \
             keep-alive {} ({source}): nginx reuses a connection the app has just closed and \
             the request gets a 502",
            show(nginx),
            show(app)
        ),
        format!("set {KEEPALIVE} below {}{example}", show(app)),
    ));
}

fn backend_protocol(ingress: &Object, backends: &[Backend], findings: &mut Vec<Finding>) {
    let set = ingress.annotation(BACKEND_PROTOCOL);
    for backend in backends {
        let Some((name, wanted)) = backend.port_names.iter().find_map(|n| {
            let wanted = match n.as_str() {
                "https" => "HTTPS",
                "grpc" => "GRPC",
                "grpcs" => "GRPCS",
                _ => return None,
            };
            Some((n, wanted))
        }) else {
            continue;
        };
        if set.is_some_and(|s| s.eq_ignore_ascii_case(wanted)) {
            continue;
        }
        let speaks = match set {
            Some(s) => format!("backend-protocol is {s:?}"),
            None => "backend-protocol is not set (nginx speaks HTTP)".to_string(),
        };
        findings.push(NGINX_BACKEND_PROTOCOL.finding(
            ingress,
            backend.field.clone(),
            format!(
                "backend {} is a port named {name:?}, but {speaks}: every request to it fails \
                 with a 502",
                backend.port_text
            ),
            format!("set {BACKEND_PROTOCOL}: {wanted:?}"),
        ));
    }
}

fn buffer_size(ingress: &Object, findings: &mut Vec<Finding>) {
    let Some(text) = ingress.annotation(BUFFER_SIZE) else {
        return;
    };
    let Some(size) = units::size(text) else {
        return;
    };
    if size >= MIN_BUFFER_SIZE {
        return;
    }
    findings.push(NGINX_BUFFER_SIZE.finding(
        ingress,
        annotation_field(BUFFER_SIZE),
        format!(
            "proxy-buffer-size {text:?} is below 8k: a response whose headers do not fit \
             (cookies, tokens) becomes a 502 (\"upstream sent too big header\")"
        ),
        format!("set {BUFFER_SIZE}: \"16k\""),
    ));
}
