//! Controller mode (`hitless ingress`) against a local HTTP server speaking the Kubernetes
//! list/watch protocol (there is no API server here; `support/kube_api.rs`): the binary routes
//! by the cluster's Ingresses of its class, applies each change as a reload, ignores other
//! classes, leaves a broken Ingress out alone, drops no request at 1,000 requests/s while
//! Ingresses and pods change, serves TLS Secrets and their rotations, and writes statuses and
//! Events once, from the replica holding the Lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::kube_api::{
    eventually, get_over, handshake, service, slice, tls_secret, until, until_shown, Controller,
    KubeApi as Api,
};
use support::*;

fn ingress(name: &str, class: &str, host: &str, paths: &[(&str, &str)]) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, service)| json!({"path": path, "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}))
        .collect();
    json!({"kind": "Ingress", "apiVersion": "networking.k8s.io/v1", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": paths}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_clusters_ingresses_of_the_class() {
    let web = named_upstream("web").await;
    let api_app = named_upstream("api").await;
    let api = Api::start(false).await;
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

    let hitless = Controller::start(&api, "base", None, &[]).await;
    let proxy = hitless.proxy;
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
    let api = Api::start(false).await;
    api.apply(service("web"));
    api.apply(web_slice("web-a", web.addr.port()));
    api.apply(ingress("shop", "hitless", "demo.local", &[("/", "web")]));
    let hitless = Controller::start(&api, "load", None, &[]).await;
    let proxy = hitless.proxy;
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
    assert!(
        report.requests() as f64 >= RATE * 4.0 * 0.85,
        "not production load: {}",
        report.summary()
    );
    assert_eq!(report.errors(), 0, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_are_served_by_sni_and_a_rotation_reaches_new_connections() {
    let web = named_upstream("web").await;
    let ca = TestCa::new();
    let dir = std::env::temp_dir().join(format!("hitless-ingress-tls-{}", std::process::id()));
    let secrets = dir.join("secrets");

    let api = Api::start(false).await;
    api.apply(service("web"));
    api.apply(slice("web", web.addr.port()));
    let (first, first_key) = ca.leaf(&["shop.example.com"]);
    api.apply(tls_secret(
        "shop-tls",
        &first.pem(),
        &first_key.serialize_pem(),
    ));
    let mut shop = ingress("shop", "hitless", "shop.example.com", &[("/", "web")]);
    shop["spec"]["tls"] = json!([{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]);
    api.apply(shop);

    // As k8s/ingress ships it: a TLS listener with only a certificate made at start.
    let hitless = Controller::start(
        &api,
        "tls",
        Some("{self_signed: true}"),
        &["--secrets-dir", secrets.to_str().unwrap()],
    )
    .await;
    // The Secret's certificate for its host (verified against the CA by the client).
    let tls_proxy = hitless.tls_proxy.unwrap();
    until_shown(&ca, tls_proxy, "shop.example.com", first.der()).await;
    // Other names get the self-signed default (which a CA-verifying client refuses).
    assert!(handshake(&ca, tls_proxy, "other.test").await.is_none());
    let (open, _) = handshake(&ca, tls_proxy, "shop.example.com").await.unwrap();

    // Rotation: the Secret's content changes (cert-manager renewing it).
    let (second, second_key) = ca.leaf(&["shop.example.com"]);
    api.apply(tls_secret(
        "shop-tls",
        &second.pem(),
        &second_key.serialize_pem(),
    ));
    until_shown(&ca, tls_proxy, "shop.example.com", second.der()).await;
    // The connection made before the rotation keeps working.
    assert_eq!(get_over(open, "shop.example.com", "/").await, "web");
    // Plain HTTP for a host with TLS: 308 to https (ingress-nginx's ssl-redirect default).
    let moved = get(&client(), hitless.proxy, "shop.example.com", "/cart?x=1").await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        "https://shop.example.com/cart?x=1"
    );
    // The first certificate's files are gone; the second's remain (two files).
    let files: Vec<_> = std::fs::read_dir(&secrets).unwrap().flatten().collect();
    assert_eq!(files.len(), 2, "{files:?}");
    drop(hitless);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_events_are_written_once_by_the_leader() {
    let web = named_upstream("web").await;
    let api = Api::start(false).await;
    api.apply(service("web"));
    api.apply(slice("web", web.addr.port()));
    let mut shop = ingress("shop", "hitless", "shop.example.com", &[("/", "web")]);
    // No equivalent in hitless: reported as an Event on the Ingress.
    shop["metadata"]["annotations"] = json!({"nginx.ingress.kubernetes.io/affinity": "cookie"});
    api.apply(shop);
    let args = ["--publish-address", "203.0.113.7", "--lease-duration", "4s"];
    let one = Controller::start(&api, "one", None, &args).await;
    let two = Controller::start(&api, "two", None, &args).await;
    let client = client();
    until(&client, one.proxy, "shop.example.com", "/", "web").await;
    until(&client, two.proxy, "shop.example.com", "/", "web").await;
    eventually("the Ingress shows the address", || {
        api.get("Ingress", "shop")
            .and_then(|i| i.pointer("/status/loadBalancer/ingress/0/ip").cloned())
            == Some(json!("203.0.113.7"))
    })
    .await;
    let affinity_events = || {
        let state = api.state.lock().unwrap();
        state
            .events
            .iter()
            .filter(|e| {
                e["regarding"]["name"] == "shop"
                    && e["note"].as_str().is_some_and(|n| n.contains("affinity"))
            })
            .count()
    };
    eventually("the Event about affinity", || affinity_events() >= 1).await;

    // Both replicas take a later change; by then each has had its chance to write.
    api.apply(ingress(
        "shop",
        "hitless",
        "shop.example.com",
        &[("/", "web"), ("/later", "web")],
    ));
    until(&client, one.proxy, "shop.example.com", "/later", "web").await;
    until(&client, two.proxy, "shop.example.com", "/later", "web").await;
    let (patches, holder) = {
        let state = api.state.lock().unwrap();
        let patches = state
            .status_patches
            .iter()
            .filter(|(kind, name, _)| kind == "Ingress" && name == "shop")
            .count();
        let holder = state.leases["hitless-ingress-hitless"]["spec"]["holderIdentity"]
            .as_str()
            .unwrap()
            .to_string();
        (patches, holder)
    };
    assert_eq!(patches, 1, "the status is written once, by one replica");
    assert_eq!(affinity_events(), 1, "the Event is published once");

    // The leader dies without releasing the Lease: the other takes over once it expires, and
    // writes the status of an Ingress created after.
    let (mut leader, follower) = if holder.ends_with(&format!("_{}", one.child.child.id())) {
        (one, two)
    } else {
        (two, one)
    };
    leader.child.child.kill().unwrap();
    api.apply(ingress(
        "late",
        "hitless",
        "late.example.com",
        &[("/", "web")],
    ));
    until(&client, follower.proxy, "late.example.com", "/", "web").await;
    eventually("the new leader writes the new Ingress's status", || {
        api.get("Ingress", "late")
            .and_then(|i| i.pointer("/status/loadBalancer/ingress/0/ip").cloned())
            == Some(json!("203.0.113.7"))
    })
    .await;
    let _ = follower.admin;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_with_two_hosts_and_three_path_types_routes_as_the_spec_says() {
    let web = named_upstream("web").await;
    let api_app = named_upstream("api").await;
    let api = Api::start(false).await;
    for (name, server) in [("web", &web), ("api", &api_app)] {
        api.apply(service(name));
        api.apply(slice(name, server.addr.port()));
    }
    let path = |path: &str, kind: &str, service: &str| {
        json!({"path": path, "pathType": kind,
            "backend": {"service": {"name": service, "port": {"number": 80}}}})
    };
    api.apply(
        json!({"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
        "metadata": {"name": "paths", "namespace": "shop"},
        "spec": {"ingressClassName": "hitless", "rules": [
            {"host": "a.example.com", "http": {"paths": [
                path("/foo", "Prefix", "web"),
                path("/exact", "Exact", "api"),
                path("/impl", "ImplementationSpecific", "api"),
            ]}},
            {"host": "b.example.com", "http": {"paths": [path("/", "Prefix", "api")]}},
        ]}}),
    );
    let hitless = Controller::start(&api, "paths", None, &[]).await;
    let client = client();
    until(&client, hitless.proxy, "a.example.com", "/foo", "web").await;
    for (host, target, want) in [
        // Prefix matches by path segment: /foo and /foo/bar, never /foobar.
        ("a.example.com", "/foo/bar", "web"),
        ("a.example.com", "/foo/", "web"),
        ("a.example.com", "/foobar", "no ingress"),
        // Exact: that path only.
        ("a.example.com", "/exact", "api"),
        ("a.example.com", "/exact/x", "no ingress"),
        // ImplementationSpecific: a prefix, as ingress-nginx reads it.
        ("a.example.com", "/impl/x", "api"),
        // The other host; and a host no rule names.
        ("b.example.com", "/anything", "api"),
        ("B.Example.com:8080", "/", "api"),
        ("c.example.com", "/foo", "no ingress"),
    ] {
        let answer = get(&client, hitless.proxy, host, target).await;
        assert_eq!(answer.body, want, "{host}{target}");
    }
}
