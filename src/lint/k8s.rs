//! Kubernetes objects out of YAML text: every document of a multi-document file, the `items` of a
//! `kind: List`, each with its kind, API group, namespace and name, and an inventory to look up
//! the objects one refers to (a pod's ConfigMap, an Ingress's Service). Documents that are not
//! mappings with a `kind` are not objects and are skipped; the rules decide which kinds they read.

use serde_json::{Map, Value};

use super::LintError;

/// How deep `kind: List` may nest in `items` (kubectl writes one level).
const MAX_LIST_DEPTH: usize = 4;

/// One Kubernetes object and the file it came from.
#[derive(Clone)]
pub(crate) struct Object {
    pub file: String,
    pub kind: String,
    /// The group of `apiVersion` (`apps` for `apps/v1`, empty for `v1`); `None` without one.
    pub group: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub value: Value,
}

impl Object {
    /// `Kind/namespace/name`, or `Kind/name` without a namespace.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.kind, ns, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// Whether this is one of `kinds` in one of `groups` (any group when `apiVersion` is absent).
    pub fn is(&self, groups: &[&str], kinds: &[&str]) -> bool {
        kinds.contains(&self.kind.as_str())
            && self.group.as_deref().is_none_or(|g| groups.contains(&g))
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.value
            .get("metadata")?
            .get("annotations")?
            .get(key)?
            .as_str()
    }

    pub fn annotations(&self) -> Option<&Map<String, Value>> {
        self.value.get("metadata")?.get("annotations")?.as_object()
    }
}

/// The field path of an annotation, as findings show it.
pub(crate) fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[\"{key}\"]")
}

/// Every object in one file's text.
pub(crate) fn parse(file: &str, text: &str) -> Result<Vec<Object>, LintError> {
    // One-line errors ("... at line 3, column 2"): the file name is ours to add, and a snippet
    // labelled `<input>` would only confuse.
    let options = serde_saphyr::options! { with_snippet: false };
    let documents: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| LintError::Yaml {
            file: file.to_string(),
            message: e.to_string(),
        })?;
    let mut objects = Vec::new();
    for document in documents {
        collect(file, document, 0, &mut objects);
    }
    Ok(objects)
}

/// The objects among `documents` already decoded (the controller's watched objects).
pub(crate) fn from_values(file: &str, documents: impl IntoIterator<Item = Value>) -> Vec<Object> {
    let mut objects = Vec::new();
    for document in documents {
        collect(file, document, 0, &mut objects);
    }
    objects
}

fn collect(file: &str, document: Value, depth: usize, objects: &mut Vec<Object>) {
    let Value::Object(mut map) = document else {
        return;
    };
    let Some(kind) = map.get("kind").and_then(Value::as_str).map(str::to_string) else {
        return;
    };
    if kind == "List" || kind.ends_with("List") {
        if let Some(Value::Array(items)) = map.remove("items") {
            if depth < MAX_LIST_DEPTH {
                for item in items {
                    collect(file, item, depth + 1, objects);
                }
            }
            return;
        }
    }
    let group = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| match v.rsplit_once('/') {
            Some((group, _)) => group.to_string(),
            None => String::new(),
        });
    let metadata = map.get("metadata");
    let text = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let namespace = text("namespace").filter(|ns| !ns.is_empty());
    let name = text("name")
        .or_else(|| text("generateName").map(|prefix| format!("{prefix}*")))
        .unwrap_or_else(|| "<unnamed>".to_string());
    objects.push(Object {
        file: file.to_string(),
        kind,
        group,
        namespace,
        name,
        value: Value::Object(map),
    });
}

/// The objects of one lint run, to look up what an object refers to by kind, namespace and name.
pub(crate) struct Inventory<'a> {
    objects: &'a [Object],
}

impl<'a> Inventory<'a> {
    pub fn new(objects: &'a [Object]) -> Self {
        Inventory { objects }
    }

    /// The object `kind` named `name` in `namespace`; a missing namespace on either side
    /// matches any (plain files carry none, kustomize output carries them all).
    pub fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&'a Object> {
        self.objects.iter().find(|o| {
            o.kind == kind
                && o.name == name
                && match (namespace, o.namespace.as_deref()) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }
}
