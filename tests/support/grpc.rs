//! A real gRPC server for the tests that need one (included with `#[path]` by those only: tonic's
//! server is heavy to compile into every test binary).

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;

/// A gRPC server (tonic, with tonic-health's service) answering SERVING for `shop.Cart` while
/// the reporter returned is held.
pub async fn health_server() -> (SocketAddr, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (addr, reporter)
}
