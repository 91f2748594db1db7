//! The doctor's TLS client: a handshake that completes whatever certificate the endpoint shows
//! (handshake signatures are still checked), so that the certificate can be read and judged
//! after it, by the same verifier hitless uses (rustls's webpki verifier with the backend's
//! `ca_file`, or the public roots) in `certificate.rs`. A handshake refused outright would only
//! say "bad certificate"; the doctor wants to say which name and which expiry.
//!
//! The backend's own client config is cloned when there is one (its client certificate for
//! mTLS), with this verifier and the ALPN list of the probe; session resumption is off so that
//! every probe sees a full handshake. ring is the only provider.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::exchange::ANSWER_TIMEOUT;
use super::targets::Settings;
use crate::config::tls::AcceptAnything;

/// What a completed handshake showed.
pub(crate) struct Seen {
    pub version: &'static str,
    pub alpn: Option<Vec<u8>>,
    /// End entity first.
    pub chain: Vec<CertificateDer<'static>>,
}

impl Seen {
    pub fn alpn_name(&self) -> String {
        match &self.alpn {
            Some(p) => format!("ALPN {}", String::from_utf8_lossy(p)),
            None => "no ALPN".into(),
        }
    }
}

/// Why a handshake did not complete.
pub(crate) enum Refused {
    /// The endpoint answered with something that is not TLS.
    Plaintext,
    /// It closed the connection, or said nothing in time.
    Closed(String),
    /// It speaks TLS and wants a client certificate we do not have.
    ClientCert,
    /// It speaks TLS and refused: an alert, or an error of ours, as rustls says it.
    Failed(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Plaintext => f.write_str("the endpoint answered in plaintext"),
            Refused::Closed(how) | Refused::Failed(how) => f.write_str(how),
            Refused::ClientCert => f.write_str("the endpoint requires a client certificate"),
        }
    }
}

/// The name sent as SNI and verified: the configured one, else the endpoint's IP address.
pub(crate) fn server_name(settings: &Settings, addr: SocketAddr) -> ServerName<'static> {
    settings
        .server_name
        .as_ref()
        .and_then(|name| ServerName::try_from(name.clone()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(settings: &Settings, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    // Any certificate is accepted here: `certificate.rs` inspects and verifies it afterwards.
    let verifier = Arc::new(AcceptAnything(Arc::clone(&provider)));
    let mut config = match &settings.client {
        Some(base) => {
            let mut config = (**base).clone();
            config.dangerous().set_certificate_verifier(verifier);
            config
        }
        None => ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A TLS handshake on `tcp`, offering `alpn`, within [`ANSWER_TIMEOUT`].
pub(crate) async fn handshake(
    settings: &Settings,
    addr: SocketAddr,
    tcp: TcpStream,
    alpn: &[&[u8]],
) -> Result<(TlsStream<TcpStream>, Seen), Refused> {
    let config = client_config(settings, alpn).map_err(Refused::Failed)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = match tokio::time::timeout(
        ANSWER_TIMEOUT,
        connector.connect(server_name(settings, addr), tcp),
    )
    .await
    {
        Err(_) => {
            return Err(Refused::Closed(format!(
                "no handshake answer within {}",
                super::human(ANSWER_TIMEOUT)
            )))
        }
        Ok(Err(e)) => return Err(refused(&e)),
        Ok(Ok(stream)) => stream,
    };
    let connection = stream.get_ref().1;
    let version = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        _ => "TLS",
    };
    let seen = Seen {
        version,
        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
        chain: connection
            .peer_certificates()
            .map(<[CertificateDer<'static>]>::to_vec)
            .unwrap_or_default(),
    };
    Ok((stream, seen))
}

fn refused(e: &std::io::Error) -> Refused {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        // Bytes that are not TLS records: most likely an HTTP answer to our ClientHello.
        Some(rustls::Error::InvalidMessage(_)) => Refused::Plaintext,
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
            Refused::ClientCert
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            let hint = match alert {
                rustls::AlertDescription::NoApplicationProtocol => " (no ALPN protocol in common)",
                _ => "",
            };
            Refused::Failed(format!(
                "the endpoint refused the handshake: {alert:?}{hint}"
            ))
        }
        Some(other) => Refused::Failed(other.to_string()),
        None => Refused::Closed(format!("closed during the handshake ({e})")),
    }
}
