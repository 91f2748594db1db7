//! What an endpoint's certificate says (its names and its expiry, read with x509-parser) and
//! whether hitless would trust it: the chain is run through rustls's webpki verifier with the
//! backend's `ca_file` (or the public roots) and its `tls.server_name` (or the endpoint's IP),
//! exactly as `config::tls` builds hitless's own client. Expiry and trust are two lines: an
//! expired certificate is verified again at a moment inside its validity, so that a wrong
//! name or an unknown issuer is not hidden behind the expiry, nor reported twice.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::UnixTime;
use rustls::CertificateError;
use x509_parser::extensions::GeneralName;

use super::report::Finding;
use super::targets::{roots, Settings};
use super::tls::{provider, server_name, Seen};

/// Fewer days left than this is a warning.
pub const EXPIRY_WARN_DAYS: i64 = 14;

/// The parts of a certificate the doctor reports.
pub(crate) struct Cert {
    /// DNS names and IP addresses of the subject alternative name extension.
    pub names: Vec<String>,
    pub subject: String,
    pub issuer: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl Cert {
    fn names_text(&self) -> String {
        if self.names.is_empty() {
            format!("no subject alternative name ({})", self.subject)
        } else {
            format!("[{}]", self.names.join(", "))
        }
    }
}

pub(crate) fn parse(der: &[u8]) -> Result<Cert, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("an unreadable certificate: {e}"))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip)
                        .ok()
                        .map(|b| Ipv4Addr::from(b).to_string()),
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|b| Ipv6Addr::from(b).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Cert {
        names,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// `YYYY-MM-DD` of a Unix time.
fn date(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.get(..10).unwrap_or(&text).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The `certificate` line: names and expiry.
pub(crate) fn expiry(seen: &Seen) -> Finding {
    const CHECK: &str = "certificate";
    let Some(der) = seen.chain.first() else {
        return Finding::fail(CHECK, "the endpoint showed no certificate", None);
    };
    let cert = match parse(der) {
        Ok(cert) => cert,
        Err(e) => return Finding::fail(CHECK, e, None),
    };
    let renew = Some("(the app) renew its certificate".to_string());
    let now = now();
    let names = cert.names_text();
    if cert.not_after < now {
        let days = (now - cert.not_after) / 86_400;
        return Finding::fail(
            CHECK,
            format!(
                "{names}, expired on {} ({days} days ago): every handshake fails",
                date(cert.not_after)
            ),
            renew,
        );
    }
    if cert.not_before > now {
        return Finding::fail(
            CHECK,
            format!("{names}, not valid before {}", date(cert.not_before)),
            Some("(the app) a certificate valid now (or the machine's clock)".into()),
        );
    }
    let days = (cert.not_after - now) / 86_400;
    let found = format!(
        "{names}, expires on {} (in {days} days)",
        date(cert.not_after)
    );
    if days < EXPIRY_WARN_DAYS {
        Finding::warn(CHECK, found, renew)
    } else {
        Finding::ok(CHECK, found)
    }
}

/// The `verify` line: would hitless's verifier accept this chain for this name?
pub(crate) fn verify(settings: &Settings, addr: SocketAddr, seen: &Seen) -> Finding {
    const CHECK: &str = "verify";
    if settings.insecure_skip_verify {
        return Finding::ok(CHECK, "not verified (tls.insecure_skip_verify: true)");
    }
    let trust = match &settings.ca_file {
        Some(path) => format!("ca_file {}", path.display()),
        None => "the public roots".into(),
    };
    let roots = match roots(settings.ca_file.as_deref()) {
        Ok(roots) => roots,
        Err(e) => return Finding::fail(CHECK, e, Some(settings.setting("tls.ca_file"))),
    };
    let verifier =
        match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build() {
            Ok(v) => v,
            Err(e) => {
                return Finding::fail(CHECK, e.to_string(), Some(settings.setting("tls.ca_file")))
            }
        };
    let Some((end_entity, intermediates)) = seen.chain.split_first() else {
        return Finding::fail(CHECK, "the endpoint showed no certificate", None);
    };
    let cert = parse(end_entity).ok();
    let name = server_name(settings, addr);
    let at =
        |time: UnixTime| verifier.verify_server_cert(end_entity, intermediates, &name, &[], time);
    let mut result = at(UnixTime::now());
    let mut dates_aside = false;
    let dated = |r: &Result<_, rustls::Error>| {
        matches!(
            r,
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. }
            ))
        )
    };
    if dated(&result) {
        if let Some(c) = &cert {
            let middle = c.not_before / 2 + c.not_after / 2;
            if middle > 0 {
                result = at(UnixTime::since_unix_epoch(Duration::from_secs(
                    middle as u64,
                )));
                dates_aside = true;
            }
        }
    }
    let name = name.to_str();
    let names = cert.as_ref().map_or_else(|| "?".into(), Cert::names_text);
    let issuer = cert.as_ref().map_or("?", |c| c.issuer.as_str());
    match result {
        Ok(_) => Finding::ok(
            CHECK,
            format!(
                "signed by a CA of {trust}, valid for {name}{}",
                if dates_aside {
                    " (its dates aside: see certificate)"
                } else {
                    ""
                }
            ),
        ),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => {
            let first = cert.as_ref().and_then(|c| c.names.first().cloned());
            Finding::fail(
                CHECK,
                format!("the certificate is for {names}, not {name}: every handshake fails"),
                first.map(|n| settings.setting(&format!("tls.server_name: {n}"))),
            )
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => Finding::fail(
            CHECK,
            format!("issued by {issuer}, not by a CA of {trust}: every handshake fails"),
            Some(settings.setting(&format!("tls.ca_file: the certificate of {issuer}"))),
        ),
        Err(e) => Finding::fail(CHECK, format!("rejected: {e}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_800_000_000), "2027-01-15");
        assert_eq!(date(-5), "1970-01-01");
    }
}
