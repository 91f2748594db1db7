//! A local HTTP server speaking the parts of the Kubernetes API that hitless's controllers use
//! (there is no API server here): list and watch (chunked JSON lines) of namespaced and
//! cluster-wide collections, merge patches of status subresources, get/create/replace of Leases
//! with `resourceVersion` conflicts, and Event creation. Objects are written in the shape the API
//! server returns; everything the controller wrote is recorded for the tests to assert on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::time::Duration;

use rustls_pki_types::ServerName;

use super::{free_port, get, spawn_ready, ChildProxy, Client, TestCa};

type ApiBody = BoxBody<Bytes, std::io::Error>;

/// A collection: its path, the list kind, the apiVersion.
struct Collection {
    path: String,
    /// The collection across namespaces (for a cluster-scoped kind: `path`).
    all: String,
    namespaced: bool,
    list_kind: &'static str,
    api_version: &'static str,
}

/// Kind -> (path under the namespace or the root, list kind, apiVersion, namespaced).
fn collection(kind: &str, namespace: &str) -> Option<Collection> {
    let (group_path, plural, list_kind, api_version, namespaced) = match kind {
        "Ingress" => (
            "/apis/networking.k8s.io/v1",
            "ingresses",
            "IngressList",
            "networking.k8s.io/v1",
            true,
        ),
        "Service" => ("/api/v1", "services", "ServiceList", "v1", true),
        "Secret" => ("/api/v1", "secrets", "SecretList", "v1", true),
        "EndpointSlice" => (
            "/apis/discovery.k8s.io/v1",
            "endpointslices",
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            true,
        ),
        "Gateway" => (
            "/apis/gateway.networking.k8s.io/v1",
            "gateways",
            "GatewayList",
            "gateway.networking.k8s.io/v1",
            true,
        ),
        "HTTPRoute" => (
            "/apis/gateway.networking.k8s.io/v1",
            "httproutes",
            "HTTPRouteList",
            "gateway.networking.k8s.io/v1",
            true,
        ),
        "GRPCRoute" => (
            "/apis/gateway.networking.k8s.io/v1",
            "grpcroutes",
            "GRPCRouteList",
            "gateway.networking.k8s.io/v1",
            true,
        ),
        "GatewayClass" => (
            "/apis/gateway.networking.k8s.io/v1",
            "gatewayclasses",
            "GatewayClassList",
            "gateway.networking.k8s.io/v1",
            false,
        ),
        "ReferenceGrant" => (
            "/apis/gateway.networking.k8s.io/v1beta1",
            "referencegrants",
            "ReferenceGrantList",
            "gateway.networking.k8s.io/v1beta1",
            true,
        ),
        "Namespace" => ("/api/v1", "namespaces", "NamespaceList", "v1", false),
        _ => return None,
    };
    let path = if namespaced {
        format!("{group_path}/namespaces/{namespace}/{plural}")
    } else {
        format!("{group_path}/{plural}")
    };
    Some(Collection {
        path,
        all: format!("{group_path}/{plural}"),
        namespaced,
        list_kind,
        api_version,
    })
}

/// The kind and collection a request path names (a namespace's, or all namespaces'), and the
/// rest of the path (`/name/status`).
fn parse(path: &str, gateway_api: bool) -> Option<(&'static str, Collection, bool, String)> {
    for kind in KINDS {
        if !gateway_api && kind_is_gateway_api(kind) {
            continue;
        }
        let any = collection(kind, "")?;
        if !any.namespaced {
            let Some(rest) = path.strip_prefix(&any.all) else {
                continue;
            };
            if rest.is_empty() || rest.starts_with('/') {
                return Some((kind, any, false, rest.to_string()));
            }
            continue;
        }
        if path == any.all {
            return Some((kind, any, true, String::new()));
        }
        // `{group}/namespaces/{ns}/{plural}...`
        let (group, plural) = any.all.rsplit_once('/')?;
        let Some(rest) = path.strip_prefix(&format!("{group}/namespaces/")) else {
            continue;
        };
        let Some((namespace, rest)) = rest.split_once('/') else {
            continue;
        };
        let Some(rest) = rest.strip_prefix(plural) else {
            continue;
        };
        if rest.is_empty() || rest.starts_with('/') {
            let c = collection(kind, namespace)?;
            return Some((kind, c, false, rest.to_string()));
        }
    }
    None
}

fn kind_is_gateway_api(kind: &str) -> bool {
    matches!(
        kind,
        "Gateway" | "HTTPRoute" | "GRPCRoute" | "GatewayClass" | "ReferenceGrant"
    )
}

/// The namespace an object is stored under (`shop` unless it says).
fn namespace_of(object: &Value) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(NAMESPACE)
        .to_string()
}

const NAMESPACE: &str = "shop";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/shop/leases";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

#[derive(Default)]
pub struct State {
    rv: u64,
    /// Collection path -> name -> object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    /// (collection, service-name label wanted, stream).
    watchers: Vec<(
        String,
        Option<String>,
        tokio::sync::mpsc::UnboundedSender<Bytes>,
    )>,
    /// Status patches received: (kind, name, patch).
    pub status_patches: Vec<(String, String, Value)>,
    /// Events created (the `events.k8s.io/v1` objects).
    pub events: Vec<Value>,
    pub leases: BTreeMap<String, Value>,
}

pub struct KubeApi {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    /// Whether the Gateway API CRDs are "installed" (their collections answer).
    gateway_api: bool,
}

fn label(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/labels/kubernetes.io~1service-name")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn json_response(status: u16, body: Value) -> http::Response<ApiBody> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn failure(code: u16, reason: &str, message: &str) -> http::Response<ApiBody> {
    json_response(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message}),
    )
}

impl KubeApi {
    /// Serve Ingresses, Services, Secrets and EndpointSlices; with `gateway_api`, the Gateway
    /// API kinds too (without, their paths answer 404 as a cluster without the CRDs does).
    pub async fn start(gateway_api: bool) -> KubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            ..Default::default()
        }));
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(req, state, gateway_api).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        KubeApi {
            addr,
            state,
            gateway_api,
        }
    }

    /// Create or replace `object` (its kind and namespace say where), as `kubectl apply` would.
    pub fn apply(&self, mut object: Value) {
        let kind = object["kind"].as_str().unwrap().to_string();
        let c = collection(&kind, &namespace_of(&object)).unwrap();
        let (path, all) = (c.path, c.all);
        assert!(self.gateway_api || !path.contains("gateway.networking"));
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let objects = state.objects.entry(path.clone()).or_default();
        let event = match objects.get(&name) {
            Some(old) => {
                // Status is the status subresource's: a spec update keeps it, and moves the
                // generation on.
                if let Some(status) = old.get("status") {
                    object["status"] = status.clone();
                }
                let generation = old.pointer("/metadata/generation").and_then(Value::as_i64);
                object["metadata"]["generation"] = json!(generation.unwrap_or(1) + 1);
                "MODIFIED"
            }
            None => {
                object["metadata"]["generation"] = json!(1);
                object["metadata"]["uid"] = json!(format!("uid-{kind}-{name}"));
                "ADDED"
            }
        };
        objects.insert(name, object.clone());
        broadcast(
            &mut state,
            [&path, &all],
            json!({"type": event, "object": object}),
        );
    }

    pub fn delete(&self, kind: &str, name: &str) {
        self.delete_in(kind, NAMESPACE, name);
    }

    pub fn delete_in(&self, kind: &str, namespace: &str, name: &str) {
        let c = collection(kind, namespace).unwrap();
        let (path, all) = (c.path, c.all);
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv.to_string();
        let mut object = state
            .objects
            .entry(path.clone())
            .or_default()
            .remove(name)
            .unwrap();
        object["metadata"]["resourceVersion"] = json!(rv);
        broadcast(
            &mut state,
            [&path, &all],
            json!({"type": "DELETED", "object": object}),
        );
    }

    /// The object (in `shop`) as the API server holds it now.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.get_in(kind, NAMESPACE, name)
    }

    /// The object in `namespace` as the API server holds it now.
    pub fn get_in(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let path = collection(kind, namespace)?.path;
        let state = self.state.lock().unwrap();
        state.objects.get(&path)?.get(name).cloned()
    }

    /// A kubeconfig file for this server (namespace `shop`, a bearer token).
    pub fn kubeconfig(&self) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "hitless-kubeconfig-{}-{}.yaml",
            std::process::id(),
            self.addr.port()
        ));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: tester, namespace: shop}}\ncurrent-context: fake\nusers:\n- name: tester\n  user: {{token: test-token}}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }
}

/// Send `event` to the watchers of its collection, `paths` (the namespace's and all
/// namespaces').
fn broadcast(state: &mut State, paths: [&str; 2], event: Value) {
    let wanted = label(&event["object"]);
    let line = Bytes::from(format!("{event}\n"));
    state.watchers.retain(|(c, selector, tx)| {
        if !paths.contains(&c.as_str()) || (selector.is_some() && *selector != wanted) {
            return true;
        }
        tx.send(line.clone()).is_ok()
    });
}

// Namespace last: its path is a prefix of every namespaced one (`parse` tries kinds in order).
const KINDS: [&str; 10] = [
    "Ingress",
    "Service",
    "Secret",
    "EndpointSlice",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "GatewayClass",
    "ReferenceGrant",
    "Namespace",
];

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
    gateway_api: bool,
) -> http::Response<ApiBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if path.starts_with(LEASES) {
        return lease(&method, &path, &body, &state);
    }
    if path.starts_with(EVENTS) {
        let mut state = state.lock().unwrap();
        if method == http::Method::POST {
            let event: Value = serde_json::from_slice(&body).unwrap();
            state.events.push(event.clone());
            return json_response(201, event);
        }
        // A series update (PATCH) of an Event already created.
        return json_response(200, serde_json::from_slice(&body).unwrap_or(json!({})));
    }
    let Some((kind, c, across, rest)) = parse(&path, gateway_api) else {
        return failure(404, "NotFound", &path);
    };
    // The status subresource: a merge patch of `status`.
    if method == http::Method::PATCH {
        let name = rest
            .trim_start_matches('/')
            .trim_end_matches("/status")
            .to_string();
        let patch: Value = serde_json::from_slice(&body).unwrap();
        let mut state = state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv.to_string();
        let Some(object) = state
            .objects
            .entry(c.path.clone())
            .or_default()
            .get_mut(&name)
        else {
            return failure(404, "NotFound", &name);
        };
        let status = object.get("status").cloned().unwrap_or(json!({}));
        object["status"] = merge(status, &patch["status"]);
        object["metadata"]["resourceVersion"] = json!(rv);
        let object = object.clone();
        state.status_patches.push((kind.to_string(), name, patch));
        broadcast(
            &mut state,
            [&c.path, &c.all],
            json!({"type": "MODIFIED", "object": object.clone()}),
        );
        return json_response(200, object);
    }
    if !rest.is_empty() {
        return failure(404, "NotFound", &path);
    }
    let selector = query
        .split('&')
        .find_map(|p| p.strip_prefix("labelSelector=kubernetes.io%2Fservice-name%3D"))
        .map(str::to_string);
    let mut state = state.lock().unwrap();
    if query.contains("watch=true") {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let watched = if across {
            c.all.clone()
        } else {
            c.path.clone()
        };
        state.watchers.push((watched, selector, tx));
        let lines = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(Frame::data(line)), rx))
        });
        return http::Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(lines)))
            .unwrap();
    }
    // One namespace's collection, or every namespace's of this kind.
    let (group, plural) = c.all.rsplit_once('/').unwrap();
    let prefix = format!("{group}/namespaces/");
    let suffix = format!("/{plural}");
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(p, _)| {
            **p == c.path
                || (across
                    && p.starts_with(&prefix)
                    && p.ends_with(&suffix)
                    && p[prefix.len()..p.len() - suffix.len()].find('/').is_none())
        })
        .flat_map(|(_, m)| m.values())
        .filter(|o| selector.is_none() || label(o) == selector)
        .cloned()
        .collect();
    json_response(
        200,
        json!({"kind": c.list_kind, "apiVersion": c.api_version, "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    )
}

/// RFC 7386 merge patch.
fn merge(mut target: Value, patch: &Value) -> Value {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    let old = t.remove(k).unwrap_or(Value::Null);
                    t.insert(k.clone(), merge(old, v));
                }
            }
            target
        }
        _ => patch.clone(),
    }
}

fn lease(
    method: &http::Method,
    path: &str,
    body: &[u8],
    state: &Mutex<State>,
) -> http::Response<ApiBody> {
    let name = path[LEASES.len()..].trim_start_matches('/').to_string();
    let mut state = state.lock().unwrap();
    state.rv += 1;
    let rv = state.rv.to_string();
    match *method {
        http::Method::GET => match state.leases.get(&name) {
            Some(lease) => json_response(200, lease.clone()),
            None => failure(404, "NotFound", &name),
        },
        http::Method::POST => {
            let mut lease: Value = serde_json::from_slice(body).unwrap();
            let name = lease["metadata"]["name"].as_str().unwrap().to_string();
            if state.leases.contains_key(&name) {
                return failure(409, "AlreadyExists", &name);
            }
            lease["metadata"]["resourceVersion"] = json!(rv);
            lease["kind"] = json!("Lease");
            lease["apiVersion"] = json!("coordination.k8s.io/v1");
            state.leases.insert(name, lease.clone());
            json_response(201, lease)
        }
        http::Method::PUT => {
            let mut lease: Value = serde_json::from_slice(body).unwrap();
            let current = state
                .leases
                .get(&name)
                .and_then(|l| l.pointer("/metadata/resourceVersion").cloned());
            if current.is_none() || lease.pointer("/metadata/resourceVersion") != current.as_ref() {
                return failure(409, "Conflict", &name);
            }
            lease["metadata"]["resourceVersion"] = json!(rv);
            lease["kind"] = json!("Lease");
            lease["apiVersion"] = json!("coordination.k8s.io/v1");
            state.leases.insert(name, lease.clone());
            json_response(200, lease)
        }
        _ => failure(405, "MethodNotAllowed", path),
    }
}

// Shared by the controller tests.

pub fn service(name: &str) -> Value {
    json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

pub fn slice(service: &str, port: u16) -> Value {
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4",
        "metadata": {"name": format!("{service}-abc"), "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]})
}

/// A `hitless ingress` child process on the fake API, with its base config file.
pub struct Controller {
    /// The plain listener.
    pub proxy: SocketAddr,
    /// The TLS listener, when started with a default certificate.
    pub tls_proxy: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub base: std::path::PathBuf,
    pub child: ChildProxy,
}

impl Drop for Controller {
    fn drop(&mut self) {
        std::fs::remove_file(&self.base).ok();
    }
}

impl Controller {
    /// Start one on `api` (namespace `shop`), with a plain listener and, given `tls` (the TLS
    /// listener's `tls:` mapping, YAML), a TLS one. Returns once it is ready.
    pub async fn start(api: &KubeApi, tag: &str, tls: Option<&str>, extra: &[&str]) -> Controller {
        Controller::start_in(api, tag, tls, extra, Some(NAMESPACE)).await
    }

    /// As `start`, watching `namespace` (`None`: every namespace, as shipped).
    pub async fn start_in(
        api: &KubeApi,
        tag: &str,
        tls: Option<&str>,
        extra: &[&str],
        namespace: Option<&str>,
    ) -> Controller {
        let kubeconfig = api.kubeconfig();
        let (child, admin, (port, tls_port, base)) = spawn_ready(|attempt| {
            let (port, tls_port, admin_port) = (free_port(), free_port(), free_port());
            let base = std::env::temp_dir().join(format!(
                "hitless-ingress-{tag}-{}-{port}-{attempt}.yaml",
                std::process::id()
            ));
            // Public ports 80 and 443, as behind the shipped Service: what Gateways name.
            let mut listener = format!("{{bind: \"127.0.0.1:{port}\", public_port: 80}}");
            if let Some(tls) = tls {
                listener.push_str(&format!(
                    ", {{bind: \"127.0.0.1:{tls_port}\", public_port: 443, tls: {tls}}}"
                ));
            }
            std::fs::write(
                &base,
                format!(
                    "listeners: [{listener}]\nadmin: {{bind: \"127.0.0.1:{admin_port}\"}}\naccess_log: false\nroutes:\n  - name: fallback\n    respond: {{status: 404, body: \"no ingress\"}}\n"
                ),
            )
            .unwrap();
            let mut args: Vec<String> = vec![
                "ingress".into(),
                "--config".into(),
                base.to_string_lossy().into_owned(),
                "--kubeconfig".into(),
                kubeconfig.to_string_lossy().into_owned(),
            ];
            match namespace {
                Some(namespace) => args.extend(["--namespace".into(), namespace.to_string()]),
                // The Lease stays where this server keeps Leases (the pod's namespace).
                None => args.extend(["--lease-namespace".into(), NAMESPACE.to_string()]),
            }
            args.extend(extra.iter().map(|a| a.to_string()));
            let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
            (args, admin, (port, tls_port, base))
        })
        .await;
        Controller {
            proxy: format!("127.0.0.1:{port}").parse().unwrap(),
            tls_proxy: tls.map(|_| format!("127.0.0.1:{tls_port}").parse().unwrap()),
            admin,
            base,
            child,
        }
    }
}

/// Poll `host` + `path` through hitless until the body is `want` (bounded: 20 s).
pub async fn until(client: &Client, proxy: SocketAddr, host: &str, path: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..400 {
        let answer = get(client, proxy, host, path).await;
        if answer.body == want {
            return;
        }
        last = format!("{} {}", answer.status, answer.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{host}{path}: wanted {want:?}, last {last:?}");
}

/// Poll until `check` holds (bounded: 30 s).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

/// A `kubernetes.io/tls` Secret in `shop`.
pub fn tls_secret(name: &str, cert: &str, key: &str) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"kind": "Secret", "apiVersion": "v1", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "shop"},
        "data": {"tls.crt": b64(cert), "tls.key": b64(key)}})
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to `addr` naming `sni`, trusting `ca`, and the certificate it was shown;
/// `None` when the certificate shown is not valid for `sni`.
pub async fn handshake(
    ca: &TestCa,
    addr: SocketAddr,
    sni: &'static str,
) -> Option<(TlsStream, Vec<u8>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(sni).unwrap(), tcp)
        .await
        .ok()?;
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Some((tls, shown))
}

/// Handshake naming `sni` until the certificate shown is `want` (bounded: 20 s).
pub async fn until_shown(ca: &TestCa, addr: SocketAddr, sni: &'static str, want: &[u8]) {
    for _ in 0..400 {
        if handshake(ca, addr, sni)
            .await
            .is_some_and(|(_, shown)| shown == want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{sni}: the wanted certificate is never served");
}

/// One GET over an established TLS connection; the body.
pub async fn get_over(tls: TlsStream, host: &str, path: &str) -> String {
    use http_body_util::BodyExt;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            http::Request::get(path)
                .header("host", host)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
