//! `hitless lint`: reads Kubernetes manifests (files, folders, multi-document YAML, `kind: List`,
//! kustomize output on stdin) and reports the settings that make a rollout or an ingress answer
//! 502, each with its file, object, field path, a stable rule id, a severity and a one-line fix.
//! This module owns the public API and the order of the passes; each rule lives with the kind of
//! object it reads (`workload.rs`, `hitless.rs`, `nginx.rs`, `routes.rs`) and is listed once in
//! `rules.rs`. Manifests are input: nothing here may panic on them, whatever they contain.
//!
//! # Rules
//!
//! Rule ids are stable: a rule may be refined but never renamed, and a retired id is not reused.
//! Severity `error` means requests will fail (a 502, a reset, a SIGKILL mid-request);
//! `warning` means they likely will.
//!
//! | id | severity | what | fix |
//! |---|---|---|---|
//! | `readiness-missing` | error | a serving container of a Deployment/StatefulSet has no `readinessProbe` | add a readinessProbe that passes only when the app can serve |
//! | `readiness-equals-liveness` | warning | readiness and liveness probe the same check | give readiness its own check; keep liveness to "the process is alive" |
//! | `prestop-missing` | error | a serving container has no preStop `sleep`, `exec` or `httpGet` | add `lifecycle.preStop.sleep.seconds: 5` |
//! | `grace-shorter-than-prestop` | error | `terminationGracePeriodSeconds` is not longer than a container's preStop sleep | raise the grace period above the sleep plus the app's own shutdown |
//! | `readiness-too-slow` | warning | `periodSeconds × failureThreshold` exceeds the drain delay (hitless) or the preStop sleep (other containers) | lower periodSeconds/failureThreshold |
//! | `nginx-next-upstream` | warning | `proxy-next-upstream` is set without `error`, `timeout` and `http_502` | set it to `"error timeout http_502"` |
//! | `nginx-read-timeout` | warning | `proxy-read-timeout` (default 60 s) is not shorter than the client's timeout | set it below the client's timeout |
//! | `nginx-keepalive` | error | `upstream-keepalive-timeout` (default 60 s) is not shorter than the app's keep-alive | set it below the app's keep-alive |
//! | `nginx-backend-protocol` | error | the backend Service port is named `https`/`grpc`/`grpcs` and `backend-protocol` is missing or different | set `backend-protocol` to match |
//! | `nginx-buffer-size` | warning | `proxy-buffer-size` below 8k | set it to `"16k"` |
//! | `httproute-timeouts` | error | an HTTPRoute rule's `timeouts.backendRequest` exceeds `timeouts.request` | lower backendRequest to at most request |
//! | `hitless-drain-grace` | error | the grace period is shorter than hitless's `drain.delay + drain.timeout` | raise terminationGracePeriodSeconds or shorten the drain |
//! | `hitless-grace-period` | warning | the gateway config's `drain.grace_period` is not the pod's grace period | state the pod's grace period |
//! | `hitless-app-outlives-drain` | error | in a sidecar pod, the app's preStop sleep ends before hitless's drain does | sleep at least delay + timeout |
//! | `hitless-prestop-socket` | warning | hitless's preStop `hitless drain` names another socket than hitless listens on | pass `--socket` with the control socket |
//!
//! # Decisions
//!
//! - **Workloads** are `Deployment` and `StatefulSet` (group `apps`); their pod is
//!   `spec.template.spec`. A container is *serving* when it declares `ports`; when no container
//!   of the pod does, every container is (a log shipper without ports needs no probe).
//! - **Kubernetes defaults**: `periodSeconds` 10, `failureThreshold` 3,
//!   `terminationGracePeriodSeconds` 30. A preStop of `sleep.seconds: N`, `exec: [sleep, N]` or
//!   `exec: [sh, -c, "sleep N ..."]` lasts N seconds; other hooks last an unknown time, so the
//!   rules that need a duration skip them. A preStop hook without any of `sleep`, `exec`,
//!   `httpGet` counts as missing.
//! - **Readiness noticing a drain**: a probe fails at worst `periodSeconds × failureThreshold`
//!   after the pod starts terminating; that must be at most hitless's drain delay (hitless
//!   containers) or the preStop sleep (others), so the pod leaves every load balancer that reads
//!   readiness before it stops serving.
//! - **hitless containers** are those whose image's repository name contains `hitless` or whose
//!   command starts with a `hitless` binary; hitless drains on SIGTERM by itself (its
//!   `drain.delay` is the built-in preStop sleep), so `prestop-missing` does not apply to them.
//!   `sidecar` takes `--drain-delay`, `--drain-timeout`, `--control-socket` (defaults 5s, 20s,
//!   /tmp/hitless.sock, `--flag=value` or `--flag value`); `run --config PATH` reads the
//!   ConfigMap mounted at PATH's folder or at PATH with `subPath` (volume `configMap.name`,
//!   `items` honoured) from the same input set, its `drain:` section (same defaults). When that
//!   ConfigMap is not in the input, the gateway's drain rules are skipped: lint the whole folder
//!   or the kustomize output. `hitless drain` without `--socket` uses /tmp/hitless.sock; a
//!   wrong socket is only a warning because hitless still drains, later, on the SIGTERM that
//!   follows the failed hook.
//! - **The app's keep-alive** is known from the annotation `hitless.dev/app-keepalive-timeout`
//!   (e.g. `5s`) on the Ingress or on a backend Service in the input; the shortest one counts.
//!   Unknown: `nginx-keepalive` does not fire. **The client's timeout** is known from
//!   `hitless.dev/client-timeout` on the Ingress (e.g. the load balancer's idle timeout, `60s`);
//!   unknown: `nginx-read-timeout` does not fire. Both rules require the nginx value to be
//!   strictly shorter (equal timeouts race).
//! - **`proxy-next-upstream`** is judged only when set: unset, ingress-nginx retries on
//!   `error timeout`, and warning on every Ingress would drown the findings that matter.
//! - **nginx Ingresses** are those with an `nginx` ingress class (`spec.ingressClassName` or
//!   the `kubernetes.io/ingress.class` annotation) or any `nginx.ingress.kubernetes.io/`
//!   annotation. Annotation durations are seconds (`"60"`) or humantime (`"60s"`); sizes are
//!   bytes with an optional `k`/`m` suffix.
//! - **Namespaces**: an object without `metadata.namespace` matches any namespace when another
//!   object (ConfigMap, Service) is looked up, so plain files and kustomize output both work.
//!   The object is named `Kind/namespace/name`, or `Kind/name` without a namespace.
//! - **Inputs**: folders are walked recursively (`*.yaml`, `*.yml`, sorted; symlinked folders
//!   are not followed); a file named explicitly is read whatever its extension; `-` is standard
//!   input, reported as `<stdin>`. Documents that are not mappings with a `kind`, and unknown
//!   kinds, are skipped silently. A file that is not valid YAML is an input error naming it.
//! - **Exit status** ([`exit_code`], [`LintError::EXIT_CODE`]): 0 when no finding is an error
//!   (warnings allowed), 1 when any is, 64 when an input cannot be read or parsed (the CLI's
//!   "invalid input" code; clap owns 2 for bad flags).

mod hitless;
mod input;
mod k8s;
mod nginx;
mod pod;
mod report;
mod routes;
mod rules;
mod units;
mod workload;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub(crate) use k8s::{Inventory, Object};
pub use report::{exit_code, render};
pub use rules::{Rule, RULES};
pub(crate) use units::duration;

/// How [`render`] writes the findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: one block per finding and a count at the end.
    Text,
    /// For tools: a JSON array of findings with the fields of [`Finding`].
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("expected \"text\" or \"json\", got {other:?}")),
        }
    }
}

/// How sure a finding is to cost requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Requests will fail (a 502, a reset, a SIGKILL mid-request).
    Error,
    /// Requests will likely fail.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable id from [`RULES`].
    pub rule: &'static str,
    pub severity: Severity,
    /// The file the object was read from (`<stdin>` for standard input).
    pub file: String,
    /// `Kind/namespace/name`, or `Kind/name` when the object has no namespace.
    pub object: String,
    /// Where in the object, e.g. `spec.template.spec.containers[1].readinessProbe`.
    pub field: String,
    /// What is wrong and why it costs requests.
    pub message: String,
    /// One line saying what to change.
    pub fix: String,
}

/// An input that could not be linted at all (as opposed to a [`Finding`] in it).
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("`-` names standard input, but no standard input was given")]
    NoStdin,
}

impl LintError {
    /// The exit status for an input that cannot be read or parsed (EX_USAGE, as for an invalid
    /// configuration elsewhere in the CLI).
    pub const EXIT_CODE: u8 = 64;
}

/// Lint every document under `paths` ("-" = the standard input text given in `stdin`). Objects
/// in one file may refer to objects in another (a Deployment's ConfigMap, an Ingress's Service).
pub fn lint_paths(paths: &[PathBuf], stdin: Option<&str>) -> Result<Vec<Finding>, LintError> {
    Ok(lint_objects(&read_objects(paths, stdin)?))
}

/// Every Kubernetes object under `paths` (`-`: the text in `stdin`), for `lint` and `import`.
pub(crate) fn read_objects(
    paths: &[PathBuf],
    stdin: Option<&str>,
) -> Result<Vec<Object>, LintError> {
    let mut objects = Vec::new();
    for source in input::read(paths, stdin)? {
        objects.extend(k8s::parse(&source.name, &source.text)?);
    }
    Ok(objects)
}

/// The objects in one file's text.
pub(crate) fn parse_objects(file: &str, text: &str) -> Result<Vec<Object>, LintError> {
    k8s::parse(file, text)
}

/// The objects among documents already decoded (`file` names their source in reports).
pub(crate) fn objects_from_values(
    file: &str,
    documents: impl IntoIterator<Item = serde_json::Value>,
) -> Vec<Object> {
    k8s::from_values(file, documents)
}

/// Lint one file's text; `file` is the name findings carry.
pub fn lint_str(file: &str, text: &str) -> Result<Vec<Finding>, LintError> {
    Ok(lint_objects(&k8s::parse(file, text)?))
}

fn lint_objects(objects: &[k8s::Object]) -> Vec<Finding> {
    let inventory = k8s::Inventory::new(objects);
    let mut findings = Vec::new();
    for object in objects {
        if object.is(&["apps"], &["Deployment", "StatefulSet"]) {
            if let Some(pod) = pod::Pod::of_workload(object) {
                let proxies = hitless::find(object, &pod, &inventory);
                workload::check(object, &pod, &proxies, &mut findings);
                hitless::check(object, &pod, &proxies, &mut findings);
            }
        } else if object.is(&["networking.k8s.io", "extensions"], &["Ingress"]) {
            nginx::check(object, &inventory, &mut findings);
        } else if object.is(&["gateway.networking.k8s.io"], &["HTTPRoute"]) {
            routes::check(object, &mut findings);
        }
    }
    report::sort(&mut findings);
    findings
}
