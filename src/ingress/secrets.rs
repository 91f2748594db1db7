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
    // Namespaces and Secret names are DNS labels/subdomains: no `/`, safe as file names.
    let base = format!("{namespace}_{name}-{hex}");
    let written = Written {
        cert: dir.join(format!("{base}.crt")),
        key: dir.join(format!("{base}.key")),
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (path, bytes) in [(&written.cert, &cert), (&written.key, &key)] {
        if !path.exists() {
            write_private(path, bytes)?;
        }
    }
    Ok(written)
}

/// Write a file readable by this user only, whole or not at all (a temporary file renamed).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
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
        // Only files named as `write` names them: `<namespace>_<name>-<16 hex>.crt|key`.
        let ours = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("crt" | "key")
        ) && path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.rsplit_once('-'))
            .is_some_and(|(_, hex)| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if ours && !used.contains(&path) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "ingress controller: cannot remove an unused certificate file");
            }
        }
    }
}
