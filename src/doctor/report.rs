//! What `hitless doctor` found and how it says it: one line per check, `<verdict> <check>:
//! <what was found> [-> fix: <setting>]`, grouped per endpoint under a title line, a summary,
//! and the exit status they mean; or the same lines as a JSON array for machines. Nothing here
//! probes or judges: the checks decide the verdicts, this module only renders them, in the
//! order the checks produced them.

use std::fmt::Write;

use serde_json::{json, Value};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// As configured, this works.
    Ok,
    /// Works, but costs something (no connection reuse, a certificate expiring soon, a margin
    /// too thin) or may fail later.
    Warn,
    /// Requests through hitless would fail (502s, or an endpoint kept out of rotation).
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One check's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A stable name: `connect`, `protocol`, `tls`, `certificate`, `verify`, `health`,
    /// `grpc-health`, `header-size`, `keep-alive-header`, `idle-timeout`, `reuse`,
    /// `websocket`, `endpoints`.
    pub check: &'static str,
    pub verdict: Verdict,
    pub found: String,
    /// The setting (or, when hitless has none, the change in the app) that fixes it.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, found: impl Into<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::Ok,
            found: found.into(),
            fix: None,
        }
    }

    pub fn warn(check: &'static str, found: impl Into<String>, fix: Option<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::Warn,
            found: found.into(),
            fix,
        }
    }

    pub fn fail(check: &'static str, found: impl Into<String>, fix: Option<String>) -> Finding {
        Finding {
            check,
            verdict: Verdict::Fail,
            found: found.into(),
            fix,
        }
    }
}

/// The findings of one endpoint (or, with `endpoint: None`, of a backend as a whole: its
/// endpoint discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The backend's name; `None` when probing a URL.
    pub backend: Option<String>,
    pub endpoint: Option<String>,
    /// The first line of the group, e.g. `backend api, endpoint 10.0.0.5:8080 (protocol http)`.
    pub title: String,
    pub findings: Vec<Finding>,
}

/// Everything one run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub groups: Vec<Group>,
}

impl Report {
    /// Every finding with its group, in order.
    pub fn findings(&self) -> impl Iterator<Item = (&Group, &Finding)> {
        self.groups
            .iter()
            .flat_map(|g| g.findings.iter().map(move |f| (g, f)))
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.findings()
            .filter(|(_, f)| f.verdict == verdict)
            .count()
    }

    /// 1 when a finding would cause 502s, else 0 (usage and config errors exit 64 before a
    /// report exists).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.count(Verdict::Fail) > 0)
    }

    /// For people: groups, one line per check, then a summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for group in &self.groups {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{}", group.title);
            for f in &group.findings {
                let _ = write!(out, "  {:<4} {}: {}", f.verdict.as_str(), f.check, f.found);
                if let Some(fix) = &f.fix {
                    let _ = write!(out, " -> fix: {fix}");
                }
                out.push('\n');
            }
            out.push('\n');
        }
        let (fail, warn, ok) = (
            self.count(Verdict::Fail),
            self.count(Verdict::Warn),
            self.count(Verdict::Ok),
        );
        let _ = write!(out, "{fail} FAIL, {warn} warn, {ok} ok");
        out.push_str(if fail > 0 {
            ": requests would fail (exit 1)\n"
        } else {
            "\n"
        });
        out
    }

    /// For machines: an array of `{backend, endpoint, check, verdict, found, fix}`.
    pub fn json(&self) -> String {
        let list: Vec<Value> = self
            .findings()
            .map(|(g, f)| {
                json!({
                    "backend": g.backend,
                    "endpoint": g.endpoint,
                    "check": f.check,
                    "verdict": f.verdict.as_str(),
                    "found": f.found,
                    "fix": f.fix,
                })
            })
            .collect();
        // `Value`'s alternate Display is pretty JSON and cannot fail.
        format!("{:#}\n", Value::Array(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_json_and_exit_code() {
        let report = Report {
            groups: vec![Group {
                backend: Some("api".into()),
                endpoint: Some("10.0.0.5:8080".into()),
                title: "backend api, endpoint 10.0.0.5:8080 (protocol http)".into(),
                findings: vec![
                    Finding::ok("connect", "connected in 0.2 ms"),
                    Finding::fail(
                        "protocol",
                        "TLS",
                        Some("backends.api.protocol: https".into()),
                    ),
                ],
            }],
        };
        let text = report.text();
        assert!(
            text.contains("  ok   connect: connected in 0.2 ms\n"),
            "{text}"
        );
        assert!(
            text.contains("  FAIL protocol: TLS -> fix: backends.api.protocol: https\n"),
            "{text}"
        );
        assert!(text.ends_with("1 FAIL, 0 warn, 1 ok: requests would fail (exit 1)\n"));
        assert_eq!(report.exit_code(), 1);
        let json: Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json[1]["verdict"], "FAIL");
        assert_eq!(json[1]["fix"], "backends.api.protocol: https");
        assert_eq!(json[0]["fix"], Value::Null);
        assert_eq!(json[0]["endpoint"], "10.0.0.5:8080");
    }
}
