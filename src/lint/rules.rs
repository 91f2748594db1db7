//! The rule registry: every rule's stable id, its severity and a one-line summary, in one table,
//! so an id and its severity cannot drift apart between the file that checks the rule and the
//! report. The checks build findings only through [`Rule::finding`]; the table in `mod.rs`'s
//! documentation is this list in prose, and a test pins that both name the same ids.

use super::k8s::Object;
use super::{Finding, Severity};

/// One rule: what `hitless lint` reports under a stable id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub summary: &'static str,
}

impl Rule {
    /// A finding of this rule in `object` at `field`.
    pub(crate) fn finding(
        &self,
        object: &Object,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            rule: self.id,
            severity: self.severity,
            file: object.file.clone(),
            object: object.id(),
            field: field.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

const fn rule(id: &'static str, severity: Severity, summary: &'static str) -> Rule {
    Rule {
        id,
        severity,
        summary,
    }
}

use Severity::{Error, Warning};

pub const READINESS_MISSING: Rule = rule(
    "readiness-missing",
    Error,
    "a serving container has no readiness probe",
);
pub const READINESS_EQUALS_LIVENESS: Rule = rule(
    "readiness-equals-liveness",
    Warning,
    "readiness and liveness probe the same check",
);
pub const PRESTOP_MISSING: Rule = rule(
    "prestop-missing",
    Error,
    "a serving container has no preStop sleep, exec or httpGet hook",
);
pub const GRACE_SHORTER_THAN_PRESTOP: Rule = rule(
    "grace-shorter-than-prestop",
    Error,
    "the grace period is not longer than a preStop sleep",
);
pub const READINESS_TOO_SLOW: Rule = rule(
    "readiness-too-slow",
    Warning,
    "the readiness probe notices a drain after the drain delay or preStop sleep",
);
pub const NGINX_NEXT_UPSTREAM: Rule = rule(
    "nginx-next-upstream",
    Warning,
    "proxy-next-upstream does not retry on error, timeout and http_502",
);
pub const NGINX_READ_TIMEOUT: Rule = rule(
    "nginx-read-timeout",
    Warning,
    "proxy-read-timeout is not shorter than the client's timeout",
);
pub const NGINX_KEEPALIVE: Rule = rule(
    "nginx-keepalive",
    Error,
    "upstream-keepalive-timeout is not shorter than the app's keep-alive",
);
pub const NGINX_BACKEND_PROTOCOL: Rule = rule(
    "nginx-backend-protocol",
    Error,
    "backend-protocol does not match a port named https or grpc",
);
pub const NGINX_BUFFER_SIZE: Rule = rule(
    "nginx-buffer-size",
    Warning,
    "proxy-buffer-size is below 8k",
);
pub const HTTPROUTE_TIMEOUTS: Rule = rule(
    "httproute-timeouts",
    Error,
    "an HTTPRoute's backendRequest timeout exceeds its request timeout",
);
pub const HITLESS_DRAIN_GRACE: Rule = rule(
    "hitless-drain-grace",
    Error,
    "the grace period is shorter than hitless's drain delay + timeout",
);
pub const HITLESS_GRACE_PERIOD: Rule = rule(
    "hitless-grace-period",
    Warning,
    "the gateway config's drain.grace_period is not the pod's grace period",
);
pub const HITLESS_APP_OUTLIVES_DRAIN: Rule = rule(
    "hitless-app-outlives-drain",
    Error,
    "a sidecar pod's app stops before hitless's drain ends",
);
pub const HITLESS_PRESTOP_SOCKET: Rule = rule(
    "hitless-prestop-socket",
    Warning,
    "hitless's preStop hook talks to another socket than hitless listens on",
);

/// Every rule, in the order of the documentation's table.
pub const RULES: &[Rule] = &[
    READINESS_MISSING,
    READINESS_EQUALS_LIVENESS,
    PRESTOP_MISSING,
    GRACE_SHORTER_THAN_PRESTOP,
    READINESS_TOO_SLOW,
    NGINX_NEXT_UPSTREAM,
    NGINX_READ_TIMEOUT,
    NGINX_KEEPALIVE,
    NGINX_BACKEND_PROTOCOL,
    NGINX_BUFFER_SIZE,
    HTTPROUTE_TIMEOUTS,
    HITLESS_DRAIN_GRACE,
    HITLESS_GRACE_PERIOD,
    HITLESS_APP_OUTLIVES_DRAIN,
    HITLESS_PRESTOP_SOCKET,
];

#[cfg(test)]
mod tests {
    use super::RULES;

    #[test]
    fn ids_are_unique_and_the_documented_table_lists_them_all() {
        let doc = include_str!("mod.rs");
        for (i, rule) in RULES.iter().enumerate() {
            assert!(
                RULES[..i].iter().all(|r| r.id != rule.id),
                "{} twice",
                rule.id
            );
            let row = format!("//! | `{}` | {} |", rule.id, rule.severity);
            assert!(doc.contains(&row), "mod.rs does not document {row}");
        }
        let rows = doc.lines().filter(|l| l.starts_with("//! | `")).count();
        assert_eq!(rows, RULES.len(), "a documented rule is not in RULES");
    }
}
