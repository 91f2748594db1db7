//! TLS Secrets as certificate files. hitless's TLS listeners read certificates from files
//! (`listeners[].tls.certificates`); the controller writes each `kubernetes.io/tls` Secret an
//! Ingress or a Gateway names into a folder, under a name that carries a digest of its content,
//! and adds it to every TLS listener of the base config. A rotated Secret is therefore a new
//! file name, a new config, and one reload: new handshakes get the new certificate, open
//! connections keep theirs. Files no config uses any more are removed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

/// The certificate and key files of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A Secret's `tls.crt` and `tls.key`, written under `dir` (once per content). `Err`: why the
/// Secret cannot be used.
pub fn write(dir: &Path, secret: &Value) -> Result<Written, String> {
    let kind = secret.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "kubernetes.io/tls" {
        return Err(format!("type {kind:?}, not kubernetes.io/tls"));
    }
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let text = secret
            .get("data")
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no data.{name}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("data.{name}: not base64: {e}"))
    };
    let (cert, key) = (field("tls.crt")?, field("tls.key")?);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(&cert);
    digest.update(&key);
    let hex: String = digest
        .finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let namespace = secret
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = secret
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("secret");
    // Namespaces and Secret names are DNS labels/subdomains (the API server checks): no `/`.
    // Anything else is refused rather than trusted as a file name.
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with('.')
    };
    if !safe(namespace) || !safe(name) {
        return Err("not a valid namespace/name for a file".into());
    }
    let base = format!("{PREFIX}{namespace}_{name}-{hex}");
    let written = Written {
        cert: dir.join(format!("{base}.crt")),
        key: dir.join(format!("{base}.key")),
    };
    private_dir(dir)?;
    for (path, bytes) in [(&written.cert, &cert), (&written.key, &key)] {
        if !path.exists() {
            write_private(path, bytes)?;
        }
    }
    Ok(written)
}

/// Our files' names start so: `remove_unused` touches nothing else.
const PREFIX: &str = "hitless-";

/// `dir`, created for this user only (0700) when missing; refused when another user owns it
/// or others may write to it (private keys go there).
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // `/proc/self` belongs to this process's user.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if !meta.is_dir() || meta.mode() & 0o022 != 0 || me.is_some_and(|uid| uid != meta.uid()) {
        return Err(format!(
            "{} must be a folder of this user that others cannot write to",
            dir.display()
        ));
    }
    Ok(())
}

/// Write a file readable by this user only, whole or not at all (a new temporary file, never
/// one that exists or a link, renamed into place).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    // A partial file left by a crash.
    let _ = std::fs::remove_file(&partial);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&partial, path));
    result.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Remove the certificate files under `dir` that `used` does not name.
pub fn remove_unused(dir: &Path, used: &BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Only files named as `write` names them: `hitless-<namespace>_<name>-<16 hex>.crt|key`.
        let ours = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("crt" | "key")
        ) && path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| s.starts_with(PREFIX))
            .and_then(|s| s.rsplit_once('-'))
            .is_some_and(|(_, hex)| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if ours && !used.contains(&path) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "ingress controller: cannot remove an unused certificate file");
            }
        }
    }
}

/// The DNS names a certificate file's first certificate is for (subject alternative names).
pub fn dns_names(cert: &Path) -> Vec<String> {
    let Ok(pem) = std::fs::read(cert) else {
        return Vec::new();
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return Vec::new();
    };
    let Ok(parsed) = pem.parse_x509() else {
        return Vec::new();
    };
    let Ok(Some(names)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}
