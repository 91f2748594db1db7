//! tonic client and server through hitless for every kind of call: unary, client stream,
//! bidirectional stream (server streams are in tests/grpc.rs), error statuses with their
//! metadata, request metadata, and deadlines. Run over h2c (client -> hitless -> backend in
//! plaintext HTTP/2) and over TLS (client -> TLS listener -> `grpcs` backend), with
//! certificates made in the test.
//!
//! The service is written by hand (no protoc here): a `Tally` service whose messages are one
//! prost-encoded integer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use support::*;
use tonic::codegen::{Body, BoxFuture, StdError};
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Num {
    #[prost(int64, tag = "1")]
    value: i64,
}

type NumStream = Pin<Box<dyn Stream<Item = Result<Num, Status>> + Send>>;

/// `/test.Tally/Sum` (client stream: the sum and, as metadata, the count),
/// `/test.Tally/Double` (bidirectional: each number doubled, as it arrives),
/// `/test.Tally/Fail` (unary: FAILED_PRECONDITION with metadata, echoing `x-tenant`),
/// `/test.Tally/Slow` (unary: answers after `value` ms with the `grpc-timeout` it was given).
#[derive(Clone)]
struct Tally;

impl tonic::server::NamedService for Tally {
    const NAME: &'static str = "test.Tally";
}

impl<B> tower::Service<http::Request<B>> for Tally
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Num, Num>::default());
        Box::pin(async move {
            let response = match req.uri().path() {
                "/test.Tally/Sum" => {
                    let sum = tower::service_fn(|req: Request<Streaming<Num>>| async move {
                        let mut stream = req.into_inner();
                        let (mut total, mut count) = (0, 0);
                        while let Some(n) = stream.message().await? {
                            total += n.value;
                            count += 1;
                        }
                        let mut response = Response::new(Num { value: total });
                        response
                            .metadata_mut()
                            .insert("x-count", MetadataValue::from(count));
                        Ok::<_, Status>(response)
                    });
                    grpc.client_streaming(sum, req).await
                }
                "/test.Tally/Double" => {
                    let double = tower::service_fn(|req: Request<Streaming<Num>>| async move {
                        let doubled = req
                            .into_inner()
                            .map(|n| n.map(|n| Num { value: n.value * 2 }));
                        Ok::<_, Status>(Response::new(Box::pin(doubled) as NumStream))
                    });
                    grpc.streaming(double, req).await
                }
                "/test.Tally/Fail" => {
                    let fail = tower::service_fn(|req: Request<Num>| async move {
                        let tenant = req.metadata().get("x-tenant").cloned();
                        let mut metadata = tonic::metadata::MetadataMap::new();
                        metadata.insert("x-reason", MetadataValue::from_static("locked"));
                        if let Some(tenant) = tenant {
                            metadata.insert("x-tenant", tenant);
                        }
                        Err::<Response<Num>, _>(Status::with_metadata(
                            Code::FailedPrecondition,
                            "cart 7 is locked",
                            metadata,
                        ))
                    });
                    grpc.unary(fail, req).await
                }
                "/test.Tally/Slow" => {
                    let slow = tower::service_fn(|req: Request<Num>| async move {
                        let timeout = req
                            .metadata()
                            .get("grpc-timeout")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_string();
                        let wait = req.into_inner().value as u64;
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        let mut response = Response::new(Num { value: 0 });
                        response.metadata_mut().insert(
                            "x-saw-timeout",
                            timeout.parse().unwrap_or(MetadataValue::from_static("?")),
                        );
                        Ok::<_, Status>(response)
                    });
                    grpc.unary(slow, req).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

/// The Tally service on 127.0.0.1:0, in plaintext or with `identity` as its certificate.
async fn tally_server(identity: Option<Identity>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = identity {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    tokio::spawn(
        builder
            .add_service(Tally)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

struct TallyClient(tonic::client::Grpc<Channel>);

impl TallyClient {
    async fn connect(endpoint: tonic::transport::Endpoint) -> Self {
        Self(tonic::client::Grpc::new(endpoint.connect().await.unwrap()))
    }

    async fn sum(&mut self, values: Vec<i64>) -> Result<Response<Num>, Status> {
        self.0.ready().await.unwrap();
        let stream = futures_util::stream::iter(values.into_iter().map(|value| Num { value }));
        self.0
            .client_streaming(
                Request::new(stream),
                PathAndQuery::from_static("/test.Tally/Sum"),
                ProstCodec::default(),
            )
            .await
    }

    async fn double(
        &mut self,
        outgoing: tokio::sync::mpsc::Receiver<Num>,
    ) -> Result<Response<Streaming<Num>>, Status> {
        self.0.ready().await.unwrap();
        let stream = futures_util::stream::unfold(outgoing, |mut rx| async move {
            rx.recv().await.map(|n| (n, rx))
        });
        self.0
            .streaming(
                Request::new(stream),
                PathAndQuery::from_static("/test.Tally/Double"),
                ProstCodec::default(),
            )
            .await
    }

    async fn unary(
        &mut self,
        method: &'static str,
        req: Request<Num>,
    ) -> Result<Response<Num>, Status> {
        self.0.ready().await.unwrap();
        self.0
            .unary(
                req,
                PathAndQuery::from_static(method),
                ProstCodec::default(),
            )
            .await
    }
}

/// Every kind of call the issue names, through whatever `client` is connected to.
async fn exercise(client: &mut TallyClient) {
    // Client stream: 1000 messages summed; response metadata passes.
    let response = client.sum((1..=1000).collect()).await.unwrap();
    assert_eq!(response.get_ref().value, 500_500);
    assert_eq!(response.metadata().get("x-count").unwrap(), "1000");

    // Bidirectional: each answer arrives before the next message is sent, so nothing in the
    // path waits for the request stream to end.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Num { value: 1 }).await.unwrap();
    let mut answers = client.double(rx).await.unwrap().into_inner();
    for value in 1..=20 {
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("the echo of a bidi message came back before the stream ended")
            .unwrap()
            .unwrap();
        assert_eq!(answer.value, value * 2);
        if value < 20 {
            tx.send(Num { value: value + 1 }).await.unwrap();
        }
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none(), "stream ends OK");

    // An application error: code, message and metadata unchanged; request metadata reached
    // the server.
    let mut req = Request::new(Num { value: 7 });
    req.metadata_mut()
        .insert("x-tenant", MetadataValue::from_static("acme"));
    let status = client.unary("/test.Tally/Fail", req).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "cart 7 is locked");
    assert_eq!(status.metadata().get("x-reason").unwrap(), "locked");
    assert_eq!(status.metadata().get("x-tenant").unwrap(), "acme");

    // Deadlines: the client's deadline reaches the server as grpc-timeout, and a call that
    // outlives it ends as DEADLINE_EXCEEDED for the client library.
    let mut req = Request::new(Num { value: 0 });
    req.set_timeout(Duration::from_secs(30));
    let answer = client.unary("/test.Tally/Slow", req).await.unwrap();
    let saw = answer
        .metadata()
        .get("x-saw-timeout")
        .unwrap()
        .to_str()
        .unwrap();
    assert_ne!(saw, "none", "grpc-timeout reached the server");

    // A call that outlives the route's request timeout (500 ms for /test.Tally/Slow, below
    // the client's own deadline) ends as DEADLINE_EXCEEDED for the client library, named.
    let mut req = Request::new(Num { value: 5_000 });
    req.set_timeout(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let status = client.unary("/test.Tally/Slow", req).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("request_timeout"), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the deadline ended the call"
    );
}

/// Routes for the Tally backend: /test.Tally/Slow with a 500 ms request timeout.
fn routes() -> &'static str {
    "routes:\n  - match: {path_prefix: /test.Tally/Slow}\n    backend: app\n    timeouts: {request: 500ms}\n  - backend: app\n"
}

#[tokio::test]
async fn every_kind_of_call_passes_over_h2c() {
    let backend = tally_server(None).await;
    let app = start_proxy(&format!(
        "backends:\n  app: {{protocol: grpc, endpoints: [\"{backend}\"], hold_timeout: 0s}}\n{}",
        routes()
    ))
    .await;
    let endpoint = Channel::from_shared(format!("http://{}", app.traffic_addrs[0])).unwrap();
    exercise(&mut TallyClient::connect(endpoint).await).await;
}

/// A CA and one `localhost` certificate, as PEM files in a fresh directory.
fn pki() -> (PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("hitless-grpc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["localhost"]);
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    (dir, ca.pem().into_bytes())
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[tokio::test]
async fn every_kind_of_call_passes_over_tls_both_ways() {
    let (dir, ca_pem) = pki();
    let f = |n: &str| dir.join(n).display().to_string();
    // The backend speaks gRPC over TLS only (its certificate is from the test CA).
    let backend = tally_server(Some(Identity::from_pem(
        read(&dir, "tls.crt"),
        read(&dir, "tls.key"),
    )))
    .await;
    let app = start_proxy(&format!(
        "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates: [{{cert: \"{}\", key: \"{}\"}}]\nbackends:\n  app:\n    protocol: grpcs\n    endpoints: [\"{backend}\"]\n    hold_timeout: 0s\n    tls: {{ca_file: \"{}\", server_name: localhost}}\n{}",
        f("tls.crt"),
        f("tls.key"),
        f("ca.crt"),
        routes(),
    ))
    .await;
    let endpoint = Channel::from_shared(format!("https://{}", app.traffic_addrs[0]))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )
        .unwrap();
    exercise(&mut TallyClient::connect(endpoint).await).await;
}
