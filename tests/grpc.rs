//! A real gRPC server and client (tonic, with tonic-health's generated service) through
//! hitless over h2c: unary calls, a server stream, status codes passing through unchanged,
//! and the client library seeing UNAVAILABLE (not an HTTP error) when no backend is up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

#[path = "support/grpc.rs"]
mod grpc_support;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn client_through(proxy: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn grpc_config(backend: SocketAddr) -> String {
    format!("backends:\n  app: {{protocol: grpc, endpoints: [\"{backend}\"], hold_timeout: 0s}}\nroutes:\n  - backend: app\n")
}

#[tokio::test]
async fn unary_stream_and_status_codes_pass_through() {
    let (backend, reporter) = grpc_support::health_server().await;
    let app = start_proxy(&grpc_config(backend)).await;
    let mut client = client_through(app.traffic_addrs[0]).await;

    let serving = client
        .check(HealthCheckRequest {
            service: "shop.Cart".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);

    // An application error status, with its message, unchanged.
    let missing = client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // A server stream: the first status, then an update pushed while the stream is open.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "shop.Cart".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
}

#[tokio::test]
async fn no_backend_up_is_unavailable_to_the_grpc_client() {
    let dead = refused_addr().await;
    let app = start_proxy(&grpc_config(dead)).await;
    let mut client = client_through(app.traffic_addrs[0]).await;
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("connect_refused"), "{status:?}");
}

#[tokio::test]
async fn active_checks_speak_the_grpc_health_protocol() {
    let (backend, reporter) = grpc_support::health_server().await;
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::NotServing)
        .await;
    let config = grpc_config(backend).replace(
        "hold_timeout: 0s}",
        "hold_timeout: 0s, health_check: {grpc_service: shop.Cart, interval: 100ms, timeout: 100ms}}",
    );
    let app = start_proxy(&config).await;
    let unready = "hitless_backend_endpoints_unready{backend=\"app\"}";
    let wait_for = |n: f64| {
        let admin = app.admin_addr;
        async move {
            for _ in 0..100 {
                let page = admin_get(admin, "/metrics").await.body;
                if metric(&page, unready) == Some(n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{unready} never became {n}");
        }
    };
    // NOT_SERVING: the endpoint takes no traffic; the client library sees UNAVAILABLE.
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for(1.0).await;
    let mut client = client_through(app.traffic_addrs[0]).await;
    let status = client
        .check(HealthCheckRequest {
            service: "shop.Cart".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // SERVING: in after one pass.
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    wait_for(0.0).await;
    let ok = client
        .check(HealthCheckRequest {
            service: "shop.Cart".into(),
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().status, ServingStatus::Serving as i32);
}
