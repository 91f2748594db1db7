//! The termination and probe rules every Deployment and StatefulSet must satisfy, hitless or
//! not: a serving container has a readiness probe of its own (not its liveness check) and a
//! preStop hook, the grace period outlasts the preStop sleep, and readiness notices a drain
//! before the pod stops serving. The reference a probe is held to is the preStop sleep, or for
//! hitless the drain delay that `hitless.rs` read (hitless drains on SIGTERM by itself, so it
//! needs no preStop hook).

use std::time::Duration;

use serde_json::{json, Value};

use super::hitless::{is_hitless, Hitless};
use super::k8s::Object;
use super::pod::{probe_timing, Container, Pod, PreStop, SPEC};
use super::rules::{
    GRACE_SHORTER_THAN_PRESTOP, PRESTOP_MISSING, READINESS_EQUALS_LIVENESS, READINESS_MISSING,
    READINESS_TOO_SLOW,
};
use super::units::show;
use super::Finding;

pub(crate) fn check(object: &Object, pod: &Pod, proxies: &[Hitless], findings: &mut Vec<Finding>) {
    for container in &pod.containers {
        let readiness = container.probe("readinessProbe");
        if container.serving && readiness.is_none() {
            findings.push(READINESS_MISSING.finding(
                object,
                container.field("readinessProbe"),
                format!(
                    "{} has no readiness probe: it gets traffic as soon as it starts, before it \
                     can serve, and keeps it when it cannot",
                    container.label()
                ),
                "add a readinessProbe (e.g. httpGet on an endpoint that answers 200 only when \
                 the app can serve)",
            ));
        }
        if container.serving && container.pre_stop == PreStop::Missing && !is_hitless(container) {
            findings.push(PRESTOP_MISSING.finding(
                object,
                container.field("lifecycle.preStop"),
                format!(
                    "{} has no preStop hook (sleep, exec or httpGet): it gets SIGTERM while \
                     load balancers still send it requests",
                    container.label()
                ),
                "add lifecycle.preStop.sleep.seconds: 5 (or exec [\"sleep\", \"5\"] on \
                 Kubernetes before 1.30)",
            ));
        }
        if let (Some(readiness), Some(liveness)) = (readiness, container.probe("livenessProbe")) {
            if let Some((kind, check)) = probe_check(readiness, container) {
                if probe_check(liveness, container).is_some_and(|(_, other)| other == check) {
                    findings.push(READINESS_EQUALS_LIVENESS.finding(
                        object,
                        container.field("readinessProbe"),
                        format!(
                            "{}'s readiness and liveness probes run the same {kind} check: when \
                             it fails the kubelet restarts the container instead of only taking \
                             it out of rotation",
                            container.label()
                        ),
                        "give readiness its own check (e.g. /readyz, failing while the app \
                         cannot serve or drains); keep liveness to \"the process is alive\"",
                    ));
                }
            }
        }
        if let Some(readiness) = readiness {
            readiness_too_slow(object, container, readiness, proxies, findings);
        }
    }
    grace_shorter_than_prestop(object, pod, findings);
}

/// The check a probe runs, its timing left out and defaults and named ports filled in, so that
/// `port: http` and `port: 8080` compare equal.
fn probe_check(probe: &Value, container: &Container) -> Option<(&'static str, Value)> {
    for kind in ["httpGet", "tcpSocket", "grpc", "exec"] {
        let Some(check) = probe.get(kind) else {
            continue;
        };
        let mut check = check.clone();
        if let Some(map) = check.as_object_mut() {
            let port = map.get("port").and_then(|p| container.port_number(p));
            if let Some(port) = port {
                map.insert("port".into(), port.into());
            }
            if kind == "httpGet" {
                let path = map.get("path").and_then(Value::as_str).unwrap_or("/");
                let scheme = map.get("scheme").and_then(Value::as_str).unwrap_or("HTTP");
                let (path, scheme) = (path.to_string(), scheme.to_ascii_uppercase());
                map.insert("path".into(), path.into());
                map.insert("scheme".into(), scheme.into());
            }
        }
        return Some((kind, json!({ kind: check })));
    }
    None
}

fn readiness_too_slow(
    object: &Object,
    container: &Container,
    readiness: &Value,
    proxies: &[Hitless],
    findings: &mut Vec<Finding>,
) {
    let reference = match proxies.iter().find(|p| p.index == container.index) {
        Some(proxy) => proxy.drain.as_ref().map(|d| {
            let text = format!(
                "hitless's drain delay {} (from {})",
                show(d.delay),
                d.source
            );
            (d.delay, text)
        }),
        None => match container.pre_stop {
            PreStop::Sleep(sleep) => Some((
                Duration::from_secs(sleep),
                format!("its preStop sleep {sleep}s"),
            )),
            _ => None,
        },
    };
    let (Some((reference, reference_text)), Some((period, failures))) =
        (reference, probe_timing(readiness))
    else {
        return;
    };
    let notice = period.saturating_mul(failures);
    if Duration::from_secs(notice) <= reference {
        return;
    }
    findings.push(READINESS_TOO_SLOW.finding(
        object,
        container.field("readinessProbe"),
        format!(
            "{}'s readiness probe takes up to {notice}s to notice a drain (periodSeconds \
             {period} × failureThreshold {failures}), longer than {reference_text}: load \
             balancers that follow readiness send requests after it stops serving",
            container.label()
        ),
        format!(
            "make periodSeconds × failureThreshold at most {} (e.g. periodSeconds: 1, \
             failureThreshold: {})",
            show(reference),
            reference.as_secs().clamp(1, 3)
        ),
    ));
}

/// One finding per pod, for the longest preStop sleep the grace period does not outlast.
fn grace_shorter_than_prestop(object: &Object, pod: &Pod, findings: &mut Vec<Finding>) {
    let Some(grace) = pod.grace else { return };
    let longest = pod
        .containers
        .iter()
        .filter_map(|c| match c.pre_stop {
            PreStop::Sleep(sleep) => Some((sleep, c)),
            _ => None,
        })
        .max_by_key(|(sleep, c)| (*sleep, std::cmp::Reverse(c.index)));
    let Some((sleep, container)) = longest else {
        return;
    };
    if grace > sleep {
        return;
    }
    findings.push(GRACE_SHORTER_THAN_PRESTOP.finding(
        object,
        format!("{SPEC}.terminationGracePeriodSeconds"),
        format!(
            "{} is not longer than {}'s preStop sleep {sleep}s: the kubelet kills it (SIGKILL) \
             before it can finish its requests after SIGTERM",
            pod.grace_text(grace),
            container.label()
        ),
        format!(
            "set terminationGracePeriodSeconds above {sleep} by the app's shutdown time (e.g. \
             {})",
            sleep.saturating_add(15)
        ),
    ));
}
