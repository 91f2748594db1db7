//! Controller mode (`hitless ingress`) against a local HTTP server speaking the Kubernetes
//! list/watch protocol for Ingresses, Services and EndpointSlices (there is no API server
//! here): the binary routes by the cluster's Ingresses of its class, applies each change as a
//! reload, ignores other classes, leaves a broken Ingress out alone, and drops no request at
//! 1,000 requests/s while Ingresses and pods change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::*;

type ApiBody = BoxBody<Bytes, std::io::Error>;

const COLLECTIONS: [(&str, &str, &str); 3] = [
    (
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses",
        "IngressList",
        "networking.k8s.io/v1",
    ),
    ("/api/v1/namespaces/shop/services", "ServiceList", "v1"),
    (
        "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
        "EndpointSliceList",
        "discovery.k8s.io/v1",
    ),
];

#[derive(Default)]
struct State {
    rv: u64,
    /// Collection path -> name -> object.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// (collection, service-name label wanted, stream).
    watchers: Vec<(
        &'static str,
        Option<String>,
        tokio::sync::mpsc::UnboundedSender<Bytes>,
    )>,
    /// Status patches received.
    patches: usize,
}

struct Api {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn label(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/labels/kubernetes.io~1service-name")
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl Api {
    async fn start() -> Api {
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
                        async move { Ok::<_, Infallible>(answer(req, state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Api { addr, state }
    }

    fn collection(kind: &str) -> &'static str {
        match kind {
            "Ingress" => COLLECTIONS[0].0,
            "Service" => COLLECTIONS[1].0,
            _ => COLLECTIONS[2].0,
        }
    }

    fn apply(&self, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let collection = Self::collection(object["kind"].as_str().unwrap());
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if state
            .objects
            .entry(collection)
            .or_default()
            .contains_key(&name)
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state
            .objects
            .entry(collection)
            .or_default()
            .insert(name, object.clone());
        Self::broadcast(
            &mut state,
            collection,
            json!({"type": kind, "object": object}),
        );
    }

    fn delete(&self, kind: &str, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let collection = Self::collection(kind);
        let mut object = state
            .objects
            .entry(collection)
            .or_default()
            .remove(name)
            .unwrap();
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        Self::broadcast(
            &mut state,
            collection,
            json!({"type": "DELETED", "object": object}),
        );
    }

    fn broadcast(state: &mut State, collection: &str, event: Value) {
        let wanted = label(&event["object"]);
        let line = Bytes::from(format!("{event}\n"));
        state.watchers.retain(|(c, selector, tx)| {
            if *c != collection || (selector.is_some() && *selector != wanted) {
                return true;
            }
            tx.send(line.clone()).is_ok()
        });
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "hitless-ingress-kubeconfig-{}-{}.yaml",
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

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
) -> http::Response<ApiBody> {
    let json_response = |status: u16, body: Value| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(
                Full::new(Bytes::from(body.to_string()))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap()
    };
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    // The status subresource of an Ingress: a merge patch of `status`.
    if req.method() == http::Method::PATCH {
        let ingresses = COLLECTIONS[0].0;
        let name = path
            .strip_prefix(ingresses)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.strip_suffix("/status"))
            .unwrap_or_default()
            .to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let patch: Value = serde_json::from_slice(&body).unwrap();
        let mut state = state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv.to_string();
        let Some(object) = state.objects.entry(ingresses).or_default().get_mut(&name) else {
            return json_response(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            );
        };
        object["status"] = patch["status"].clone();
        object["metadata"]["resourceVersion"] = json!(rv);
        let object = object.clone();
        state.patches += 1;
        Api::broadcast(
            &mut state,
            ingresses,
            json!({"type": "MODIFIED", "object": object.clone()}),
        );
        return json_response(200, object);
    }
    let Some(&(collection, list_kind, api_version)) = COLLECTIONS.iter().find(|c| c.0 == path)
    else {
        return json_response(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": path}),
        );
    };
    let selector = query
        .split('&')
        .find_map(|p| p.strip_prefix("labelSelector=kubernetes.io%2Fservice-name%3D"))
        .map(str::to_string);
    let mut state = state.lock().unwrap();
    if query.contains("watch=true") {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        state.watchers.push((collection, selector, tx));
        let lines = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(Frame::data(line)), rx))
        });
        return http::Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(lines)))
            .unwrap();
    }
    let items: Vec<Value> = state
        .objects
        .get(collection)
        .map(|m| {
            m.values()
                .filter(|o| selector.is_none() || label(o) == selector)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    json_response(
        200,
        json!({"kind": list_kind, "apiVersion": api_version, "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    )
}

fn service(name: &str) -> Value {
    json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

fn slice(service: &str, port: u16) -> Value {
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4",
        "metadata": {"name": format!("{service}-abc"), "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]})
}

fn ingress(name: &str, class: &str, host: &str, paths: &[(&str, &str)]) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, service)| json!({"path": path, "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}))
        .collect();
    json!({"kind": "Ingress", "apiVersion": "networking.k8s.io/v1", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": paths}}]}})
}

/// Poll `host` + `path` through hitless until the body is `want` (bounded: 20 s).
async fn until(client: &Client, proxy: SocketAddr, host: &str, path: &str, want: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_clusters_ingresses_of_the_class() {
    let web = named_upstream("web").await;
    let api_app = named_upstream("api").await;
    let api = Api::start().await;
    for name in ["web", "api"] {
        api.apply(service(name));
    }
    api.apply(slice("web", web.addr.port()));
    api.apply(slice("api", api_app.addr.port()));
    api.apply(ingress(
        "shop",
        "hitless",
        "shop.example.com",
        &[("/", "web")],
    ));
    // Another controller's Ingress: not ours.
    api.apply(ingress(
        "theirs",
        "nginx",
        "theirs.example.com",
        &[("/", "web")],
    ));

    let (port, admin_port) = (free_port(), free_port());
    let base =
        std::env::temp_dir().join(format!("hitless-ingress-base-{}.yaml", std::process::id()));
    std::fs::write(
        &base,
        format!(
            "listeners: [{{bind: \"127.0.0.1:{port}\"}}]\nadmin: {{bind: \"127.0.0.1:{admin_port}\"}}\naccess_log: false\nroutes:\n  - name: fallback\n    respond: {{status: 404, body: \"no ingress\"}}\n"
        ),
    )
    .unwrap();
    let kubeconfig = api.kubeconfig();
    let _proxy = spawn_hitless(&[
        "ingress",
        "--config",
        base.to_str().unwrap(),
        "--namespace",
        "shop",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    let client = client();

    until(&client, proxy, "shop.example.com", "/", "web").await;
    assert_eq!(
        get(&client, proxy, "theirs.example.com", "/").await.body,
        "no ingress"
    );

    // A new path: applied as a reload, the old ones kept.
    api.apply(ingress(
        "shop",
        "hitless",
        "shop.example.com",
        &[("/", "web"), ("/api", "api")],
    ));
    until(&client, proxy, "shop.example.com", "/api/orders", "api").await;
    assert_eq!(
        get(&client, proxy, "shop.example.com", "/cart").await.body,
        "web"
    );

    // A broken Ingress (a host hitless cannot match) is left out alone; a good change after
    // it still applies.
    api.apply(ingress("broken", "hitless", "bad host!", &[("/", "web")]));
    api.apply(ingress(
        "more",
        "hitless",
        "more.example.com",
        &[("/", "api")],
    ));
    until(&client, proxy, "more.example.com", "/", "api").await;
    until(&client, proxy, "shop.example.com", "/api", "api").await;

    // Deleted: its routes go, the file's fallback answers.
    api.delete("Ingress", "more");
    until(&client, proxy, "more.example.com", "/", "no ingress").await;
    assert_eq!(
        get(&client, proxy, "shop.example.com", "/").await.body,
        "web"
    );
    std::fs::remove_file(&base).ok();
}

/// An EndpointSlice `name` of Service `web`: one pod on 127.0.0.1:`port`.
fn web_slice(name: &str, port: u16) -> Value {
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_changes_under_load_drop_nothing() {
    // 1,000 requests/s over 32 keep-alive connections while the cluster changes under them:
    // paths added and removed, Ingresses created and deleted, the backend's pods replaced.
    const RATE: f64 = 1000.0;
    let web = named_upstream("web").await;
    let web2 = named_upstream("web").await;
    let api = Api::start().await;
    api.apply(service("web"));
    api.apply(web_slice("web-a", web.addr.port()));
    api.apply(ingress("shop", "hitless", "demo.local", &[("/", "web")]));
    let (port, admin_port) = (free_port(), free_port());
    let base =
        std::env::temp_dir().join(format!("hitless-ingress-load-{}.yaml", std::process::id()));
    std::fs::write(
        &base,
        format!(
            "listeners: [{{bind: \"127.0.0.1:{port}\"}}]\nadmin: {{bind: \"127.0.0.1:{admin_port}\"}}\naccess_log: false\nroutes:\n  - name: fallback\n    respond: {{status: 404, body: \"no ingress\"}}\n"
        ),
    )
    .unwrap();
    let kubeconfig = api.kubeconfig();
    let _proxy = spawn_hitless(&[
        "ingress",
        "--config",
        base.to_str().unwrap(),
        "--namespace",
        "shop",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(format!("127.0.0.1:{admin_port}").parse().unwrap()).await;
    until(&client(), proxy, "demo.local", "/", "web").await;

    let load = hitless::demo::load::Load::paced(
        proxy,
        http::Method::GET,
        32,
        RATE,
        Duration::from_secs(4),
    );
    let running = tokio::spawn(load.run());
    for i in 0..8u16 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        match i % 4 {
            0 => api.apply(ingress(
                "shop",
                "hitless",
                "demo.local",
                &[("/", "web"), ("/extra", "web")],
            )),
            1 => api.apply(ingress("other", "hitless", "other.local", &[("/", "web")])),
            // The backend's pods replaced, as in a rollout: the new slice, then the old gone.
            2 if i < 4 => {
                api.apply(web_slice("web-b", web2.addr.port()));
                api.delete("EndpointSlice", "web-a");
            }
            2 => {
                api.apply(web_slice("web-a", web.addr.port()));
                api.delete("EndpointSlice", "web-b");
            }
            _ => api.delete("Ingress", "other"),
        }
    }
    let report = running.await.unwrap();
    std::fs::remove_file(&base).ok();
    assert!(
        report.requests() as f64 >= RATE * 4.0 * 0.85,
        "not production load: {}",
        report.summary()
    );
    assert_eq!(report.errors(), 0, "{}", report.summary());
}
