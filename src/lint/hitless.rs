//! hitless itself in a pod: which containers run it, as a sidecar or as a gateway, with which
//! drain settings (the sidecar's flags, or the `drain:` section of the gateway's config in the
//! ConfigMap mounted into the pod), and the rules that hold hitless's drain to the pod around it
//! (formerly `tests/manifests.rs`, now checked on anyone's manifests): the grace period covers
//! delay + timeout, a sidecar's app sleeps in preStop until hitless is done, the preStop
//! `hitless drain` talks to the socket hitless listens on, and the config states the pod's grace
//! period. The drain settings are read here only; `workload.rs` borrows the delay for
//! `readiness-too-slow`. Unreadable settings leave the rules silent: `hitless check` owns the
//! validation of hitless's own flags and config.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::k8s::{Inventory, Object};
use super::pod::{basename, Container, Pod, PreStop, SPEC};
use super::rules::{
    HITLESS_APP_OUTLIVES_DRAIN, HITLESS_DRAIN_GRACE, HITLESS_GRACE_PERIOD, HITLESS_PRESTOP_SOCKET,
};
use super::units::{self, show};
use super::Finding;

/// hitless's defaults (README, "Defaults, in one place").
const DEFAULT_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_SOCKET: &str = "/tmp/hitless.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `hitless sidecar`: in front of an app in the same pod.
    Sidecar,
    /// `hitless run --config`: a gateway in front of Services.
    Gateway,
}

/// The drain settings of one hitless container and where they were read.
pub(crate) struct Drain<'a> {
    pub delay: Duration,
    pub timeout: Duration,
    pub socket: String,
    /// Where they were read, for messages: `the flags of container "x"` or the ConfigMap's id.
    pub source: String,
    /// The gateway config's ConfigMap, its data key and its `drain.grace_period`.
    pub config: Option<(&'a Object, String, Option<Duration>)>,
}

/// A container that runs hitless as a proxy.
pub(crate) struct Hitless<'a> {
    pub index: usize,
    pub mode: Mode,
    /// `None` when the settings cannot be known (the ConfigMap is not in the input, a value is
    /// unreadable).
    pub drain: Option<Drain<'a>>,
}

/// Whether a container runs the hitless binary: its image's repository is named like hitless,
/// or its command starts with a `hitless` binary.
pub(crate) fn is_hitless(container: &Container) -> bool {
    let image = container.image();
    let image = image.split('@').next().unwrap_or(image);
    let repository = image.rsplit('/').next().unwrap_or(image);
    let repository = repository.split(':').next().unwrap_or(repository);
    repository.contains("hitless") || words(container).0
}

/// The container's words after the `hitless` binary, and whether the command named it.
fn words(container: &Container) -> (bool, Vec<String>) {
    let mut argv = container.argv();
    let named = argv.first().is_some_and(|w| basename(w) == "hitless");
    if named {
        argv.remove(0);
    }
    (named, argv)
}

/// The value of `--name value` or `--name=value` (and `-s value`, `-s=value` for `short`).
fn flag<'w>(words: &'w [String], name: &str, short: Option<&str>) -> Option<&'w str> {
    let long = format!("--{name}");
    let names = [Some(long.as_str()), short];
    for (i, word) in words.iter().enumerate() {
        for n in names.iter().flatten() {
            if word == n {
                return words.get(i + 1).map(String::as_str);
            }
            if let Some(value) = word.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                return Some(value);
            }
        }
    }
    None
}

fn subcommand(words: &[String]) -> Option<&str> {
    words
        .iter()
        .map(String::as_str)
        .find(|w| !w.starts_with('-'))
}

/// Every hitless proxy container of the pod, with its drain settings where they can be known.
pub(crate) fn find<'a>(
    object: &'a Object,
    pod: &Pod<'a>,
    inventory: &Inventory<'a>,
) -> Vec<Hitless<'a>> {
    let mut found = Vec::new();
    for container in pod.containers.iter().filter(|c| is_hitless(c)) {
        let (_, words) = words(container);
        let (mode, drain) = match subcommand(&words) {
            Some("sidecar") => (Mode::Sidecar, sidecar_drain(container, &words)),
            Some("run") => (
                Mode::Gateway,
                gateway_drain(object, pod, container, &words, inventory),
            ),
            // `check`, `drain`, `demo`, or not hitless after all: no proxy to hold to the pod.
            _ => continue,
        };
        found.push(Hitless {
            index: container.index,
            mode,
            drain,
        });
    }
    found
}

fn sidecar_drain(container: &Container, words: &[String]) -> Option<Drain<'static>> {
    let setting = |name: &str, default: Duration| match flag(words, name, None) {
        Some(text) => units::duration(text),
        None => Some(default),
    };
    Some(Drain {
        delay: setting("drain-delay", DEFAULT_DELAY)?,
        timeout: setting("drain-timeout", DEFAULT_TIMEOUT)?,
        socket: flag(words, "control-socket", None)
            .unwrap_or(DEFAULT_SOCKET)
            .to_string(),
        source: format!("the flags of {}", container.label()),
        config: None,
    })
}

/// The drain section of the config file `--config` names, read from the ConfigMap volume
/// mounted at that file's folder (or at the file itself with `subPath`).
fn gateway_drain<'a>(
    object: &'a Object,
    pod: &Pod<'a>,
    container: &Container<'a>,
    words: &[String],
    inventory: &Inventory<'a>,
) -> Option<Drain<'a>> {
    let path = Path::new(flag(words, "config", Some("-c"))?);
    let mounts = container.value.get("volumeMounts")?.as_array()?;
    let (mount, key) = mounts.iter().find_map(|mount| {
        let at = Path::new(mount.get("mountPath")?.as_str()?);
        match mount.get("subPath").and_then(Value::as_str) {
            Some(sub) => (at == path).then(|| (mount, sub.to_string())),
            None => {
                let file = path.strip_prefix(at).ok()?.to_str()?;
                (!file.is_empty()).then(|| (mount, file.to_string()))
            }
        }
    })?;
    let volume = pod.volume(mount.get("name")?.as_str()?)?;
    let config_map = volume.get("configMap")?;
    let name = config_map.get("name")?.as_str()?;
    // `items` maps keys to other file names; without it each key is a file of its own name.
    let key = match config_map.get("items").and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .find(|i| i.get("path").and_then(Value::as_str) == Some(key.as_str()))?
            .get("key")?
            .as_str()?
            .to_string(),
        None => key,
    };
    let found = inventory.find("ConfigMap", object.namespace.as_deref(), name)?;
    let text = found.value.get("data")?.get(&key)?.as_str()?;
    // Only `drain:` is read, loosely, not the whole config through its validation: a config
    // that does not validate is `hitless check`'s finding, and lint still judges the pod.
    let config: Value = serde_saphyr::from_str(text).ok()?;
    let drain = config.get("drain").filter(|d| !d.is_null());
    let setting = |name: &str, default: Duration| match drain.and_then(|d| d.get(name)) {
        None | Some(Value::Null) => Some(default),
        Some(value) => units::duration_value(value),
    };
    let grace_period = match drain.and_then(|d| d.get("grace_period")) {
        None | Some(Value::Null) => None,
        Some(value) => Some(units::duration_value(value)?),
    };
    Some(Drain {
        delay: setting("delay", DEFAULT_DELAY)?,
        timeout: setting("timeout", DEFAULT_TIMEOUT)?,
        socket: match drain.and_then(|d| d.get("control_socket")) {
            None | Some(Value::Null) => DEFAULT_SOCKET.to_string(),
            Some(value) => value.as_str()?.to_string(),
        },
        source: found.id(),
        config: Some((found, key, grace_period)),
    })
}

/// The socket a preStop command's `hitless drain` talks to, if it runs `hitless drain`.
fn drain_socket(command: &[String]) -> Option<&str> {
    let start = command.iter().position(|w| basename(w) == "hitless")?;
    let words = &command[start + 1..];
    (subcommand(words) == Some("drain"))
        .then(|| flag(words, "socket", None).unwrap_or(DEFAULT_SOCKET))
}

/// Whole seconds at least as long as `d`.
fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

pub(crate) fn check(object: &Object, pod: &Pod, proxies: &[Hitless], findings: &mut Vec<Finding>) {
    for proxy in proxies {
        let Some(drain) = &proxy.drain else { continue };
        let Some(container) = pod.containers.iter().find(|c| c.index == proxy.index) else {
            continue;
        };
        let needed = drain.delay.saturating_add(drain.timeout);
        let drain_text = format!(
            "delay {} + timeout {} = {}, from {}",
            show(drain.delay),
            show(drain.timeout),
            show(needed),
            drain.source,
        );

        if let Some(grace) = pod.grace {
            if Duration::from_secs(grace) < needed {
                findings.push(HITLESS_DRAIN_GRACE.finding(
                    object,
                    format!("{SPEC}.terminationGracePeriodSeconds"),
                    format!(
                        "{} is shorter than hitless's drain ({drain_text}): the kubelet kills \
                         hitless (SIGKILL) with requests in flight",
                        pod.grace_text(grace)
                    ),
                    format!(
                        "set terminationGracePeriodSeconds to at least {}, or shorten the drain",
                        ceil_seconds(needed)
                    ),
                ));
            }
            if let Some((config, key, Some(stated))) = &drain.config {
                if *stated != Duration::from_secs(grace) {
                    findings.push(HITLESS_GRACE_PERIOD.finding(
                        config,
                        format!("data[\"{key}\"].drain.grace_period"),
                        format!(
                            "drain.grace_period {} is not the grace period of {} ({}): \
                             `hitless check` judges the drain against the wrong number",
                            show(*stated),
                            object.id(),
                            pod.grace_text(grace)
                        ),
                        format!("set drain.grace_period: {grace}s"),
                    ));
                }
            }
        }

        if let PreStop::Exec(command) = &container.pre_stop {
            if let Some(socket) = drain_socket(command) {
                if Path::new(socket) != Path::new(&drain.socket) {
                    findings.push(HITLESS_PRESTOP_SOCKET.finding(
                        object,
                        container.field("lifecycle.preStop.exec.command"),
                        format!(
                            "the preStop hook runs `hitless drain` on {socket}, but hitless \
                             listens on {} (from {}): the hook fails (FailedPreStopHook) and \
                             hitless drains only when SIGTERM comes",
                            drain.socket, drain.source
                        ),
                        format!("pass `--socket {}` to hitless drain", drain.socket),
                    ));
                }
            }
        }

        if proxy.mode == Mode::Sidecar {
            for app in pod
                .containers
                .iter()
                .filter(|c| c.serving && !is_hitless(c))
            {
                let PreStop::Sleep(sleep) = app.pre_stop else {
                    continue;
                };
                if Duration::from_secs(sleep) < needed {
                    findings.push(HITLESS_APP_OUTLIVES_DRAIN.finding(
                        object,
                        app.field("lifecycle.preStop"),
                        format!(
                            "{} sleeps {sleep}s in preStop, but hitless drains for up to {} \
                             ({drain_text}): the app gets SIGTERM while hitless still forwards \
                             requests to it",
                            app.label(),
                            show(needed)
                        ),
                        format!(
                            "sleep at least {} seconds in the app's preStop (and keep the grace \
                             period above that)",
                            ceil_seconds(needed)
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn flags_in_both_spellings() {
        let words = strings(&[
            "sidecar",
            "--drain-delay",
            "3s",
            "--drain-timeout=9s",
            "-c=x",
        ]);
        assert_eq!(flag(&words, "drain-delay", None), Some("3s"));
        assert_eq!(flag(&words, "drain-timeout", None), Some("9s"));
        assert_eq!(flag(&words, "config", Some("-c")), Some("x"));
        assert_eq!(flag(&words, "control-socket", None), None);
        assert_eq!(flag(&strings(&["--x"]), "x", None), None);
    }

    #[test]
    fn the_socket_a_drain_hook_names() {
        let hook = strings(&["/usr/local/bin/hitless", "drain", "--socket", "/run/h.sock"]);
        assert_eq!(drain_socket(&hook), Some("/run/h.sock"));
        assert_eq!(
            drain_socket(&strings(&["hitless", "drain"])),
            Some(DEFAULT_SOCKET)
        );
        assert_eq!(drain_socket(&strings(&["hitless", "check"])), None);
        assert_eq!(drain_socket(&strings(&["sleep", "5"])), None);
    }
}
