//! EndpointSlice discovery against a local HTTP server that speaks the Kubernetes list/watch
//! protocol (there is no API server here): a list with a resourceVersion, a chunked watch
//! stream of ADDED/MODIFIED/DELETED/BOOKMARK events, an ERROR 410 (resourceVersion expired)
//! that forces a relist, and a watch connection cut mid-stream. hitless reaches it through a
//! kubeconfig file with a bearer token, as kube-rs does against a real cluster.
//!
//! The endpoint rule is checked on an EndpointSliceList shaped like the API server's answer in
//! the middle of a rollout (tests/fixtures/endpointslices-rollout.json).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use support::*;

use hitless::config::discovery::PortRef;
use hitless::discovery::kubernetes::select;

type ApiBody = BoxBody<Bytes, std::io::Error>;

/// What a watch stream carries next: an event line, or the connection cut.
enum Push {
    Line(Bytes),
    Cut,
}

#[derive(Default)]
struct ApiState {
    rv: u64,
    slices: BTreeMap<String, Value>,
    watchers: Vec<tokio::sync::mpsc::UnboundedSender<Push>>,
    lists: usize,
    /// Query strings of the watch requests, in order.
    watches: Vec<String>,
    authorization: Vec<String>,
}

struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<ApiState>>,
    /// Lists wait until this is true (to observe hitless before its first sync).
    open: tokio::sync::watch::Sender<bool>,
}

impl FakeApi {
    async fn start(slices: Vec<Value>) -> FakeApi {
        FakeApi::start_with(slices, None).await
    }

    /// Over HTTPS with `tls` (as every real API server), or plain HTTP.
    async fn start_with(slices: Vec<Value>, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ApiState {
            rv: 1000,
            ..Default::default()
        }));
        let api = FakeApi {
            addr,
            state: Arc::clone(&state),
            open: tokio::sync::watch::channel(true).0,
        };
        for slice in slices {
            api.apply(slice);
        }
        let open = api.open.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (state, open, tls) = (Arc::clone(&state), open.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (state, open) = (Arc::clone(&state), open.clone());
                        async move { Ok::<_, Infallible>(answer(req, state, open).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                    };
                });
            }
        });
        api
    }

    fn broadcast(state: &mut ApiState, event: Value) {
        let line = Bytes::from(format!("{event}\n"));
        state
            .watchers
            .retain(|w| w.send(Push::Line(line.clone())).is_ok());
    }

    /// Create or update a slice (a new resourceVersion), told to open watches.
    fn apply(&self, mut slice: Value) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        slice["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if state.slices.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.slices.insert(name, slice.clone());
        Self::broadcast(&mut state, json!({"type": kind, "object": slice}));
    }

    /// Change a slice without telling any watch (only a relist will show it).
    fn apply_unseen(&self, mut slice: Value) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        slice["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        state.slices.insert(name, slice);
    }

    fn delete(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let mut slice = state.slices.remove(name).unwrap();
        slice["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        Self::broadcast(&mut state, json!({"type": "DELETED", "object": slice}));
    }

    /// A BOOKMARK event: the watch is current up to this resourceVersion.
    fn bookmark(&self) -> String {
        let mut state = self.state.lock().unwrap();
        state.rv += 1;
        let rv = state.rv.to_string();
        Self::broadcast(
            &mut state,
            json!({"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"resourceVersion": rv}}}),
        );
        rv
    }

    /// Cut every watch connection mid-stream (no final chunk).
    fn cut_watches(&self) {
        let mut state = self.state.lock().unwrap();
        for w in state.watchers.drain(..) {
            let _ = w.send(Push::Cut);
        }
    }

    /// Tell every watch its resourceVersion expired (ERROR 410 Gone), as an API server does
    /// after etcd compaction, and end the streams.
    fn expire_watches(&self) {
        let mut state = self.state.lock().unwrap();
        let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 1001 (1042)", "reason": "Expired", "code": 410}});
        Self::broadcast(&mut state, status);
        state.watchers.clear();
    }

    fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }

    fn watches(&self) -> Vec<String> {
        self.state.lock().unwrap().watches.clone()
    }

    /// Wait (bounded: 15 s, the watcher backs off after errors) for watch request `n`.
    async fn wait_watch(&self, n: usize) -> String {
        for _ in 0..300 {
            if let Some(q) = self.watches().get(n - 1) {
                return q.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("watch request {n} never came: {:?}", self.watches());
    }

    fn kubeconfig(&self, name: &str) -> std::path::PathBuf {
        self.kubeconfig_with(name, "server: http://", "")
    }

    /// A kubeconfig for this server; `scheme` is `server: http://` or `server: https://`,
    /// `extra` more cluster settings (`certificate-authority: ...`).
    fn kubeconfig_with(&self, name: &str, scheme: &str, extra: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "hitless-kubeconfig-{}-{name}.yaml",
            std::process::id()
        ));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    {scheme}{}\n{extra}contexts:\n- name: fake\n  context: {{cluster: fake, user: tester, namespace: shop}}\ncurrent-context: fake\nusers:\n- name: tester\n  user: {{token: test-token}}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    state: Arc<Mutex<ApiState>>,
    mut open: tokio::sync::watch::Receiver<bool>,
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
    if path != "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
        || !query.contains("labelSelector=kubernetes.io%2Fservice-name%3Dcart")
    {
        return json_response(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{path}?{query}")}),
        );
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if query.contains("watch=true") {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let mut state = state.lock().unwrap();
            state.authorization.push(auth);
            state.watches.push(query);
            state.watchers.push(tx);
        }
        let lines = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await? {
                Push::Line(line) => Some((Ok(Frame::data(line)), rx)),
                Push::Cut => Some((Err(std::io::Error::other("cut")), rx)),
            }
        });
        return http::Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(lines)))
            .unwrap();
    }
    let _ = open.wait_for(|open| *open).await;
    let mut state = state.lock().unwrap();
    state.lists += 1;
    state.authorization.push(auth);
    let items: Vec<Value> = state.slices.values().cloned().collect();
    json_response(
        200,
        json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    )
}

/// An EndpointSlice of Service `cart` with port `http` = `port` and endpoints
/// (ip, ready, serving, terminating).
fn slice(name: &str, port: u16, endpoints: &[(&str, bool, bool, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready, serving, terminating)| {
            json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}, "nodeName": "worker-1", "targetRef": {"kind": "Pod", "name": format!("cart-{ip}"), "namespace": "shop"}})
        })
        .collect();
    json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "addressType": "IPv4",
        "metadata": {"name": name, "namespace": "shop", "generateName": "cart-", "labels": {"kubernetes.io/service-name": "cart", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "endpoints": endpoints,
        "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}, {"name": "http", "port": port, "protocol": "TCP"}]
    })
}

fn config(api: &FakeApi, name: &str) -> String {
    config_with(&api.kubeconfig(name))
}

fn config_with(kubeconfig: &std::path::Path) -> String {
    format!(
        "backends:\n  cart:\n    discovery:\n      kubernetes: {{service: cart, port: http, kubeconfig: \"{}\"}}\n    hold_timeout: 2s\nroutes:\n  - backend: cart\n",
        kubeconfig.display()
    )
}

/// Wait until the endpoint set changed `n` times in all.
async fn wait_updates(app: &hitless::app::App, n: f64) {
    let series = "hitless_discovery_updates_total{backend=\"cart\"}";
    wait_metric(app.admin_addr, series, n).await;
}

/// Which pods answer `n` requests (any non-200 fails the test).
async fn answering(c: &Client, proxy: SocketAddr, n: usize) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let answer = get(c, proxy, "cart", "/").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        seen.insert(answer.body);
    }
    seen.into_iter().collect()
}

/// Requests in a loop until `stop`; returns every status.
fn background_load(
    c: &Client,
    proxy: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<u16>> {
    let c = c.clone();
    tokio::spawn(async move {
        let mut statuses = Vec::new();
        while !stop.is_cancelled() {
            statuses.push(get(&c, proxy, "cart", "/").await.status);
        }
        statuses
    })
}

#[test]
fn the_endpoint_rule_on_a_real_rollout_list() {
    let list: Value =
        serde_json::from_str(include_str!("fixtures/endpointslices-rollout.json")).unwrap();
    let slices: Vec<EndpointSlice> = serde_json::from_value(list["items"].clone()).unwrap();
    let addrs = |v: Vec<SocketAddr>| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    // Ready endpoints only (the terminating and the not-ready pod are out), in both slices,
    // both address families, on the named port whatever its place in each slice.
    let http = Some(PortRef::Name("http".into()));
    let mut ready = addrs(select(&slices, http.as_ref()));
    ready.sort();
    assert_eq!(
        ready,
        [
            "10.244.1.17:8080",
            "10.244.1.52:8080",
            "[fd00:10:244:1::11]:8080"
        ]
    );
    // By number.
    let metrics = select(&slices, Some(&PortRef::Number(9090)));
    assert_eq!(metrics.len(), 3);
    // Two ports and none named: nothing (the config must say which).
    assert!(select(&slices, None).is_empty());
    // No ready endpoint left: the serving, terminating one takes requests (kube-proxy's
    // fallback); the not-ready, not-serving one never does.
    let mut draining: Vec<EndpointSlice> = slices.clone();
    for s in &mut draining {
        for e in s.endpoints.iter_mut().flatten() {
            if let Some(c) = e.conditions.as_mut() {
                if c.ready == Some(true) {
                    c.ready = Some(false);
                    c.serving = Some(false);
                }
            }
        }
    }
    assert_eq!(
        addrs(select(&draining, http.as_ref())),
        ["10.244.2.33:8080"]
    );
    // Unset conditions mean ready.
    for s in &mut draining {
        for e in s.endpoints.iter_mut().flatten() {
            e.conditions = None;
        }
    }
    assert_eq!(select(&draining, http.as_ref()).len(), 5);
}

#[tokio::test]
async fn endpoints_follow_the_slices_through_a_rollout_without_a_failed_request() {
    let (port, _pods) = pods(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]).await;
    let api = FakeApi::start(vec![slice(
        "cart-a",
        port,
        &[("127.0.0.1", true, true, false)],
    )])
    .await;
    api.open.send_replace(false);
    let app = start_proxy(&config(&api, "rollout")).await;

    // Not ready until the first list is in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readyz = admin_get(app.admin_addr, "/readyz").await;
    assert_eq!(readyz.status, 503);
    assert!(readyz.body.contains("discovery"), "{}", readyz.body);
    api.open.send_replace(true);
    wait_ready(app.admin_addr).await;
    assert_eq!(
        api.state.lock().unwrap().authorization[0],
        "Bearer test-token",
        "the kubeconfig's credentials are used"
    );

    let c = client();
    let proxy = app.traffic_addrs[0];
    assert_eq!(answering(&c, proxy, 10).await, ["127.0.0.1"]);
    let stop = tokio_util::sync::CancellationToken::new();
    let load = background_load(&c, proxy, stop.clone());

    // A request in flight on .1 when .1 starts terminating: it finishes there.
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, proxy, "cart", "/slow").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.apply(slice(
        "cart-a",
        port,
        &[
            ("127.0.0.1", false, true, true),
            ("127.0.0.2", true, true, false),
        ],
    ));
    wait_updates(&app, 2.0).await;
    assert_eq!(
        answering(&c, proxy, 20).await,
        ["127.0.0.2"],
        "no new request to a terminating pod"
    );
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, "127.0.0.1"));

    // .2 goes away and .1 still drains: with no ready endpoint, the serving one answers.
    api.apply(slice("cart-a", port, &[("127.0.0.1", false, true, true)]));
    wait_updates(&app, 3.0).await;
    assert_eq!(answering(&c, proxy, 10).await, ["127.0.0.1"]);

    // A new slice with a ready pod, then the old slice deleted.
    api.apply(slice("cart-b", port, &[("127.0.0.3", true, true, false)]));
    wait_updates(&app, 4.0).await;
    assert_eq!(answering(&c, proxy, 10).await, ["127.0.0.3"]);
    api.delete("cart-a");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(answering(&c, proxy, 10).await, ["127.0.0.3"]);

    stop.cancel();
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 20, "{}", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(api.lists(), 1, "one list, then only watch events");
}

#[tokio::test]
async fn the_watch_survives_bookmarks_a_410_and_a_cut_connection() {
    let (port, _pods) = pods(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]).await;
    let api = FakeApi::start(vec![slice(
        "cart-a",
        port,
        &[("127.0.0.1", true, true, false)],
    )])
    .await;
    let app = start_proxy(&config(&api, "recover")).await;
    wait_ready(app.admin_addr).await;
    let first = api.wait_watch(1).await;
    assert!(first.contains("allowWatchBookmarks=true"), "{first}");
    let c = client();
    let proxy = app.traffic_addrs[0];
    let stop = tokio_util::sync::CancellationToken::new();
    let load = background_load(&c, proxy, stop.clone());

    // A bookmark moves the resourceVersion on; after a cut connection the watch resumes
    // from it, without a new list.
    let bookmark = api.bookmark();
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.cut_watches();
    let second = api.wait_watch(2).await;
    assert!(
        second.contains(&format!("resourceVersion={bookmark}")),
        "resumed from the bookmark {bookmark}: {second}"
    );
    assert_eq!(api.lists(), 1);
    api.apply(slice(
        "cart-a",
        port,
        &[
            ("127.0.0.1", true, true, false),
            ("127.0.0.2", true, true, false),
        ],
    ));
    wait_updates(&app, 2.0).await;
    assert_eq!(answering(&c, proxy, 40).await, ["127.0.0.1", "127.0.0.2"]);

    // 410 Gone: the watcher lists again. A change made while nobody watched shows up then.
    api.apply_unseen(slice(
        "cart-a",
        port,
        &[
            ("127.0.0.2", true, true, false),
            ("127.0.0.3", true, true, false),
        ],
    ));
    let started = Instant::now();
    api.expire_watches();
    wait_updates(&app, 3.0).await;
    assert_eq!(api.lists(), 2, "a relist after 410");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(answering(&c, proxy, 40).await, ["127.0.0.2", "127.0.0.3"]);
    let errors = metric(
        &admin_get(app.admin_addr, "/metrics").await.body,
        "hitless_discovery_errors_total{backend=\"cart\"}",
    );
    assert!(errors >= Some(1.0), "the 410 is counted: {errors:?}");

    stop.cancel();
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test]
async fn an_unreachable_api_server_keeps_hitless_unready() {
    let dead = refused_addr().await;
    let api = FakeApi {
        addr: dead,
        state: Default::default(),
        open: tokio::sync::watch::channel(true).0,
    };
    let app = start_proxy(&config(&api, "unreachable")).await;
    let errors = "hitless_discovery_errors_total{backend=\"cart\"}";
    wait_metric(app.admin_addr, errors, 1.0).await;
    assert_eq!(admin_get(app.admin_addr, "/readyz").await.status, 503);
    // Requests meanwhile get a named 503, not a hang.
    let answer = get(&client(), app.traffic_addrs[0], "cart", "/").await;
    assert_eq!(answer.status, 503);
    assert!(
        answer.header("proxy-status").contains("no_endpoints")
            || answer
                .header("proxy-status")
                .contains("no_healthy_endpoints"),
        "{}",
        answer.header("proxy-status")
    );
}

#[tokio::test]
async fn the_api_server_is_reached_over_https_with_the_kubeconfig_ca() {
    // A CA and a serving certificate for 127.0.0.1, as a cluster's API server has.
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let ca_file = std::env::temp_dir().join(format!("hitless-k8s-ca-{}.crt", std::process::id()));
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let (port, _pods) = pods(&["127.0.0.1"]).await;
    let api = FakeApi::start_with(
        vec![slice("cart-a", port, &[("127.0.0.1", true, true, false)])],
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
    )
    .await;
    let kubeconfig = api.kubeconfig_with(
        "https",
        "server: https://",
        &format!("    certificate-authority: {}\n", ca_file.display()),
    );
    let app = start_proxy(&config_with(&kubeconfig)).await;
    wait_ready(app.admin_addr).await;
    assert_eq!(
        answering(&client(), app.traffic_addrs[0], 5).await,
        ["127.0.0.1"]
    );
    assert_eq!(api.lists(), 1);
}
