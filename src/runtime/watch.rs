//! Config file changes, for live reload. The file's *directory* is watched, not the file: a
//! Kubernetes ConfigMap volume updates by swapping a `..data` symlink in that directory, and
//! editors replace files by renaming; neither is a write to the watched inode.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A watcher (keep it alive) and a channel that receives `()` when the file may have changed.
/// Bursts of events collapse into one pending notification.
pub fn watch(path: &Path) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    watch_files(&[path.to_path_buf()])
}

/// The same for several files (a listener's certificates and keys).
pub fn watch_files(paths: &[PathBuf]) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut names: Vec<OsString> = vec![OsString::from("..data")];
    for path in paths {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        if let Some(name) = path.file_name() {
            names.push(name.to_os_string());
        }
    }
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the file (ours included) is an access event: reacting to it would loop.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|f| names.iter().any(|n| n == f)));
        if relevant {
            let _ = tx.try_send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok((watcher, rx))
}
