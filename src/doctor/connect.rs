//! Reaching an endpoint: the TCP connect check (refused, unanswered SYNs, latency against
//! `connect_timeout`), and opening the connections the later checks use, the way hitless would
//! talk to the endpoint ([`Transport`]: plaintext or TLS with the ALPN the endpoint chose,
//! HTTP/1.1 or HTTP/2). Every connect is bounded by the backend's `connect_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::exchange::{Conn, Failure, Stream, H1, H2};
use super::human;
use super::report::Finding;
use super::targets::Settings;

/// How the later checks talk to an endpoint: what hitless would use, or, when the configured
/// protocol does not work, what the endpoint speaks (so that the other checks still say
/// something true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transport {
    pub tls: bool,
    pub h2: bool,
    /// With TLS: the ALPN protocol to offer (the one the endpoint chose), or none.
    pub alpn: Option<Vec<u8>>,
}

/// Why a TCP connect failed.
pub(crate) enum Unreached {
    Refused,
    TimedOut,
    Failed(String),
}

pub(crate) async fn tcp(addr: SocketAddr, limit: Duration) -> Result<TcpStream, Unreached> {
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => Err(Unreached::TimedOut),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(Unreached::Refused),
        Ok(Err(e)) => Err(Unreached::Failed(e.to_string())),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// The `connect` line, and whether the endpoint can be probed further.
pub(crate) async fn check(settings: &Settings, addr: SocketAddr) -> (Finding, bool) {
    const CHECK: &str = "connect";
    let limit = settings.connect_timeout;
    let started = Instant::now();
    let result = tcp(addr, limit).await;
    let took = started.elapsed();
    let list = settings.setting(settings.endpoints_key);
    match result {
        Ok(_) if took > limit / 2 => (
            Finding::warn(
                CHECK,
                format!(
                    "connected in {}, over half of connect_timeout {}",
                    human(took),
                    human(limit)
                ),
                Some(settings.setting(&format!("connect_timeout: {}", human(took.max(limit) * 2)))),
            ),
            true,
        ),
        Ok(_) => (
            Finding::ok(CHECK, format!("connected in {}", human(took))),
            true,
        ),
        Err(Unreached::Refused) => (
            Finding::fail(
                CHECK,
                "refused: nothing listens there (a stopped pod, or the wrong port)",
                Some(format!("{list}: the address and port the app listens on")),
            ),
            false,
        ),
        Err(Unreached::TimedOut) => (
            Finding::fail(
                CHECK,
                format!(
                    "SYNs unanswered for connect_timeout {} (a black hole: a deleted pod's IP?)",
                    human(limit)
                ),
                Some(format!(
                    "{list}: drop {addr}, or let discovery follow the pods"
                )),
            ),
            false,
        ),
        Err(Unreached::Failed(e)) => (
            Finding::fail(CHECK, format!("failed: {e}"), Some(list)),
            false,
        ),
    }
}

/// A new connection to `addr` over `transport`.
pub(crate) async fn open(
    settings: &Settings,
    addr: SocketAddr,
    transport: &Transport,
) -> Result<Conn, Failure> {
    let tcp = tcp(addr, settings.connect_timeout)
        .await
        .map_err(|e| match e {
            Unreached::Refused => Failure::Other("connect refused".into()),
            Unreached::TimedOut => Failure::Timeout(settings.connect_timeout),
            Unreached::Failed(e) => Failure::Other(format!("connect failed: {e}")),
        })?;
    let stream: Stream = if transport.tls {
        let offer: Vec<&[u8]> = match &transport.alpn {
            Some(p) => vec![p.as_slice()],
            None => Vec::new(),
        };
        let (tls, _) = super::tls::handshake(settings, addr, tcp, &offer)
            .await
            .map_err(|e| Failure::Other(format!("TLS handshake: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    Ok(if transport.h2 {
        Conn::H2(H2::handshake(stream, transport.tls).await?)
    } else {
        Conn::H1(H1::new(stream))
    })
}
