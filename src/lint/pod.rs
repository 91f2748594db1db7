//! A workload's pod as the termination rules see it: the grace period, and per container its
//! probes, its preStop hook reduced to what it costs in time (a known sleep, an exec, an HTTP
//! call) and its command line. Kubernetes' defaults are filled in here, once, so that every rule
//! reads the same numbers; a value that is present but unreadable becomes `None` and the rules
//! that need it stay silent rather than guess.

use std::path::Path;

use serde_json::Value;

use super::k8s::Object;
use super::units;

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub(crate) const DEFAULT_GRACE_SECONDS: u64 = 30;
/// Kubernetes' default probe `periodSeconds` and `failureThreshold`.
const DEFAULT_PERIOD_SECONDS: u64 = 10;
const DEFAULT_FAILURE_THRESHOLD: u64 = 3;

/// The pod template of a Deployment or StatefulSet.
pub(crate) struct Pod<'a> {
    pub spec: &'a Value,
    /// `terminationGracePeriodSeconds`, 30 when absent, `None` when unreadable.
    pub grace: Option<u64>,
    /// Whether `grace` is Kubernetes' default rather than written.
    pub grace_is_default: bool,
    pub containers: Vec<Container<'a>>,
}

/// The field path of the pod spec in a workload.
pub(crate) const SPEC: &str = "spec.template.spec";

impl<'a> Pod<'a> {
    pub fn of_workload(object: &'a Object) -> Option<Pod<'a>> {
        let spec = object.value.get("spec")?.get("template")?.get("spec")?;
        let (grace, grace_is_default) = match spec.get("terminationGracePeriodSeconds") {
            None | Some(Value::Null) => (Some(DEFAULT_GRACE_SECONDS), true),
            Some(value) => (units::seconds(value), false),
        };
        let list = spec.get("containers").and_then(Value::as_array);
        let list = list.map(Vec::as_slice).unwrap_or_default();
        let any_ports = list.iter().any(has_ports);
        let containers = list
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_object())
            .map(|(index, value)| Container {
                index,
                name: value
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                value,
                serving: !any_ports || has_ports(value),
                pre_stop: PreStop::of(value),
            })
            .collect();
        Some(Pod {
            spec,
            grace,
            grace_is_default,
            containers,
        })
    }

    /// `terminationGracePeriodSeconds` for a message, saying when it is the default.
    pub fn grace_text(&self, grace: u64) -> String {
        if self.grace_is_default {
            format!("terminationGracePeriodSeconds (default {grace})")
        } else {
            format!("terminationGracePeriodSeconds {grace}")
        }
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&'a Value> {
        self.spec
            .get("volumes")?
            .as_array()?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    }
}

fn has_ports(container: &Value) -> bool {
    container
        .get("ports")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty())
}

pub(crate) struct Container<'a> {
    pub index: usize,
    pub name: String,
    pub value: &'a Value,
    /// Whether it takes traffic (see `mod.rs`: it declares ports, or no container does).
    pub serving: bool,
    pub pre_stop: PreStop,
}

impl Container<'_> {
    /// The field path of `rest` in this container: `spec.template.spec.containers[1].rest`.
    pub fn field(&self, rest: &str) -> String {
        if rest.is_empty() {
            format!("{SPEC}.containers[{}]", self.index)
        } else {
            format!("{SPEC}.containers[{}].{rest}", self.index)
        }
    }

    /// `container "app"` (or `container #2` without a name), for messages.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("container #{}", self.index)
        } else {
            format!("container {:?}", self.name)
        }
    }

    pub fn probe(&self, key: &str) -> Option<&Value> {
        self.value.get(key).filter(|p| !p.is_null())
    }

    /// `command` followed by `args`, the strings only.
    pub fn argv(&self) -> Vec<String> {
        ["command", "args"]
            .iter()
            .filter_map(|k| self.value.get(*k)?.as_array())
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect()
    }

    pub fn image(&self) -> &str {
        self.value
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The number a probe's `port` names: a number, a numeric string, or a port's name.
    pub fn port_number(&self, port: &Value) -> Option<u64> {
        match port {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok().or_else(|| {
                self.value
                    .get("ports")?
                    .as_array()?
                    .iter()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(s))?
                    .get("containerPort")?
                    .as_u64()
            }),
            _ => None,
        }
    }
}

/// A readiness probe's `periodSeconds` and `failureThreshold` (defaults 10 and 3), whose product
/// is the worst-case time until it reports a failure; `None` when either is unreadable.
pub(crate) fn probe_timing(probe: &Value) -> Option<(u64, u64)> {
    let field = |key: &str, default: u64| match probe.get(key) {
        None | Some(Value::Null) => Some(default),
        Some(value) => units::seconds(value),
    };
    Some((
        field("periodSeconds", DEFAULT_PERIOD_SECONDS)?,
        field("failureThreshold", DEFAULT_FAILURE_THRESHOLD)?,
    ))
}

/// A preStop hook, by what it costs in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PreStop {
    /// No hook, or one with none of `sleep`, `exec`, `httpGet`.
    Missing,
    /// Sleeps this many seconds: `sleep.seconds`, `exec [sleep, N]`, `exec [sh, -c, "sleep N"]`.
    Sleep(u64),
    /// Runs this command (a shell script split into words); it lasts an unknown time.
    Exec(Vec<String>),
    /// Calls the container over HTTP; it lasts an unknown time.
    HttpGet,
}

impl PreStop {
    fn of(container: &Value) -> PreStop {
        let Some(hook) = container.get("lifecycle").and_then(|l| l.get("preStop")) else {
            return PreStop::Missing;
        };
        if let Some(sleep) = hook.get("sleep") {
            return match sleep.get("seconds").and_then(Value::as_u64) {
                Some(seconds) => PreStop::Sleep(seconds),
                // A sleep action whose length we cannot read still is a hook.
                None => PreStop::Exec(vec!["sleep".to_string()]),
            };
        }
        if let Some(exec) = hook.get("exec") {
            let command: Vec<String> = exec
                .get("command")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect();
            let words = shell_words(command);
            return match sleep_seconds(&words) {
                Some(seconds) => PreStop::Sleep(seconds),
                None => PreStop::Exec(words),
            };
        }
        if hook.get("httpGet").is_some() {
            return PreStop::HttpGet;
        }
        PreStop::Missing
    }
}

/// `[sh, -c, "sleep 5 && x"]` -> `[sleep, 5, &&, x]`; any other command as it is.
fn shell_words(command: Vec<String>) -> Vec<String> {
    let is_shell = command.first().is_some_and(|c| {
        matches!(
            basename(c),
            "sh" | "bash" | "ash" | "dash" | "zsh" | "busybox"
        )
    });
    match command.as_slice() {
        [_, flag, script, ..] if is_shell && flag == "-c" => script
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect(),
        _ => command,
    }
}

/// The seconds of a command that starts with `sleep N` (`N`, `Ns`, or a humantime duration;
/// a fraction counts as the whole seconds below it).
fn sleep_seconds(words: &[String]) -> Option<u64> {
    match words {
        [sleep, n, ..] if basename(sleep) == "sleep" => {
            units::duration(n).map(|d| d.as_secs()).or_else(|| {
                let fraction: f64 = n.parse().ok()?;
                // `as` saturates; a negative or NaN length is no sleep we can read.
                (fraction.is_finite() && fraction >= 0.0).then_some(fraction as u64)
            })
        }
        _ => None,
    }
}

/// The file name of a command (`/usr/local/bin/hitless` -> `hitless`).
pub(crate) fn basename(command: &str) -> &str {
    Path::new(command)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pre_stop(hook: Value) -> PreStop {
        PreStop::of(&json!({"lifecycle": {"preStop": hook}}))
    }

    #[test]
    fn pre_stop_hooks_by_their_length() {
        assert_eq!(
            pre_stop(json!({"sleep": {"seconds": 5}})),
            PreStop::Sleep(5)
        );
        assert_eq!(
            pre_stop(json!({"exec": {"command": ["sleep", "7"]}})),
            PreStop::Sleep(7)
        );
        assert_eq!(
            pre_stop(json!({"exec": {"command": ["/bin/sh", "-c", "sleep 5; nginx -s quit"]}})),
            PreStop::Sleep(5)
        );
        assert_eq!(
            pre_stop(json!({"exec": {"command": ["/bin/sleep", "10s"]}})),
            PreStop::Sleep(10)
        );
        assert_eq!(
            pre_stop(json!({"exec": {"command": ["hitless", "drain"]}})),
            PreStop::Exec(vec!["hitless".into(), "drain".into()])
        );
        assert_eq!(
            pre_stop(json!({"httpGet": {"path": "/stop"}})),
            PreStop::HttpGet
        );
        assert_eq!(
            pre_stop(json!({"exec": {"command": ["sleep", "2.5"]}})),
            PreStop::Sleep(2)
        );
        assert_eq!(pre_stop(json!({})), PreStop::Missing);
        assert_eq!(pre_stop(json!(null)), PreStop::Missing);
        assert_eq!(PreStop::of(&json!({})), PreStop::Missing);
    }

    #[test]
    fn probe_timing_uses_kubernetes_defaults() {
        assert_eq!(probe_timing(&json!({})), Some((10, 3)));
        assert_eq!(
            probe_timing(&json!({"periodSeconds": 1, "failureThreshold": 2})),
            Some((1, 2))
        );
        assert_eq!(probe_timing(&json!({"periodSeconds": "1"})), None);
    }
}
