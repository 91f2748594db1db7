//! TLS termination on a listener: certificates generated in the test (rcgen), a client that
//! trusts only the test CA, the certificate chosen by SNI, ALPN h2 and http/1.1, and
//! certificate errors named with their field at load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use support::*;
use tokio::net::TcpStream;

use hitless::app::{App, Listeners};
use hitless::config::Config;

struct Pki {
    dir: PathBuf,
    ca_der: rustls_pki_types::CertificateDer<'static>,
    ca: TestCa,
}

impl Pki {
    /// A new certificate for `host` from the same CA, written over the old files the way a
    /// Secret rotation does (new files renamed into place). Returns the new certificate.
    fn rotate(&self, host: &str) -> Vec<u8> {
        let (cert, key) = self.ca.leaf(&[host]);
        for (ext, text) in [("key", key.serialize_pem()), ("crt", cert.pem())] {
            let tmp = self.dir.join(format!("{host}.{ext}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.join(format!("{host}.{ext}"))).unwrap();
        }
        cert.der().to_vec()
    }
}

/// A CA and two leaf certificates (a.test, b.test) written as PEM files.
fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("hitless-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new();
    for (host, names) in [
        ("a.test", vec!["a.test"]),
        ("b.test", vec!["b.test", "*.b.test"]),
    ] {
        let (cert, key) = ca.leaf(&names);
        std::fs::write(dir.join(format!("{host}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{host}.key")), key.serialize_pem()).unwrap();
    }
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    Pki {
        dir,
        ca_der: ca.issuer.der().clone(),
        ca,
    }
}

fn tls_config(pki: &Pki, upstream: SocketAddr) -> String {
    let f = |n: &str| pki.dir.join(n).display().to_string();
    format!(
        "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{cert: \"{}\", key: \"{}\", server_names: [a.test]}}\n        - {{cert: \"{}\", key: \"{}\", server_names: [\"*.b.test\", b.test]}}\nbackends:\n  app: {{endpoints: [\"{upstream}\"]}}\nroutes:\n  - backend: app\n",
        f("a.test.crt"),
        f("a.test.key"),
        f("b.test.crt"),
        f("b.test.key"),
    )
}

async fn start(yaml: &str) -> App {
    let mut config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("config: {e}"));
    config.access_log = false;
    let listeners = Listeners {
        traffic: vec![tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()],
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    App::start(&config, listeners).unwrap()
}

async fn handshake(
    pki: &Pki,
    addr: SocketAddr,
    sni: &'static str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(sni).unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn sni_selects_the_certificate_and_alpn_selects_the_protocol() {
    let pki = pki("sni");
    let upstream = echo_upstream().await;
    let app = start(&tls_config(&pki, upstream.addr)).await;
    let addr = app.traffic_addrs[0];

    // HTTP/1.1 to a.test: the client verifies a.test's certificate against the test CA.
    let tls = handshake(&pki, addr, "a.test", b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            http::Request::get("/x")
                .header("host", "a.test")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("x-forwarded-proto: https"), "{text}");

    // HTTP/2 to a name under *.b.test: b's certificate (verification would fail otherwise).
    let tls = handshake(&pki, addr, "api.b.test", b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            http::Request::get("https://api.b.test/y")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
}

#[tokio::test]
async fn plaintext_on_a_tls_listener_fails_the_handshake_not_the_process() {
    let pki = pki("plain");
    let upstream = echo_upstream().await;
    let app = start(&tls_config(&pki, upstream.addr)).await;
    let mut s = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "no plaintext answer");
    // Still serving TLS afterwards.
    let _tls = handshake(&pki, app.traffic_addrs[0], "a.test", b"http/1.1").await;
}

#[test]
fn certificate_problems_name_the_field() {
    let pki = pki("errors");
    let yaml = format!(
        "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{cert: \"{}\", key: \"{}\"}}\n        - {{cert: /nonexistent.crt, key: /nonexistent.key}}\nroutes: [{{respond: {{status: 200}}}}]\n",
        pki.dir.join("a.test.crt").display(),
        pki.dir.join("b.test.key").display(),
    );
    let e = Config::from_yaml(&yaml).unwrap_err().to_string();
    assert!(
        e.contains("listeners[0].tls.certificates[0].key"),
        "mismatched key: {e}"
    );
    assert!(
        e.contains("listeners[0].tls.certificates[1].cert: cannot read /nonexistent.crt"),
        "{e}"
    );
}

/// A backend terminating TLS itself with `pki`'s b.test certificate (HTTP/1.1 and HTTP/2 by
/// ALPN), answering with the protocol version it saw.
async fn tls_backend(pki: &Pki) -> SocketAddr {
    tls_backend_with(pki, false, &[b"h2", b"http/1.1"]).await
}

async fn tls_backend_with(pki: &Pki, require_client_cert: bool, alpn: &[&[u8]]) -> SocketAddr {
    use hyper::service::service_fn;
    use rustls_pki_types::pem::PemObject;
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(pki.dir.join("b.test.crt"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki.dir.join("b.test.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let text = format!("tls backend {:?}", req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(full(text)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn backend_config(protocol: &str, backend: SocketAddr, ca: &std::path::Path, name: &str) -> String {
    format!(
        "backends:\n  app:\n    protocol: {protocol}\n    endpoints: [\"{backend}\"]\n    hold_timeout: 0s\n    tls: {{ca_file: \"{}\", server_name: {name}}}\nroutes:\n  - backend: app\n",
        ca.display()
    )
}

#[tokio::test]
async fn https_and_grpcs_backends_are_verified_against_the_configured_ca() {
    let certs = pki("backend");
    let backend = tls_backend(&certs).await;
    let h1_only = tls_backend_with(&certs, false, &[b"http/1.1"]).await;
    let c = client();
    // ALPN decides for https: HTTP/2 when the backend offers it, else HTTP/1.1.
    for (protocol, addr, version) in [
        ("https", backend, "HTTP/2.0"),
        ("https", h1_only, "HTTP/1.1"),
        ("grpcs", backend, "HTTP/2.0"),
    ] {
        let app = start_proxy(&backend_config(
            protocol,
            addr,
            &certs.dir.join("ca.crt"),
            "b.test",
        ))
        .await;
        for _ in 0..3 {
            let answer = get(&c, app.traffic_addrs[0], "shop", "/").await;
            assert_eq!(answer.status, 200, "{protocol}: {}", answer.body);
            assert_eq!(answer.body, format!("tls backend {version}"));
        }
    }
    // The wrong name: the certificate is for b.test.
    let app = start_proxy(&backend_config(
        "https",
        backend,
        &certs.dir.join("ca.crt"),
        "c.test",
    ))
    .await;
    let answer = get(&c, app.traffic_addrs[0], "shop", "/").await;
    assert_eq!(answer.status, 502);
    assert!(
        answer
            .header("proxy-status")
            .contains("error=tls_protocol_error"),
        "{}",
        answer.header("proxy-status")
    );
    assert!(answer.header("proxy-status").contains("tls_error"));
    // Another CA: not trusted.
    let other = pki("other-ca");
    let app = start_proxy(&backend_config(
        "https",
        backend,
        &other.dir.join("ca.crt"),
        "b.test",
    ))
    .await;
    let answer = get(&c, app.traffic_addrs[0], "shop", "/").await;
    assert_eq!(answer.status, 502);
    let ps = answer.header("proxy-status").to_string();
    assert!(
        ps.contains("tls_error") && ps.contains("invalid peer certificate"),
        "{ps}"
    );
}

#[tokio::test]
async fn an_https_backend_answering_in_plaintext_is_a_named_mismatch() {
    let certs = pki("plaintext-backend");
    let plain = raw_server(|mut stream| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 2048];
        let _ = tokio::time::timeout(std::time::Duration::from_millis(100), stream.read(&mut buf))
            .await;
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), stream.read(&mut buf))
            .await;
    })
    .await;
    let app = start_proxy(&backend_config(
        "https",
        plain.addr,
        &certs.dir.join("ca.crt"),
        "b.test",
    ))
    .await;
    let answer = get(&client(), app.traffic_addrs[0], "shop", "/").await;
    assert_eq!(answer.status, 502);
    let ps = answer.header("proxy-status").to_string();
    assert!(
        ps.contains("protocol_mismatch")
            && ps.contains("plaintext, not TLS")
            && ps.contains("protocol: http"),
        "{ps}"
    );
}

#[tokio::test]
async fn rotated_certificate_files_are_used_without_a_restart_or_a_dropped_connection() {
    let certs = pki("rotate");
    let upstream = echo_upstream().await;
    let app = start(&tls_config(&certs, upstream.addr)).await;
    let addr = app.traffic_addrs[0];
    let presented = |tls: &tokio_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    };
    // A connection open across the rotation.
    let before = handshake(&certs, addr, "a.test", b"http/1.1").await;
    let old_cert = presented(&before);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(before))
        .await
        .unwrap();
    tokio::spawn(conn);

    let new_cert = certs.rotate("a.test");
    assert_ne!(old_cert, new_cert);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tls = handshake(&certs, addr, "a.test", b"http/1.1").await;
        if presented(&tls) == new_cert {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new certificate not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The connection from before still works.
    let response = sender
        .send_request(
            http::Request::get("/still")
                .header("host", "a.test")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn mtls_backend_gets_the_client_certificate_and_insecure_skip_verify_skips() {
    let certs = pki("mtls");
    // A client certificate from the backend's CA.
    let (cert, key) = certs.ca.leaf(&["hitless.client"]);
    std::fs::write(certs.dir.join("client.crt"), cert.pem()).unwrap();
    std::fs::write(certs.dir.join("client.key"), key.serialize_pem()).unwrap();
    let backend = tls_backend_with(&certs, true, &[b"http/1.1"]).await;
    let base = backend_config("https", backend, &certs.dir.join("ca.crt"), "b.test");
    let with_cert = base.replace(
        "server_name: b.test}",
        &format!(
            "server_name: b.test, client_cert: \"{}\", client_key: \"{}\"}}",
            certs.dir.join("client.crt").display(),
            certs.dir.join("client.key").display()
        ),
    );
    let c = client();
    let app = start_proxy(&with_cert).await;
    let answer = get(&c, app.traffic_addrs[0], "shop", "/").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Without the client certificate the backend refuses.
    let app = start_proxy(&base).await;
    assert_eq!(get(&c, app.traffic_addrs[0], "shop", "/").await.status, 502);

    // insecure_skip_verify: a certificate from an unknown CA is accepted.
    let plain_backend = tls_backend(&certs).await;
    let other = pki("insecure-other");
    let insecure = backend_config("https", plain_backend, &other.dir.join("ca.crt"), "b.test")
        .replace(
            "server_name: b.test}",
            "server_name: b.test, insecure_skip_verify: true}",
        );
    let app = start_proxy(&insecure).await;
    assert_eq!(get(&c, app.traffic_addrs[0], "shop", "/").await.status, 200);
}

/// The handshake's error naming `sni`, as the client's verifier words it (`None`: it passed).
async fn handshake_error(pki: &Pki, addr: SocketAddr, sni: &'static str) -> Option<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(sni).unwrap(), tcp)
        .await
        .err()
        .map(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_self_signed_default_answers_names_no_certificate_serves() {
    let pki = pki("self-signed");
    let upstream = echo_upstream().await;
    // Alone: the listener serves it to every name (a CA-verifying client does not know it).
    let alone = format!(
        "listeners:\n  - bind: 127.0.0.1:0\n    tls: {{self_signed: true}}\nbackends:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - backend: app\n",
        upstream.addr
    );
    let app = start(&alone).await;
    let error = handshake_error(&pki, app.traffic_addrs[0], "a.test").await;
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("UnknownIssuer")),
        "{error:?}"
    );

    // With a file certificate: that one for its name, the self-signed default for the others
    // (without `self_signed` the first file's certificate answers them: a name mismatch).
    let f = |n: &str| pki.dir.join(n).display().to_string();
    for (self_signed, other) in [(true, "UnknownIssuer"), (false, "NotValidForName")] {
        let yaml = format!(
            "listeners:\n  - bind: 127.0.0.1:0\n    tls:\n      self_signed: {self_signed}\n      certificates:\n        - {{cert: \"{}\", key: \"{}\", server_names: [a.test]}}\nbackends:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - backend: app\n",
            f("a.test.crt"),
            f("a.test.key"),
            upstream.addr
        );
        let app = start(&yaml).await;
        let addr = app.traffic_addrs[0];
        assert_eq!(handshake_error(&pki, addr, "a.test").await, None);
        let error = handshake_error(&pki, addr, "other.test").await;
        assert!(
            error.as_deref().is_some_and(|e| e.contains(other)),
            "{self_signed}: {error:?}"
        );
    }
    // No certificate and no self-signed one: an error naming the field.
    let none = Config::from_yaml("listeners:\n  - bind: 127.0.0.1:0\n    tls: {}\n")
        .err()
        .unwrap();
    assert!(
        none.to_string().contains("listeners[0].tls.certificates"),
        "{none}"
    );
}
