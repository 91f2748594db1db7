//! Gateway API HTTPRoutes: a rule whose `timeouts.backendRequest` (one try to a backend) is
//! longer than its `timeouts.request` (the whole request, retries included) can never use the
//! time it asks for; the request times out first and the client gets a 504 while the backend
//! still works. A zero duration means "no timeout" in Gateway API, so it is never compared.

use std::time::Duration;

use serde_json::Value;

use super::k8s::Object;
use super::rules::HTTPROUTE_TIMEOUTS;
use super::units::{self, show};
use super::Finding;

pub(crate) fn check(route: &Object, findings: &mut Vec<Finding>) {
    let rules = route
        .value
        .get("spec")
        .and_then(|s| s.get("rules"))
        .and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let Some(timeouts) = rule.get("timeouts") else {
            continue;
        };
        let read = |key: &str| {
            timeouts
                .get(key)
                .and_then(Value::as_str)
                .and_then(units::duration)
                .filter(|d| *d > Duration::ZERO)
        };
        let (Some(request), Some(backend)) = (read("request"), read("backendRequest")) else {
            continue;
        };
        if backend <= request {
            continue;
        }
        findings.push(HTTPROUTE_TIMEOUTS.finding(
            route,
            format!("spec.rules[{i}].timeouts.backendRequest"),
            format!(
                "timeouts.backendRequest {} is longer than timeouts.request {}: the request \
                 times out first, so the backend's time is never used and retries never happen",
                show(backend),
                show(request)
            ),
            format!(
                "set backendRequest to at most {} (request), or raise request",
                show(request)
            ),
        ));
    }
}
