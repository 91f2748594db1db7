//! TLS termination settings: certificate files loaded and checked at config load (a missing
//! file or a key that does not match is an error naming the field), turned into a rustls
//! server config: TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, the certificate chosen by
//! SNI among `server_names` (exact, or `*.suffix`), the first one when nothing matches. With
//! `self_signed`, a certificate made at start (rcgen) is the answer for names no file serves
//! instead (as ingress-nginx's default certificate), and the only one of a listener that has no
//! files yet (the ingress controller adds its Secrets' certificates at run time).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// One certificate of a TLS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_names: Vec<String>,
}

/// A TLS listener's settings and the rustls config built from them.
#[derive(Clone)]
pub struct ListenerTls {
    /// The files this config named. A running listener serves `keys`' files, which `adopt`
    /// may have replaced since: read those, not this, for what is served now.
    pub certificates: Vec<CertificateFiles>,
    /// A certificate made at start answers names no file serves (`self_signed: true`).
    pub self_signed: bool,
    pub server: Arc<rustls::ServerConfig>,
    /// The certificates in use and the files they came from, swapped whole when the files
    /// change (`reload`) or a reload brings another set (`adopt`).
    keys: Arc<ArcSwap<Loaded>>,
}

type Keys = Vec<(Vec<String>, Arc<CertifiedKey>)>;

/// The files a listener's certificates were read from, and the certificates.
#[derive(Debug)]
struct Loaded {
    files: Vec<CertificateFiles>,
    keys: Keys,
    /// The self-signed certificate made at start: for names no file serves (kept across
    /// reloads).
    generated: Option<Arc<CertifiedKey>>,
}

impl Loaded {
    fn new(
        files: Vec<CertificateFiles>,
        keys: Keys,
        generated: Option<Arc<CertifiedKey>>,
    ) -> Loaded {
        Loaded {
            files,
            keys,
            generated,
        }
    }
}

impl ListenerTls {
    /// Read the certificate files in use again (a Kubernetes Secret rotated them). On any
    /// error the certificates in use stay, and the error is returned. Connections already open
    /// keep the certificate they were established with; new handshakes use the new ones.
    pub fn reload(&self) -> Result<(), String> {
        let loaded = self.keys.load();
        let files = loaded.files.clone();
        let mut keys = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let key = load(f)
                .map_err(|(field, message)| format!("certificates[{i}].{field}: {message}"))?;
            keys.push((f.server_names.clone(), key));
        }
        let generated = loaded.generated.clone();
        self.keys
            .store(Arc::new(Loaded::new(files, keys, generated)));
        Ok(())
    }

    /// Serve `other`'s certificates from now on (a reload changed the listener's list: the
    /// ingress controller adds one per TLS Secret). The listener's socket and rustls config
    /// stay; new handshakes choose among the new certificates. Whether anything changed.
    pub fn adopt(&self, other: &ListenerTls) -> bool {
        let ours = self.keys.load();
        let theirs = other.keys.load();
        if ours.files == theirs.files {
            return false;
        }
        // Our self-signed certificate stays: clients that pinned it keep seeing it.
        let generated = ours.generated.clone().filter(|_| other.self_signed);
        let generated = generated.or_else(|| theirs.generated.clone());
        let keys = theirs.keys.clone();
        self.keys
            .store(Arc::new(Loaded::new(theirs.files.clone(), keys, generated)));
        true
    }
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("certificates", &self.certificates)
            .finish()
    }
}

/// Load one certificate: `Err((field, message))` names what is wrong.
type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Read a certificate chain and its key (PEM).
fn read_pair(files: &CertificateFiles) -> Result<Pair, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| ("cert", format!("cannot read {}: {e}", files.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "cert",
                format!("{}: not a PEM certificate: {e}", files.cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((
            "cert",
            format!("{}: no certificate in the file", files.cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        (
            "key",
            format!("{}: no usable private key: {e}", files.key.display()),
        )
    })?;
    Ok((chain, key))
}

/// Load one certificate: `Err((field, message))` names what is wrong.
fn load(files: &CertificateFiles) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    let (chain, key) = read_pair(files)?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| ("key", format!("{}: {e}", files.key.display())))?;
    Ok(Arc::new(certified))
}

/// A self-signed certificate for no name in particular (`hitless.invalid`), made now.
fn self_signed() -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec!["hitless.invalid".to_string()])
        .map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hitless default certificate");
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(vec![cert.der().clone()], der, &provider)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// Build the listener's TLS config; errors are `(index, field, message)`.
pub fn build(
    certificates: Vec<CertificateFiles>,
    self_signed_default: bool,
) -> Result<ListenerTls, Vec<(usize, &'static str, String)>> {
    let mut errors = Vec::new();
    let mut keys = Vec::new();
    for (i, files) in certificates.iter().enumerate() {
        match load(files) {
            Ok(key) => keys.push((files.server_names.clone(), key)),
            Err((field, message)) => errors.push((i, field, message)),
        }
    }
    let generated = if self_signed_default {
        match self_signed() {
            Ok(key) => Some(key),
            Err(e) => {
                errors.push((0, "self_signed", e));
                None
            }
        }
    } else {
        None
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let keys = Arc::new(ArcSwap::from_pointee(Loaded::new(
        certificates.clone(),
        keys,
        generated,
    )));
    let resolver = BySni {
        keys: Arc::clone(&keys),
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| vec![(0, "cert", e.to_string())])?;
    let mut server = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ListenerTls {
        certificates,
        self_signed: self_signed_default,
        server: Arc::new(server),
        keys,
    })
}

/// Certificates chosen by the client's SNI name.
#[derive(Debug)]
struct BySni {
    keys: Arc<ArcSwap<Loaded>>,
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.keys.load();
        let keys = &loaded.keys;
        let chosen = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            keys.iter()
                .find(|(names, _)| names.iter().any(|p| name_matches(p, &name)))
        });
        // No name matched: the self-signed default when there is one, else the first file's.
        match (chosen, &loaded.generated) {
            (Some((_, key)), _) => Some(Arc::clone(key)),
            (None, Some(generated)) => Some(Arc::clone(generated)),
            (None, None) => keys.first().map(|(_, key)| Arc::clone(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn sni_patterns() {
        assert!(name_matches("a.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("a.example.com", "b.example.com"));
    }
}

/// TLS to a backend's endpoints.
#[derive(Clone)]
pub struct BackendTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// SNI and verified name; `None`: the endpoint's host as written in the config.
    pub server_name: Option<String>,
    pub client: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("ca_file", &self.ca_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.client_cert == other.client_cert
            && self.server_name == other.server_name
            && self.insecure_skip_verify == other.insecure_skip_verify
    }
}

/// What a TLS backend's `tls:` section says.
pub struct ClientSettings<'a> {
    pub ca_file: Option<&'a str>,
    pub server_name: Option<&'a str>,
    pub client_cert: Option<&'a str>,
    pub client_key: Option<&'a str>,
    pub insecure_skip_verify: bool,
}

/// The rustls client config of a TLS backend: trusted CAs from `ca_file`, an optional client
/// certificate, ALPN `http/1.1` (`https`) or `h2` (`grpcs`). `Err((field, message))` names
/// what is wrong.
pub fn client(
    settings: &ClientSettings<'_>,
    protocol: super::Protocol,
) -> Result<BackendTls, (&'static str, String)> {
    let mut roots = rustls::RootCertStore::empty();
    match settings.ca_file {
        Some(ca_file) => {
            let certs = CertificateDer::pem_file_iter(ca_file)
                .map_err(|e| ("ca_file", format!("cannot read {ca_file}: {e}")))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| ("ca_file", format!("{ca_file}: not a PEM certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ("ca_file", format!("{ca_file}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(("ca_file", format!("{ca_file}: no certificate in the file")));
            }
        }
        // No CA file: the public web PKI (Mozilla's roots, built in: the image has no store).
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    if let Some(name) = settings.server_name {
        rustls_pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| ("server_name", format!("\"{name}\": {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("ca_file", e.to_string()))?;
    let builder = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut client = match (settings.client_cert, settings.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let files = CertificateFiles {
                cert: cert.into(),
                key: key.into(),
                server_names: Vec::new(),
            };
            let (chain, key) = read_pair(&files).map_err(|(field, message)| {
                (
                    if field == "cert" {
                        "client_cert"
                    } else {
                        "client_key"
                    },
                    message,
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ("client_key", e.to_string()))?
        }
        (Some(_), None) => return Err(("client_key", "required with client_cert".into())),
        (None, Some(_)) => return Err(("client_cert", "required with client_key".into())),
    };
    // grpcs is HTTP/2 only; https lets the backend choose.
    client.alpn_protocols = if protocol.is_h2() {
        vec![b"h2".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(BackendTls {
        ca_file: settings.ca_file.map(PathBuf::from),
        client_cert: settings.client_cert.map(PathBuf::from),
        server_name: settings.server_name.map(str::to_string),
        insecure_skip_verify: settings.insecure_skip_verify,
        client: Arc::new(client),
    })
}

/// `insecure_skip_verify`: any certificate is accepted (signatures are still checked, so
/// the handshake itself is sound); for test clusters with throwaway certificates. `doctor`
/// uses it too: it inspects certificates after the handshake.
#[derive(Debug)]
pub(crate) struct AcceptAnything(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
