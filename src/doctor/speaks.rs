//! What an endpoint's port speaks, against the configured `protocol`. Three questions are
//! asked at once, each on its own connection, each bounded by [`ANSWER_TIMEOUT`]:
//!
//! - an HTTP/1.1 request in plaintext: an HTTP/1.1 answer, HTTP/2 frames (SETTINGS/GOAWAY: the
//!   port speaks h2c only), TLS records (an alert: the port speaks TLS), a close, silence;
//! - HTTP/2 with prior knowledge (hyper's client; a gRPC health call for gRPC backends): does
//!   h2c work;
//! - a TLS ClientHello offering ALPN `h2` and `http/1.1`: does TLS work, which ALPN, which
//!   certificate (judged in `certificate.rs` when the backend is configured for TLS).
//!
//! The answers give the `protocol` line (with the `protocol:` setting that fixes a mismatch,
//! as `upstream::sniff` names it on live traffic) and the [`Transport`] the later checks use.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::Protocol;

use super::certificate;
use super::connect::{self, Transport, Unreached};
use super::exchange::{printable, Ask, Failure, ANSWER_TIMEOUT};
use super::report::Finding;
use super::targets::Settings;
use super::tls::{self, Refused, Seen};

/// The answer to a plaintext HTTP/1.1 request, by its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plain {
    Http1,
    /// An HTTP/2 frame header (SETTINGS or GOAWAY): h2c only.
    H2Frames,
    /// A TLS record (an alert, usually).
    TlsRecords,
    /// Closed without a byte.
    Closed,
    /// Nothing within the timeout.
    Silent,
    Other(Vec<u8>),
    Unreached(String),
}

pub(crate) struct Speaks {
    pub plain: Plain,
    pub h2c: Result<(), Failure>,
    pub tls: Result<Seen, Refused>,
}

/// Ask the three questions at once.
pub(crate) async fn detect(settings: &Settings, addr: SocketAddr) -> Speaks {
    let (plain, h2c, tls) = tokio::join!(
        plain(settings, addr),
        h2c(settings, addr),
        tls_probe(settings, addr)
    );
    Speaks { plain, h2c, tls }
}

pub(crate) fn classify(first: &[u8]) -> Plain {
    let tls = matches!(first, [0x15 | 0x16, 0x03, ..]);
    let h2 = matches!(first, [0, _, _, 0x04 | 0x07, ..]);
    if first.starts_with(b"HTTP/1.") {
        Plain::Http1
    } else if h2 {
        Plain::H2Frames
    } else if tls {
        Plain::TlsRecords
    } else if first.is_empty() {
        Plain::Closed
    } else {
        Plain::Other(first.to_vec())
    }
}

async fn plain(settings: &Settings, addr: SocketAddr) -> Plain {
    let mut tcp = match connect::tcp(addr, settings.connect_timeout).await {
        Ok(tcp) => tcp,
        Err(Unreached::Refused) => return Plain::Unreached("refused".into()),
        Err(Unreached::TimedOut) => return Plain::Unreached("timed out".into()),
        Err(Unreached::Failed(e)) => return Plain::Unreached(e),
    };
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hitless-doctor\r\nAccept: */*\r\n\r\n",
        if settings.grpc() { "/" } else { &settings.path },
        settings.authority(addr)
    );
    if tokio::time::timeout_at(deadline, tcp.write_all(request.as_bytes()))
        .await
        .is_err()
    {
        return Plain::Silent;
    }
    let mut first = Vec::new();
    let mut chunk = [0u8; 64];
    while first.len() < 9 {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) if first.is_empty() => return Plain::Silent,
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => first.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    classify(&first)
}

async fn h2c(settings: &Settings, addr: SocketAddr) -> Result<(), Failure> {
    let transport = Transport {
        tls: false,
        h2: true,
        alpn: None,
    };
    let mut conn = connect::open(settings, addr, &transport).await?;
    let ask = if settings.grpc() {
        Ask::GrpcHealth
    } else {
        Ask::Get
    };
    conn.ask(settings, addr, &ask).await.map(|_| ())
}

async fn tls_probe(settings: &Settings, addr: SocketAddr) -> Result<Seen, Refused> {
    let tcp = connect::tcp(addr, settings.connect_timeout)
        .await
        .map_err(|_| Refused::Closed("connect failed".into()))?;
    let (_stream, seen) = tls::handshake(settings, addr, tcp, &[b"h2", b"http/1.1"]).await?;
    Ok(seen)
}

fn tls_transport(seen: &Seen, force_h2: bool) -> Transport {
    Transport {
        tls: true,
        h2: force_h2 || seen.alpn.as_deref() == Some(b"h2"),
        alpn: seen.alpn.clone(),
    }
}

const PLAIN_H1: Transport = Transport {
    tls: false,
    h2: false,
    alpn: None,
};
const PLAIN_H2: Transport = Transport {
    tls: false,
    h2: true,
    alpn: None,
};

/// The `protocol` line (and `tls`, `certificate`, `verify` when TLS is spoken), and the
/// transport of the later checks (`None`: nothing to talk to).
pub(crate) fn judge(
    settings: &Settings,
    addr: SocketAddr,
    speaks: &Speaks,
) -> (Vec<Finding>, Option<Transport>) {
    const CHECK: &str = "protocol";
    let protocol = settings.protocol;
    let h1 = speaks.plain == Plain::Http1;
    let h2c = speaks.h2c.is_ok();
    let tls = speaks.tls.as_ref().ok();
    let tls_refused = matches!(speaks.tls, Err(Refused::ClientCert | Refused::Failed(_)));
    let tls_spoken = tls.is_some() || tls_refused || speaks.plain == Plain::TlsRecords;
    let alpn = tls.and_then(|s| s.alpn.as_deref());

    let mut parts = Vec::new();
    if h1 {
        parts.push("plaintext HTTP/1.1".to_string());
    }
    if h2c {
        parts.push("h2c (HTTP/2 prior knowledge)".to_string());
    }
    if let Some(seen) = tls {
        parts.push(format!("TLS ({})", seen.alpn_name()));
    } else if tls_spoken {
        parts.push("TLS".to_string());
    }
    let spoken = if parts.is_empty() {
        match &speaks.plain {
            Plain::H2Frames => format!(
                "HTTP/2 frames to an HTTP/1.1 request, but no h2c answer ({})",
                speaks
                    .h2c
                    .as_ref()
                    .err()
                    .map_or_else(String::new, |e| e.to_string())
            ),
            Plain::Closed => "nothing: it closes the connection without a byte".into(),
            Plain::Silent => format!("nothing within {}", super::human(ANSWER_TIMEOUT)),
            Plain::Other(bytes) => format!("no HTTP (first bytes {})", printable(bytes)),
            Plain::Unreached(e) => format!("nothing (connect: {e})"),
            Plain::Http1 | Plain::TlsRecords => "?".into(),
        }
    } else {
        parts.join(" and ")
    };
    let expected = match protocol {
        Protocol::Http => "plaintext HTTP/1.1",
        Protocol::H2c => "h2c",
        Protocol::Grpc => "gRPC over h2c",
        Protocol::Https => "TLS",
        Protocol::Grpcs => "TLS with HTTP/2 (ALPN h2)",
    };
    let fix = |to: &str| Some(settings.setting(&format!("protocol: {to}")));
    let ok = || {
        Finding::ok(
            CHECK,
            format!("{spoken}, as protocol {} expects", protocol.as_str()),
        )
    };
    let mismatch = |to: &str| {
        Finding::fail(
            CHECK,
            format!("{spoken}, not {expected}: hitless would answer 502 protocol_mismatch"),
            fix(to),
        )
    };
    let tls_to = match protocol {
        Protocol::Grpc | Protocol::Grpcs => "grpcs",
        _ => "https",
    };
    let silent = || {
        Finding::fail(
            CHECK,
            format!("speaks {spoken}, not {expected}"),
            Some(format!(
                "{}: the port of the app's HTTP server",
                settings.setting(settings.endpoints_key)
            )),
        )
    };
    let (line, transport) = match protocol {
        Protocol::Http => {
            if h1 {
                (ok(), Some(PLAIN_H1))
            } else if h2c {
                (mismatch("h2c"), Some(PLAIN_H2))
            } else if let Some(seen) = tls {
                (mismatch("https"), Some(tls_transport(seen, false)))
            } else if tls_spoken {
                (mismatch("https"), None)
            } else {
                (silent(), None)
            }
        }
        Protocol::H2c | Protocol::Grpc => {
            if h2c {
                (ok(), Some(PLAIN_H2))
            } else if h1 {
                (mismatch("http"), Some(PLAIN_H1))
            } else if let Some(seen) = tls {
                (mismatch(tls_to), Some(tls_transport(seen, false)))
            } else if tls_spoken {
                (mismatch(tls_to), None)
            } else {
                (silent(), None)
            }
        }
        Protocol::Https | Protocol::Grpcs => {
            if let Some(seen) = tls {
                match (protocol, alpn) {
                    (Protocol::Grpcs, Some(b"h2")) | (Protocol::Https, _) => {
                        (ok(), Some(tls_transport(seen, false)))
                    }
                    (_, Some(other)) => (
                        Finding::fail(
                            CHECK,
                            format!(
                                "TLS, but ALPN chose {}: no HTTP/2 for gRPC",
                                String::from_utf8_lossy(other)
                            ),
                            fix("https"),
                        ),
                        Some(tls_transport(seen, false)),
                    ),
                    (_, None) => (
                        Finding::warn(
                            CHECK,
                            "TLS without ALPN: HTTP/2 is assumed, not confirmed",
                            None,
                        ),
                        Some(tls_transport(seen, true)),
                    ),
                }
            } else if tls_spoken {
                // The handshake failed: the `tls` line says why.
                (
                    Finding::ok(
                        CHECK,
                        format!("{spoken}, as protocol {} expects", protocol.as_str()),
                    ),
                    None,
                )
            } else if h1 {
                (mismatch("http"), Some(PLAIN_H1))
            } else if h2c {
                let to = if protocol == Protocol::Grpcs {
                    "grpc"
                } else {
                    "h2c"
                };
                (mismatch(to), Some(PLAIN_H2))
            } else {
                (silent(), None)
            }
        }
    };
    let mut findings = vec![line];
    match (&speaks.tls, protocol.is_tls()) {
        (Ok(seen), wanted) => {
            findings.push(Finding::ok(
                "tls",
                format!("{}, {}", seen.version, seen.alpn_name()),
            ));
            if wanted {
                findings.push(certificate::expiry(seen));
                findings.push(certificate::verify(settings, addr, seen));
            }
        }
        (Err(Refused::ClientCert), true) => findings.push(Finding::fail(
            "tls",
            "the endpoint requires a client certificate",
            Some(settings.setting("tls.client_cert and tls.client_key")),
        )),
        (Err(Refused::Failed(e)), true) => findings.push(Finding::fail("tls", e.clone(), None)),
        _ => {}
    }
    (findings, transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(classify(b"HTTP/1.1 200 OK\r\n"), Plain::Http1);
        assert_eq!(classify(&[0, 0, 6, 4, 0, 0, 0, 0, 0]), Plain::H2Frames);
        assert_eq!(
            classify(&[0x15, 0x03, 0x03, 0, 2, 2, 70]),
            Plain::TlsRecords
        );
        assert_eq!(classify(b""), Plain::Closed);
        assert_eq!(classify(b"SSH-2.0-x"), Plain::Other(b"SSH-2.0-x".to_vec()));
        assert_eq!(printable(b"a\r\n"), "\"a\\x0d\\x0a\"");
    }
}
