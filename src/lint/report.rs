//! What `hitless lint` prints and how it exits: findings in one deterministic order (file,
//! object, field, rule), written for people (text, in the shape of a compiler's diagnostics) or
//! for tools (a JSON array with the fields of `Finding`), and the exit status they mean. Nothing
//! here decides what is wrong; it only says it.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{Finding, Format, Severity};

pub(crate) fn sort(findings: &mut Vec<Finding>) {
    findings.sort_by(|a, b| {
        (&a.file, &a.object, &a.field, a.rule, &a.message)
            .cmp(&(&b.file, &b.object, &b.field, b.rule, &b.message))
    });
    findings.dedup();
}

/// The findings as `format` writes them, ending with a newline.
pub fn render(findings: &[Finding], format: Format) -> String {
    match format {
        Format::Text => text(findings),
        Format::Json => {
            let list: Vec<Value> = findings
                .iter()
                .map(|f| {
                    json!({
                        "rule": f.rule,
                        "severity": f.severity.as_str(),
                        "file": f.file,
                        "object": f.object,
                        "field": f.field,
                        "message": f.message,
                        "fix": f.fix,
                    })
                })
                .collect();
            // `Value`'s alternate Display is pretty JSON and cannot fail.
            format!("{:#}\n", Value::Array(list))
        }
    }
}

fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}[{}]: {}", f.severity, f.rule, f.message);
        let _ = writeln!(out, "  --> {}: {}: {}", f.file, f.object, f.field);
        let _ = writeln!(out, "  fix: {}\n", f.fix);
    }
    let count = |severity| findings.iter().filter(|f| f.severity == severity).count();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if findings.is_empty() {
        out.push_str("no findings\n");
    } else {
        let _ = writeln!(
            out,
            "{}, {}",
            plural(count(Severity::Error), "error"),
            plural(count(Severity::Warning), "warning")
        );
    }
    out
}

/// 0 when no finding is an error (warnings allowed), 1 when one is. An input that cannot be
/// read or parsed exits with [`super::LintError::EXIT_CODE`] instead.
pub fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.severity == Severity::Error))
}
