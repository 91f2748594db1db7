//! What is probed, and what each endpoint is compared against. A URL is one target with
//! hitless's defaults for its scheme's protocol (the URL's path is the probe path; for gRPC
//! schemes it names the health service); a config file gives every backend (or the one
//! `--backend` names) with its own settings, and where its endpoints come from (listed, DNS,
//! EndpointSlices). Fixes are spelled as the setting's path in the config file, so this module
//! also owns that prefix (`backends.api.`; with a URL, `backends.<name>.`). Everything here
//! runs before the first packet: a bad URL, flag or backend name is a [`UsageError`] (exit 64).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;

use crate::config::discovery::Discovery;
use crate::config::{Config, Defaults, Protocol};

use super::{Options, Target, UsageError};

/// What an endpoint of one backend is compared against, and how to talk to it.
pub(crate) struct Settings {
    /// `None` for a URL.
    pub backend: Option<String>,
    /// `backends.api.`: the path of this backend's settings in the config file.
    prefix: String,
    pub protocol: Protocol,
    /// `endpoints` or `discovery`: the setting that says where the endpoints are.
    pub endpoints_key: &'static str,
    pub connect_timeout: Duration,
    pub pool_idle: Duration,
    pub max_header: usize,
    /// The HTTP probe path (health check path, the URL's path, or `/`).
    pub path: String,
    /// The gRPC health service asked for (`""`: the whole server).
    pub grpc_service: String,
    /// `health_check.timeout` when active checks are configured: then a failing health path
    /// keeps the endpoint out of rotation.
    pub health_check: Option<Duration>,
    /// The `Host` / `:authority` to send; `None`: the endpoint's address.
    pub host: Option<String>,
    /// Sent as SNI and verified; `None`: the endpoint's IP address (as hitless does).
    pub server_name: Option<String>,
    /// Trusted CAs (PEM); `None`: the public web PKI roots.
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// The backend's own rustls client (its client certificate for mTLS), when configured.
    pub client: Option<Arc<rustls::ClientConfig>>,
    pub websocket: Option<String>,
    pub idle_probe: Duration,
}

impl Settings {
    /// The config path of one of this backend's settings, e.g. `backends.api.protocol`.
    pub fn setting(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The `Host` header / `:authority` for `addr`.
    pub fn authority(&self, addr: SocketAddr) -> String {
        self.host.clone().unwrap_or_else(|| addr.to_string())
    }

    /// Whether requests are gRPC calls (the health probe speaks the gRPC health protocol).
    pub fn grpc(&self) -> bool {
        matches!(self.protocol, Protocol::Grpc | Protocol::Grpcs)
    }

    pub fn title(&self, addr: SocketAddr, url: Option<&str>) -> String {
        match (&self.backend, url) {
            (Some(name), _) => format!(
                "backend {name}, endpoint {addr} (protocol {})",
                self.protocol.as_str()
            ),
            (None, url) => format!(
                "url {}, endpoint {addr} (protocol {})",
                url.unwrap_or("?"),
                self.protocol.as_str()
            ),
        }
    }
}

/// Where a backend's endpoints come from.
pub(crate) enum Source {
    Listed(Vec<SocketAddr>),
    /// A URL's host name, resolved by the system resolver.
    Host(String, u16),
    Discovered(Discovery),
}

/// One backend (or URL) to probe.
pub(crate) struct Plan {
    pub settings: Arc<Settings>,
    pub source: Source,
    /// The URL as given, for titles.
    pub url: Option<String>,
    /// The title of backend-wide lines (discovery), e.g. `backend api (dns api.test.:8080)`.
    pub title: String,
}

/// The plans for `options`, or why they cannot be made.
pub(crate) fn plans(options: &Options) -> Result<Vec<Plan>, UsageError> {
    let bounded = Duration::from_millis(100)..=Duration::from_secs(300);
    if !bounded.contains(&options.idle_probe) {
        return Err(UsageError(format!(
            "--idle-probe {}: between 100ms and 5m",
            humantime::format_duration(options.idle_probe)
        )));
    }
    if let Some(path) = &options.websocket {
        if !path.starts_with('/') {
            return Err(UsageError(format!(
                "--websocket {path}: a path starting with /"
            )));
        }
    }
    match &options.target {
        Target::Url(url) => Ok(vec![from_url(url, options)?]),
        Target::Config { config, backend } => {
            if options.ca_file.is_some() || options.server_name.is_some() {
                return Err(UsageError(
                    "--ca-file and --server-name are for a URL; with --config, the backend's \
                     tls: section is used"
                        .into(),
                ));
            }
            from_config(config, backend.as_deref(), options)
        }
    }
}

fn from_url(url: &str, options: &Options) -> Result<Plan, UsageError> {
    let bad = |why: &str| UsageError(format!("{url}: {why}"));
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let (protocol, default_port) = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => (Protocol::Http, 80),
        Some("https") => (Protocol::Https, 443),
        Some("h2c") => (Protocol::H2c, 80),
        Some("grpc") => (Protocol::Grpc, 80),
        Some("grpcs") => (Protocol::Grpcs, 443),
        _ => return Err(bad("the scheme must be http, https, h2c, grpc or grpcs")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(default_port);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let grpc_service = uri.path().trim_matches('/').to_string();
    if let Some(ca_file) = &options.ca_file {
        roots(Some(ca_file)).map_err(|e| UsageError(format!("--ca-file {e}")))?;
    }
    let server_name = options.server_name.clone().or_else(|| Some(host.clone()));
    if let Some(name) = &server_name {
        rustls_pki_types::ServerName::try_from(name.clone())
            .map_err(|e| UsageError(format!("server name \"{name}\": {e}")))?;
    }
    let source = match host.parse::<IpAddr>() {
        Ok(ip) => Source::Listed(vec![SocketAddr::new(ip, port)]),
        Err(_) => Source::Host(host, port),
    };
    Ok(Plan {
        settings: Arc::new(Settings {
            backend: None,
            prefix: "backends.<name>.".into(),
            protocol,
            endpoints_key: "endpoints",
            connect_timeout: Defaults::CONNECT,
            pool_idle: Defaults::POOL_IDLE,
            max_header: Defaults::MAX_RESPONSE_HEADER_BYTES,
            path,
            grpc_service,
            health_check: None,
            host: Some(authority.as_str().to_string()),
            server_name,
            ca_file: options.ca_file.clone(),
            insecure_skip_verify: false,
            client: None,
            websocket: options.websocket.clone(),
            idle_probe: options.idle_probe,
        }),
        source,
        url: Some(url.to_string()),
        title: format!("url {url}"),
    })
}

fn from_config(
    config: &Config,
    only: Option<&str>,
    options: &Options,
) -> Result<Vec<Plan>, UsageError> {
    if let Some(name) = only {
        if !config.backends.iter().any(|b| b.name == name) {
            let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
            return Err(UsageError(format!(
                "--backend {name}: no such backend (the config has: {})",
                names.join(", ")
            )));
        }
    }
    let plans = config
        .backends
        .iter()
        .filter(|b| only.is_none_or(|name| b.name == name))
        .map(|b| {
            let health = b.health_check.as_ref();
            let (source, title) = match &b.discovery {
                Some(d) => (
                    Source::Discovered(d.clone()),
                    format!("backend {} ({})", b.name, d.describe()),
                ),
                None => (
                    Source::Listed(b.endpoints.clone()),
                    format!("backend {}", b.name),
                ),
            };
            let tls = b.tls.as_ref();
            Plan {
                settings: Arc::new(Settings {
                    backend: Some(b.name.clone()),
                    prefix: format!("backends.{}.", b.name),
                    protocol: b.protocol,
                    endpoints_key: if b.discovery.is_some() {
                        "discovery"
                    } else {
                        "endpoints"
                    },
                    connect_timeout: b.connect_timeout,
                    pool_idle: b.pool_idle_timeout,
                    max_header: config.max_response_header_bytes,
                    path: health.map_or_else(|| "/".into(), |h| h.path.clone()),
                    grpc_service: health.map(|h| h.grpc_service.clone()).unwrap_or_default(),
                    health_check: health.map(|h| h.timeout),
                    host: None,
                    server_name: tls.and_then(|t| t.server_name.clone()),
                    ca_file: tls.and_then(|t| t.ca_file.clone()),
                    insecure_skip_verify: tls.is_some_and(|t| t.insecure_skip_verify),
                    client: tls.map(|t| Arc::clone(&t.client)),
                    websocket: options.websocket.clone(),
                    idle_probe: options.idle_probe,
                }),
                source,
                url: None,
                title,
            }
        })
        .collect();
    Ok(plans)
}

/// The trusted roots: a CA file (PEM), or the public web PKI.
pub(crate) fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> Result<Plan, UsageError> {
        let options = Options::url(u);
        plans(&options).map(|mut p| p.remove(0))
    }

    #[test]
    fn urls_give_the_protocol_path_and_defaults() {
        let p = url("grpc://127.0.0.1:50051/shop.Cart").unwrap();
        assert_eq!(p.settings.protocol, Protocol::Grpc);
        assert_eq!(p.settings.grpc_service, "shop.Cart");
        assert_eq!(p.settings.pool_idle, Duration::from_millis(1500));
        assert!(matches!(&p.source, Source::Listed(a) if a[0].port() == 50051));
        let p = url("https://example.com/healthz?full=1").unwrap();
        assert_eq!(p.settings.protocol, Protocol::Https);
        assert_eq!(p.settings.path, "/healthz?full=1");
        assert_eq!(p.settings.server_name.as_deref(), Some("example.com"));
        assert!(matches!(&p.source, Source::Host(h, 443) if h == "example.com"));
        let p = url("http://[::1]:8080").unwrap();
        assert_eq!(p.settings.path, "/");
        assert!(matches!(&p.source, Source::Listed(a) if a[0].is_ipv6()));
        assert_eq!(
            p.settings.setting("protocol"),
            "backends.<name>.protocol",
            "no backend name with a URL"
        );
        assert!(url("ftp://a/").is_err());
        assert!(url("/just/a/path").is_err());
    }
}
