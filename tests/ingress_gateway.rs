//! Controller mode with Gateway API objects and ingress-nginx annotations, against the local
//! list/watch server (`support/kube_api.rs`): HTTPRoutes and GRPCRoutes attached to a Gateway
//! of hitless's GatewayClass route; the others are left to their controllers; an HTTPRoute whose
//! `backendRequest` timeout exceeds `request` is rejected alone with a condition saying why; a
//! missing Service shows in `ResolvedRefs`; the Gateway and its class say they are served.
//! Annotations change what they name: `backend-protocol: GRPC` reaches a tonic server,
//! `proxy-next-upstream-tries: 1` turns retries off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

#[path = "support/grpc.rs"]
mod grpc_support;
mod support;

use std::net::SocketAddr;

use serde_json::{json, Value};
use support::kube_api::{
    eventually, get_over, handshake, service, slice, tls_secret, until, until_shown, Controller,
    KubeApi as Api,
};
use support::*;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn gateway_class(name: &str, controller: &str) -> Value {
    json!({"kind": "GatewayClass", "apiVersion": "gateway.networking.k8s.io/v1",
        "metadata": {"name": name}, "spec": {"controllerName": controller}})
}

fn gateway(name: &str, class: &str) -> Value {
    json!({"kind": "Gateway", "apiVersion": "gateway.networking.k8s.io/v1",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"gatewayClassName": class, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
}

/// An HTTPRoute on Gateway `parent`: `path` (a prefix) on gw.example.com to `service`.
fn http_route(name: &str, parent: &str, path: &str, service: &str) -> Value {
    json!({"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"parentRefs": [{"name": parent}], "hostnames": ["gw.example.com"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [{"name": service, "port": 80}]}]}})
}

/// A health check of `shop.Cart` through `proxy`, sent with `authority` (`None`: when it
/// fails).
async fn health_through(proxy: SocketAddr, authority: &str) -> Option<i32> {
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
        .connect()
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "shop.Cart".into(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status)
}

/// `health_through` until it is answered (bounded: 5 s): the controller applies the objects
/// in the background.
async fn health_until_served(proxy: SocketAddr, authority: &str) -> Option<i32> {
    for _ in 0..100 {
        if let Some(status) = health_through(proxy, authority).await {
            return Some(status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

/// The condition `kind` of the first parent status hitless wrote on route `name`.
fn route_condition(api: &Api, kind: &str, name: &str, condition: &str) -> Option<Value> {
    let route = api.get(kind, name)?;
    let parents = route.pointer("/status/parents")?.as_array()?;
    let ours = parents
        .iter()
        .find(|p| p["controllerName"] == "hitless.dev/gateway")?;
    ours["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_of_our_gateways_are_served_and_their_status_says_what_was_done() {
    let web = named_upstream("web").await;
    let (grpc, _health) = grpc_support::health_server().await;
    let api = Api::start(true).await;
    api.apply(service("web"));
    api.apply(slice("web", web.addr.port()));
    api.apply(json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"ports": [{"name": "grpc", "port": 50051, "targetPort": 50051}]}}));
    api.apply(json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4",
        "metadata": {"name": "cart-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "cart"}},
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "grpc", "port": grpc.port(), "protocol": "TCP"}]}));
    api.apply(gateway_class("hitless", "hitless.dev/gateway"));
    api.apply(gateway_class("other", "example.com/other"));
    api.apply(gateway("web", "hitless"));
    api.apply(gateway("theirs", "other"));
    let mut store = http_route("store", "web", "/store", "web");
    store["spec"]["rules"][0]["timeouts"] = json!({"request": "10s", "backendRequest": "2s"});
    api.apply(store);
    // Gateway API: a backendRequest timeout longer than the request's makes the route invalid.
    let mut slow = http_route("slow", "web", "/slow", "web");
    slow["spec"]["rules"][0]["timeouts"] = json!({"request": "1s", "backendRequest": "5s"});
    api.apply(slow);
    api.apply(http_route("foreign", "theirs", "/foreign", "web"));
    // A Service of another namespace: refused (no ReferenceGrant is read), the rule answers 500.
    let mut stealer = http_route("stealer", "web", "/steal", "web");
    stealer["spec"]["rules"][0]["backendRefs"][0]["namespace"] = json!("kube-system");
    api.apply(stealer);
    // A Gateway whose listener serves one hostname: a route claiming another is not attached;
    // a route naming none is served for the listener's only.
    let mut tenant = gateway("tenant", "hitless");
    tenant["spec"]["listeners"][0]["hostname"] = json!("tenant.example.com");
    api.apply(tenant);
    api.apply(http_route("hijack", "tenant", "/hijack", "web"));
    let mut own = http_route("own", "tenant", "/own", "web");
    own["spec"].as_object_mut().unwrap().remove("hostnames");
    api.apply(own);
    api.apply(http_route("missing", "web", "/missing", "nope"));
    api.apply(
        json!({"kind": "GRPCRoute", "apiVersion": "gateway.networking.k8s.io/v1",
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "web"}], "hostnames": ["grpc.example.com"],
            "rules": [{"matches": [{"method": {"service": "grpc.health.v1.Health"}}],
                "backendRefs": [{"name": "cart", "port": 50051}]}]}}),
    );

    let hitless =
        Controller::start(&api, "gateway", None, &["--publish-address", "203.0.113.7"]).await;
    let client = client();
    until(
        &client,
        hitless.proxy,
        "gw.example.com",
        "/store/items",
        "web",
    )
    .await;
    // gRPC to an h2c backend, chosen by the GRPCRoute's service.
    let status = health_until_served(hitless.proxy, "grpc.example.com").await;
    assert_eq!(status, Some(ServingStatus::Serving as i32));
    let stolen = get(&client, hitless.proxy, "gw.example.com", "/steal").await;
    assert_eq!(stolen.status, 500, "{}", stolen.body);
    assert_eq!(
        get(&client, hitless.proxy, "tenant.example.com", "/own")
            .await
            .body,
        "web"
    );
    // The rejected route, the other class's, the hijacker's and `own` on another host: the
    // file's fallback.
    for (host, path) in [
        ("gw.example.com", "/own"),
        ("gw.example.com", "/hijack"),
        ("tenant.example.com", "/hijack"),
    ] {
        let answer = get(&client, hitless.proxy, host, path).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (404, "no ingress"),
            "{host}{path}"
        );
    }
    for path in ["/slow", "/foreign"] {
        let answer = get(&client, hitless.proxy, "gw.example.com", path).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (404, "no ingress"),
            "{path}"
        );
    }

    eventually("the statuses are written", || {
        route_condition(&api, "HTTPRoute", "slow", "Accepted").is_some()
            && api
                .get("Gateway", "web")
                .is_some_and(|g| g.pointer("/status/listeners/0/attachedRoutes").is_some())
    })
    .await;
    let accepted = route_condition(&api, "HTTPRoute", "store", "Accepted").unwrap();
    assert_eq!(
        (accepted["status"].as_str(), accepted["reason"].as_str()),
        (Some("True"), Some("Accepted"))
    );
    let resolved = route_condition(&api, "HTTPRoute", "store", "ResolvedRefs").unwrap();
    assert_eq!(resolved["status"], "True");
    let rejected = route_condition(&api, "HTTPRoute", "slow", "Accepted").unwrap();
    assert_eq!(
        (rejected["status"].as_str(), rejected["reason"].as_str()),
        (Some("False"), Some("UnsupportedValue"))
    );
    assert!(
        rejected["message"]
            .as_str()
            .unwrap()
            .contains("backendRequest"),
        "{rejected}"
    );
    let missing = route_condition(&api, "HTTPRoute", "missing", "ResolvedRefs").unwrap();
    assert_eq!(
        (missing["status"].as_str(), missing["reason"].as_str()),
        (Some("False"), Some("BackendNotFound"))
    );
    let refused = route_condition(&api, "HTTPRoute", "stealer", "ResolvedRefs").unwrap();
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        (Some("False"), Some("RefNotPermitted"))
    );
    let hijack = route_condition(&api, "HTTPRoute", "hijack", "Accepted").unwrap();
    assert_eq!(
        (hijack["status"].as_str(), hijack["reason"].as_str()),
        (Some("False"), Some("NoMatchingListenerHostname"))
    );
    let grpc_accepted = route_condition(&api, "GRPCRoute", "cart", "Accepted").unwrap();
    assert_eq!(grpc_accepted["status"], "True");
    // Another controller's route: hitless writes nothing on it.
    assert!(api
        .get("HTTPRoute", "foreign")
        .unwrap()
        .get("status")
        .is_none());

    let web_gateway = api.get("Gateway", "web").unwrap();
    let condition = |name: &str| {
        web_gateway["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == name)
            .map(|c| c["status"].clone())
    };
    assert_eq!(condition("Accepted"), Some(json!("True")));
    assert_eq!(condition("Programmed"), Some(json!("True")));
    // store, missing, stealer and cart; not the rejected one.
    assert_eq!(web_gateway["status"]["listeners"][0]["attachedRoutes"], 4);
    assert_eq!(
        web_gateway["status"]["addresses"][0]["value"],
        "203.0.113.7"
    );
    assert!(api
        .get("Gateway", "theirs")
        .unwrap()
        .get("status")
        .is_none());
    let class = api.get("GatewayClass", "hitless").unwrap();
    assert_eq!(class["status"]["conditions"][0]["status"], "True");
    assert!(api
        .get("GatewayClass", "other")
        .unwrap()
        .get("status")
        .is_none());
    // The rejection is an Event on the route, for `kubectl describe` (written after the
    // statuses).
    eventually("an Event says why the route was rejected", || {
        let state = api.state.lock().unwrap();
        state
            .events
            .iter()
            .any(|e| e["regarding"]["name"] == "slow" && e["reason"] == "Rejected")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_change_what_they_name() {
    let (grpc, _health) = grpc_support::health_server().await;
    let web = named_upstream("web").await;
    let refused = refused_addr().await;
    let api = Api::start(false).await;
    // `cart`: a gRPC server behind a port named plainly `http`, so only the annotation can say
    // it speaks gRPC.
    api.apply(service("cart"));
    api.apply(slice("cart", grpc.port()));
    // `flaky-1` and `flaky-2`: each one live pod and one whose port refuses connections (two
    // slices, two ports); two Services, so that what one learns the other does not.
    for flaky in ["flaky-1", "flaky-2"] {
        api.apply(service(flaky));
        for (suffix, port) in [("a", web.addr.port()), ("b", refused.port())] {
            api.apply(json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4",
                "metadata": {"name": format!("{flaky}-{suffix}"), "namespace": "shop", "labels": {"kubernetes.io/service-name": flaky}},
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}));
        }
    }
    let ingress = |name: &str, host: &str, service: &str, annotations: Value| {
        json!({"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
            "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
            "spec": {"ingressClassName": "hitless", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
    };
    api.apply(ingress(
        "cart",
        "grpc.example.com",
        "cart",
        json!({"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"}),
    ));
    api.apply(ingress(
        "retried",
        "retried.example.com",
        "flaky-1",
        json!({}),
    ));
    // `slow`: answers after 3 s; `proxy-read-timeout: "1"` gives up on it after 1 s (504).
    let slow_pod = upstream(|_req| async {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        http::Response::new(full("late"))
    })
    .await;
    api.apply(service("slow"));
    api.apply(slice("slow", slow_pod.addr.port()));
    api.apply(ingress(
        "slow",
        "slow.example.com",
        "slow",
        json!({"nginx.ingress.kubernetes.io/proxy-read-timeout": "1",
               "nginx.ingress.kubernetes.io/proxy-next-upstream": "off"}),
    ));
    api.apply(ingress(
        "once",
        "once.example.com",
        "flaky-2",
        json!({"nginx.ingress.kubernetes.io/proxy-next-upstream-tries": "1"}),
    ));
    // TLS (ssl-redirect's default), the rewrite idiom and a header canary, to an echoing pod.
    let echo = echo_upstream().await;
    let canary_pod = named_upstream("canary").await;
    api.apply(service("echo"));
    api.apply(slice("echo", echo.addr.port()));
    api.apply(service("canary"));
    api.apply(slice("canary", canary_pod.addr.port()));
    let mut docs = ingress(
        "docs",
        "docs.example.com",
        "echo",
        json!({"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}),
    );
    docs["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/docs(/|$)(.*)");
    docs["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("ImplementationSpecific");
    docs["spec"]["tls"] = json!([{"hosts": ["docs.example.com"], "secretName": "docs-tls"}]);
    api.apply(docs);
    let mut canary = ingress(
        "docs-canary",
        "docs.example.com",
        "canary",
        json!({"nginx.ingress.kubernetes.io/canary": "true",
               "nginx.ingress.kubernetes.io/canary-by-header": "x-canary"}),
    );
    canary["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("/docs(/|$)(.*)");
    canary["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("ImplementationSpecific");
    api.apply(canary);
    // A TLS listener: without one, redirects to https are not applied.
    let dir = std::env::temp_dir().join(format!("hitless-annotations-{}", std::process::id()));
    let secrets = dir.join("secrets");
    let hitless = Controller::start(
        &api,
        "annotations",
        Some("{self_signed: true}"),
        &["--secrets-dir", secrets.to_str().unwrap()],
    )
    .await;
    let client = client();
    let status = health_until_served(hitless.proxy, "grpc.example.com").await;
    assert_eq!(
        status,
        Some(ServingStatus::Serving as i32),
        "backend-protocol: GRPC"
    );

    // Without the annotation a refused connect is retried on the live pod: no error. With
    // `proxy-next-upstream-tries: 1` the first request that lands on the refusing pod fails.
    let mut failed = (0, 0);
    for _ in 0..40 {
        if get(&client, hitless.proxy, "retried.example.com", "/")
            .await
            .status
            != 200
        {
            failed.0 += 1;
        }
        if get(&client, hitless.proxy, "once.example.com", "/")
            .await
            .status
            != 200
        {
            failed.1 += 1;
        }
    }
    assert_eq!(failed.0, 0, "retries on: no request fails");
    assert!(
        failed.1 >= 1,
        "tries 1: the refusing pod's first request fails"
    );

    // proxy-read-timeout: hitless answers 504 with its cause instead of waiting for the 3 s
    // answer.
    let timed_out = get(&client, hitless.proxy, "slow.example.com", "/").await;
    assert_eq!(timed_out.status, 504, "{}", timed_out.body);
    assert!(timed_out
        .header("proxy-status")
        .contains("http_response_timeout"));

    // spec.tls: plain HTTP gets 308 to https (this listener is plain).
    let moved = get(&client, hitless.proxy, "docs.example.com", "/docs/a?b=1").await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        "https://docs.example.com/docs/a?b=1"
    );
    // A header canary (same host and path as its main Ingress): `x-canary: always` goes to
    // the canary's Service, other requests to the main one.
    let asked = |canary: bool| {
        let mut request = http::Request::get(format!("http://{}/docs/x", hitless.proxy))
            .header("host", "docs.example.com")
            .header("x-forwarded-proto", "https");
        if canary {
            request = request.header("x-canary", "always");
        }
        request.body(Default::default()).unwrap()
    };
    // ssl-redirect: "false" lets plain HTTP through, rewritten by the idiom.
    let mut docs = api.get("Ingress", "docs").unwrap();
    docs["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] = json!("false");
    api.apply(docs);
    let mut echoed = String::new();
    for _ in 0..200 {
        echoed = get(
            &client,
            hitless.proxy,
            "docs.example.com",
            "/docs/guide/x?b=1",
        )
        .await
        .body;
        if echoed.starts_with("GET ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(echoed.starts_with("GET /guide/x?b=1 "), "{echoed}");
    let canary = send(&client, asked(true)).await;
    assert_eq!(canary.body, "canary");
    assert!(send(&client, asked(false))
        .await
        .body
        .starts_with("GET /x "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_weights_matches_and_filters_take_effect() {
    let v1 = named_upstream("v1").await;
    let v2 = named_upstream("v2").await;
    let echo = echo_upstream().await;
    let api = Api::start(true).await;
    for (name, server) in [("v1", &v1), ("v2", &v2), ("echo", &echo)] {
        api.apply(service(name));
        api.apply(slice(name, server.addr.port()));
    }
    api.apply(gateway_class("hitless", "hitless.dev/gateway"));
    api.apply(gateway("web", "hitless"));
    api.apply(json!({"kind": "HTTPRoute", "apiVersion": "gateway.networking.k8s.io/v1",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "web"}], "hostnames": ["gw.example.com"], "rules": [
            // 90/10 between two Services.
            {"matches": [{"path": {"type": "PathPrefix", "value": "/split"}}],
             "backendRefs": [{"name": "v1", "port": 80, "weight": 90}, {"name": "v2", "port": 80, "weight": 10}]},
            // A header match sends testers to v2; the rest of /beta goes to v1.
            {"matches": [{"path": {"type": "PathPrefix", "value": "/beta"}, "headers": [{"name": "x-tester", "value": "yes"}]}],
             "backendRefs": [{"name": "v2", "port": 80}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/beta"}}],
             "backendRefs": [{"name": "v1", "port": 80}]},
            // Header changes and a prefix rewrite, seen by an echoing upstream.
            {"matches": [{"path": {"type": "PathPrefix", "value": "/echo"}}],
             "filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-team", "value": "shop"}], "remove": ["x-secret"]}},
                {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
             "backendRefs": [{"name": "echo", "port": 80}]},
            // A redirect.
            {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
             "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}
        ]}}));
    let hitless = Controller::start(&api, "routes", None, &[]).await;
    let client = client();
    until(&client, hitless.proxy, "gw.example.com", "/beta", "v1").await;

    // 2,000 requests: v2's share is binomial(2000, 0.1), mean 200, sd 13.4; bounds at 6 sd.
    let mut v2_count = 0;
    for _ in 0..2000 {
        let answer = get(&client, hitless.proxy, "gw.example.com", "/split/x").await;
        assert_eq!(answer.status, 200);
        if answer.body == "v2" {
            v2_count += 1;
        }
    }
    assert!(
        (120..=280).contains(&v2_count),
        "v2 took {v2_count} of 2000"
    );

    let tester = http::Request::get(format!("http://{}/beta/x", hitless.proxy))
        .header("host", "gw.example.com")
        .header("x-tester", "yes")
        .body(Default::default())
        .unwrap();
    assert_eq!(send(&client, tester).await.body, "v2");

    let echoed = send(
        &client,
        http::Request::get(format!("http://{}/echo/a/b?q=1", hitless.proxy))
            .header("host", "gw.example.com")
            .header("x-secret", "s3cret")
            .body(Default::default())
            .unwrap(),
    )
    .await
    .body;
    assert!(echoed.starts_with("GET /a/b?q=1 "), "{echoed}");
    assert!(echoed.contains("x-team: shop\n"), "{echoed}");
    assert!(!echoed.contains("s3cret"), "{echoed}");

    let moved = get(&client, hitless.proxy, "gw.example.com", "/old/page?x=1").await;
    assert_eq!(moved.status, 301);
    assert_eq!(
        moved.header("location"),
        "https://gw.example.com/old/page?x=1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_takes_routes_from_the_namespaces_its_selector_selects() {
    let web = named_upstream("web").await;
    let api = Api::start(true).await;
    api.apply(service("web"));
    api.apply(slice("web", web.addr.port()));
    api.apply(gateway_class("hitless", "hitless.dev/gateway"));
    // The shared-gateway pattern: routes from namespaces labelled for it.
    let mut shared = gateway("shared", "hitless");
    shared["spec"]["listeners"][0]["allowedRoutes"] = json!({"namespaces": {"from": "Selector",
        "selector": {"matchLabels": {"gateway-access": "yes"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["sandbox"]}]}}});
    api.apply(shared);
    api.apply(json!({"kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": "shop", "labels": {"env": "prod"}}}));
    api.apply(http_route("labelled", "shared", "/labelled", "web"));

    let hitless = Controller::start(&api, "selector", None, &[]).await;
    let client = client();
    eventually(
        "the route's status says the selector does not select its namespace",
        || {
            route_condition(&api, "HTTPRoute", "labelled", "Accepted")
                .is_some_and(|c| c["reason"] == "NotAllowedByListeners")
        },
    )
    .await;
    let refused = route_condition(&api, "HTTPRoute", "labelled", "Accepted").unwrap();
    assert_eq!(refused["status"], "False");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("does not select namespace shop"),
        "{refused}"
    );
    let answer = get(&client, hitless.proxy, "gw.example.com", "/labelled").await;
    assert_eq!((answer.status, answer.body.as_str()), (404, "no ingress"));

    // Labelling the namespace attaches the route: one reload, no restart.
    api.apply(json!({"kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": "shop", "labels": {"env": "prod", "gateway-access": "yes"}}}));
    until(&client, hitless.proxy, "gw.example.com", "/labelled", "web").await;
    eventually("the route is accepted", || {
        route_condition(&api, "HTTPRoute", "labelled", "Accepted")
            .is_some_and(|c| c["status"] == "True")
    })
    .await;

    // A label the expressions exclude detaches it again.
    api.apply(json!({"kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": "shop", "labels": {"env": "sandbox", "gateway-access": "yes"}}}));
    until(
        &client,
        hitless.proxy,
        "gw.example.com",
        "/labelled",
        "no ingress",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_hitless_cannot_serve_say_so_in_their_status() {
    let web = named_upstream("web").await;
    let api = Api::start(true).await;
    api.apply(service("web"));
    api.apply(slice("web", web.addr.port()));
    api.apply(gateway_class("hitless", "hitless.dev/gateway"));
    let mut mixed = gateway("mixed", "hitless");
    mixed["spec"]["listeners"] = json!([
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "secure", "port": 443, "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "missing-cert"}]}},
        {"name": "raw", "port": 5432, "protocol": "TCP"},
        {"name": "alt", "port": 8081, "protocol": "HTTP"}
    ]);
    api.apply(mixed);
    api.apply(http_route("web", "mixed", "/web", "web"));
    let mut on_tcp = http_route("on-tcp", "mixed", "/tcp", "web");
    on_tcp["spec"]["parentRefs"][0]["sectionName"] = json!("raw");
    api.apply(on_tcp);
    let mut on_alt = http_route("on-alt", "mixed", "/alt", "web");
    on_alt["spec"]["parentRefs"][0]["sectionName"] = json!("alt");
    api.apply(on_alt);

    // No TLS listener in this controller's config, and only public port 80.
    let hitless = Controller::start(&api, "listeners", None, &[]).await;
    let client = client();
    until(&client, hitless.proxy, "gw.example.com", "/web", "web").await;
    eventually("the listeners' statuses are written", || {
        api.get("Gateway", "mixed")
            .is_some_and(|g| g.pointer("/status/listeners/3").is_some())
    })
    .await;
    let gateway = api.get("Gateway", "mixed").unwrap();
    let listener = |name: &str| {
        gateway["status"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .cloned()
            .unwrap()
    };
    let condition = |l: &Value, kind: &str| {
        l["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap()
    };
    let http = listener("http");
    assert_eq!(condition(&http, "Programmed")["status"], "True");
    // `web` (no sectionName) counts on the listener that takes it only.
    assert_eq!(http["attachedRoutes"], 1, "{http}");
    let raw = listener("raw");
    assert_eq!(condition(&raw, "Accepted")["reason"], "UnsupportedProtocol");
    assert_eq!(condition(&raw, "Programmed")["status"], "False");
    assert_eq!(raw["attachedRoutes"], 0);
    // HTTPS on 443, where hitless has no listener (none with TLS in this config).
    let secure = listener("secure");
    let accepted = condition(&secure, "Accepted");
    assert_eq!(accepted["status"], "False", "{secure}");
    assert_eq!(accepted["reason"], "PortUnavailable");
    assert!(accepted["message"]
        .as_str()
        .unwrap()
        .contains("no listener on port 443"));
    assert_eq!(secure["attachedRoutes"], 0);
    // A port hitless does not listen on: not served, and the route on it is not either.
    let alt = listener("alt");
    assert_eq!(condition(&alt, "Accepted")["reason"], "PortUnavailable");
    assert_eq!(condition(&alt, "Programmed")["status"], "False");
    let answer = get(&client, hitless.proxy, "gw.example.com", "/alt").await;
    assert_eq!((answer.status, answer.body.as_str()), (404, "no ingress"));
    eventually("the unserved listener's route status", || {
        route_condition(&api, "HTTPRoute", "on-alt", "Accepted").is_some_and(|c| {
            c["reason"] == "NotAllowedByListeners"
                && c["message"].as_str().unwrap().contains("port 8081")
        })
    })
    .await;
    // The Gateway is accepted (a listener can be served), and says some cannot.
    let accepted = gateway["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .cloned()
        .unwrap();
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&json!("True"), &json!("ListenersNotValid"))
    );
    // A route attached only to the TCP listener is not served, and says why.
    let answer = get(&client, hitless.proxy, "gw.example.com", "/tcp").await;
    assert_eq!((answer.status, answer.body.as_str()), (404, "no ingress"));
    eventually("the TCP-only route's status", || {
        route_condition(&api, "HTTPRoute", "on-tcp", "Accepted")
            .is_some_and(|c| c["reason"] == "NotAllowedByListeners")
    })
    .await;
}

/// A Gateway's listener ports pick hitless's listeners (by `public_port`: 80 plain, 443 TLS
/// here): a route attached to the HTTPS listener is served on the TLS listener only, with the
/// certificate that listener names; a route attached to both is served on each for the
/// hostnames that listener takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_ports_choose_where_routes_are_served() {
    let web = named_upstream("web").await;
    let app = named_upstream("app").await;
    let ca = TestCa::new();
    let api = Api::start(true).await;
    for (name, upstream) in [("web", &web), ("app", &app)] {
        api.apply(service(name));
        api.apply(slice(name, upstream.addr.port()));
    }
    let (cert, key) = ca.leaf(&["secure.example.com"]);
    api.apply(tls_secret("secure-tls", &cert.pem(), &key.serialize_pem()));
    api.apply(gateway_class("hitless", "hitless.dev/gateway"));
    let mut edge = gateway("edge", "hitless");
    edge["spec"]["listeners"] = json!([
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "secure.example.com",
            "tls": {"certificateRefs": [{"name": "secure-tls"}]}}
    ]);
    api.apply(edge);
    // On the HTTPS listener only.
    let mut app_route = http_route("app", "edge", "/app", "app");
    app_route["spec"]["hostnames"] = json!([]);
    app_route["spec"]["parentRefs"][0]["sectionName"] = json!("https");
    api.apply(app_route);
    // On both: any host on port 80, secure.example.com only on 443.
    let mut web_route = http_route("web", "edge", "/web", "web");
    web_route["spec"]["hostnames"] = json!([]);
    api.apply(web_route);

    let hitless = Controller::start(&api, "ports", Some("{self_signed: true}"), &[]).await;
    let client = client();
    until(&client, hitless.proxy, "other.example.com", "/web", "web").await;
    let tls_proxy = hitless.tls_proxy.unwrap();
    // The listener's certificate, on the TLS listener (verified against the CA).
    until_shown(&ca, tls_proxy, "secure.example.com", cert.der()).await;
    let ca = &ca;
    let over_tls = |path: &'static str| async move {
        let (tls, _) = handshake(ca, tls_proxy, "secure.example.com")
            .await
            .unwrap();
        get_over(tls, "secure.example.com", path).await
    };
    assert_eq!(over_tls("/app").await, "app");
    assert_eq!(over_tls("/web").await, "web");
    // Not on the plain listener: the HTTPS listener's route is not served on port 80.
    let plain = get(&client, hitless.proxy, "secure.example.com", "/app").await;
    assert_eq!((plain.status, plain.body.as_str()), (404, "no ingress"));
    let plain = get(&client, hitless.proxy, "secure.example.com", "/web").await;
    assert_eq!(plain.body, "web");
    // Each listener counts the routes it takes.
    let gateway = api.get("Gateway", "edge").unwrap();
    let attached: Vec<i64> = gateway["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["attachedRoutes"].as_i64().unwrap())
        .collect();
    assert_eq!(attached, [1, 2], "{gateway}");
}

/// In `namespace`: `object` moved there.
fn in_namespace(mut object: Value, namespace: &str) -> Value {
    object["metadata"]["namespace"] = json!(namespace);
    object
}

/// A ReferenceGrant in `namespace` letting `from_kind` objects of `shop` refer to `to_kind`
/// objects (named `to_name`, or all).
fn reference_grant(
    namespace: &str,
    from_kind: &str,
    to_kind: &str,
    to_name: Option<&str>,
) -> Value {
    let mut to = json!({"group": "", "kind": to_kind});
    if let Some(name) = to_name {
        to["name"] = json!(name);
    }
    json!({"kind": "ReferenceGrant", "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "metadata": {"name": format!("from-shop-{}", from_kind.to_lowercase()), "namespace": namespace},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": from_kind, "namespace": "shop"}],
                 "to": [to]}})
}

/// References into another namespace hold only while a ReferenceGrant there allows them: a
/// route's Service (the rule answers the spec's 500 without one, and its status says
/// `RefNotPermitted`), and a Gateway listener's certificate Secret. The controller watches
/// every namespace, as shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_grants_open_other_namespaces_and_their_removal_closes_them() {
    let catalog = named_upstream("catalog").await;
    let users = named_upstream("users").await;
    let ca = TestCa::new();
    let api = Api::start(true).await;
    for (name, upstream) in [("catalog", &catalog), ("users", &users)] {
        api.apply(in_namespace(service(name), "data"));
        api.apply(in_namespace(slice(name, upstream.addr.port()), "data"));
    }
    let (cert, key) = ca.leaf(&["gw.example.com"]);
    api.apply(in_namespace(
        tls_secret("edge-tls", &cert.pem(), &key.serialize_pem()),
        "certs",
    ));
    api.apply(gateway_class("hitless", "hitless.dev/gateway"));
    let mut edge = gateway("edge", "hitless");
    edge["spec"]["listeners"] = json!([
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "https", "port": 443, "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "edge-tls", "namespace": "certs"}]}}
    ]);
    api.apply(edge);
    let mut route = http_route("shop", "edge", "/catalog", "catalog");
    route["spec"]["rules"][0]["backendRefs"][0]["namespace"] = json!("data");
    route["spec"]["rules"].as_array_mut().unwrap().push(
        json!({"matches": [{"path": {"type": "PathPrefix", "value": "/users"}}],
            "backendRefs": [{"name": "users", "namespace": "data", "port": 80}]}),
    );
    api.apply(route);

    let hitless =
        Controller::start_in(&api, "grants", Some("{self_signed: true}"), &[], None).await;
    let client = client();
    let tls_proxy = hitless.tls_proxy.unwrap();
    // No grant: refused, said in the route's and the listener's status.
    until(
        &client,
        hitless.proxy,
        "gw.example.com",
        "/catalog",
        "no usable backend for this route\n",
    )
    .await;
    eventually("RefNotPermitted on the route", || {
        route_condition(&api, "HTTPRoute", "shop", "ResolvedRefs")
            .is_some_and(|c| c["reason"] == "RefNotPermitted")
    })
    .await;
    let listener_refs = |api: &Api| {
        let gateway = api.get("Gateway", "edge")?;
        let https = gateway["status"]["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == "https")?
            .clone();
        https["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .cloned()
    };
    eventually("RefNotPermitted on the listener", || {
        listener_refs(&api).is_some_and(|c| c["reason"] == "RefNotPermitted")
    })
    .await;
    assert!(
        handshake(&ca, tls_proxy, "gw.example.com").await.is_none(),
        "the other namespace's certificate is not served"
    );

    // The grants: the route's Service (that one only) and the Gateway's Secrets.
    api.apply(reference_grant(
        "data",
        "HTTPRoute",
        "Service",
        Some("catalog"),
    ));
    api.apply(reference_grant("certs", "Gateway", "Secret", None));
    until(
        &client,
        hitless.proxy,
        "gw.example.com",
        "/catalog",
        "catalog",
    )
    .await;
    until_shown(&ca, tls_proxy, "gw.example.com", cert.der()).await;
    let (tls, _) = handshake(&ca, tls_proxy, "gw.example.com").await.unwrap();
    assert_eq!(get_over(tls, "gw.example.com", "/catalog").await, "catalog");
    let not_granted = get(&client, hitless.proxy, "gw.example.com", "/users").await;
    assert_eq!(not_granted.status, 500, "a Service the grant does not name");
    eventually("the listener's reference resolves", || {
        listener_refs(&api).is_some_and(|c| c["status"] == "True")
    })
    .await;

    // Revoked: closed again.
    api.delete_in("ReferenceGrant", "data", "from-shop-httproute");
    until(
        &client,
        hitless.proxy,
        "gw.example.com",
        "/catalog",
        "no usable backend for this route\n",
    )
    .await;
}
