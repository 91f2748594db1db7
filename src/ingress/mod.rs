//! The way out of ingress-nginx. `controller.rs` is the controller mode (`hitless ingress`):
//! routes from the cluster's Ingresses, swapped in through the reload path. `hitless import` turns Ingress objects (with their
//! ingress-nginx annotations) and Gateway API HTTPRoutes into a hitless config file, with a
//! report of what maps, what maps differently and what does not. `translate.rs` owns the
//! routing (hosts, paths, backends, the order rules are tried in); `nginx.rs` owns the
//! annotations. The objects are read by `lint`'s reader (files, folders, `-`), so both commands
//! accept the same inputs.

mod cluster;
pub mod controller;
mod gateway;
mod grants;
mod httproute;
mod leader;
mod nginx;
mod routes;
mod secrets;
mod status;
mod translate;

use std::path::PathBuf;

use serde_json::Value;

use crate::lint::LintError;

/// How one source setting carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Same behaviour in hitless.
    Maps,
    /// A hitless setting does the job, with a difference worth reading.
    Differs,
    /// No hitless equivalent: the behaviour is lost.
    Unsupported,
    /// Refused on purpose (raw nginx configuration): the object is imported without it.
    Refused,
    /// The whole object is left out (e.g. an HTTPRoute whose `backendRequest` timeout
    /// exceeds its `request` timeout, which Gateway API says to reject).
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Maps => "maps",
            Outcome::Differs => "differs",
            Outcome::Unsupported => "unsupported",
            Outcome::Refused => "refused",
            Outcome::Rejected => "rejected",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Ingress/shop/web`.
    pub object: String,
    /// The annotation or field it is about.
    pub source: String,
    pub outcome: Outcome,
    pub message: String,
}

/// A converted set of objects: the config (YAML text) and the report.
pub struct Import {
    pub config: String,
    pub notes: Vec<Note>,
}

impl Import {
    /// 0: imported (some settings may differ or be lost, as the report says); 1: something was
    /// refused or nothing could be imported.
    pub fn exit_code(&self) -> u8 {
        let refused = self
            .notes
            .iter()
            .any(|n| matches!(n.outcome, Outcome::Refused | Outcome::Rejected));
        u8::from(refused || !self.config.contains("routes:"))
    }

    pub fn render_report(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            out.push_str(&format!(
                "{:<11} {}: {}: {}\n",
                n.outcome.as_str(),
                n.object,
                n.source,
                n.message
            ));
        }
        let count = |o: Outcome| self.notes.iter().filter(|n| n.outcome == o).count();
        out.push_str(&format!(
            "{} maps, {} differs, {} unsupported, {} refused",
            count(Outcome::Maps),
            count(Outcome::Differs),
            count(Outcome::Unsupported),
            count(Outcome::Refused),
        ));
        match count(Outcome::Rejected) {
            0 => out.push('\n'),
            n => out.push_str(&format!(", {n} rejected\n")),
        }
        out
    }
}

/// Import every Ingress and HTTPRoute under `paths` (`-`: the text in `stdin`).
pub fn import_paths(paths: &[PathBuf], stdin: Option<&str>) -> Result<Import, LintError> {
    let objects = crate::lint::read_objects(paths, stdin)?;
    Ok(import_objects(&objects))
}

/// Import one file's text (for tests and tools).
pub fn import_str(file: &str, text: &str) -> Result<Import, LintError> {
    let objects = crate::lint::parse_objects(file, text)?;
    Ok(import_objects(&objects))
}

fn import_objects(objects: &[crate::lint::Object]) -> Import {
    let mut notes = Vec::new();
    let config = translate::config(objects, &translate::Serving::files(), &mut notes);
    let yaml = match serde_saphyr::to_string(&config) {
        Ok(text) => text,
        Err(e) => format!("# cannot print: {e}\n"),
    };
    let header = "# Written by `hitless import`; read the report before using it (hitless check \
                  --config FILE validates it).\n";
    Import {
        config: if matches!(&config, Value::Object(m) if m.contains_key("routes")) {
            format!("{header}{yaml}")
        } else {
            format!("{header}# no Ingress or HTTPRoute found\n")
        },
        notes,
    }
}
