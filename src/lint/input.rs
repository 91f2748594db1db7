//! Where manifests come from: files, folders walked for `*.yaml`/`*.yml`, and `-` for standard
//! input (kustomize output). The walk is sorted so that the same tree always yields the same
//! order, and it does not follow symlinked folders (a link back up the tree would never end).
//! This module only reads text; what the text means is `k8s.rs`'s business.

use std::path::{Path, PathBuf};

use super::LintError;

/// One input's text and the name its findings carry.
pub(crate) struct Source {
    pub name: String,
    pub text: String,
}

/// The name findings read from standard input carry.
pub(crate) const STDIN_NAME: &str = "<stdin>";

pub(crate) fn read(paths: &[PathBuf], stdin: Option<&str>) -> Result<Vec<Source>, LintError> {
    let mut sources = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let text = stdin.ok_or(LintError::NoStdin)?;
            sources.push(Source {
                name: STDIN_NAME.to_string(),
                text: text.to_string(),
            });
            continue;
        }
        let metadata = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
        let mut files = Vec::new();
        if metadata.is_dir() {
            walk(path, &mut files)?;
        } else {
            // A file named on the command line is read whatever its extension.
            files.push(path.clone());
        }
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| read_error(&file, e))?;
            sources.push(Source {
                name: file.display().to_string(),
                text,
            });
        }
    }
    Ok(sources)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), LintError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let kind = entry
            .file_type()
            .map_err(|e| read_error(&entry.path(), e))?;
        entries.push((entry.path(), kind));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, kind) in entries {
        if kind.is_dir() {
            walk(&path, files)?;
        } else if is_yaml(&path) && (kind.is_file() || path.is_file()) {
            // `path.is_file()` follows a symlink: a linked file is read, a linked folder is not.
            files.push(path);
        }
    }
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn read_error(path: &Path, source: std::io::Error) -> LintError {
    LintError::Read {
        path: path.display().to_string(),
        source,
    }
}
