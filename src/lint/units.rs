//! The units manifests write numbers in: Kubernetes integer seconds, durations (`5s`, `1m30s`,
//! or bare seconds as ingress-nginx annotations use them) and nginx sizes (`16k`). Every parser
//! answers `None` for what it cannot read, never panics, and does no arithmetic that can
//! overflow: the rules compare what is readable and skip the rest.

use std::time::Duration;

use serde_json::Value;

/// A Kubernetes integer field in seconds (`periodSeconds: 10`).
pub(crate) fn seconds(value: &Value) -> Option<u64> {
    value.as_u64()
}

/// A duration: humantime (`5s`, `1m30s`, `500ms`: Gateway API's and hitless's form) or a bare
/// count of seconds (`"60"`: ingress-nginx annotations).
pub(crate) fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().map(Duration::from_secs);
    }
    humantime::parse_duration(text).ok()
}

/// A duration written as a YAML value: a string as [`duration`], or a number of seconds.
pub(crate) fn duration_value(value: &Value) -> Option<Duration> {
    match value {
        Value::String(s) => duration(s),
        Value::Number(n) => n.as_u64().map(Duration::from_secs),
        _ => None,
    }
}

/// An nginx size in bytes: `4096`, `4k`/`4K`, `1m`/`1M`.
pub(crate) fn size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1024),
        (i, 'm' | 'M') => (&text[..i], 1024 * 1024),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// A duration for a message: `25s`, or humantime's form when not whole seconds.
pub(crate) fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_their_display() {
        assert_eq!(duration("60"), Some(Duration::from_secs(60)));
        assert_eq!(duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("99999999999999999999999"), None);
        assert_eq!(duration("soon"), None);
        assert_eq!(duration(""), None);
        assert_eq!(
            duration_value(&Value::from(5)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(size("16k"), Some(16 * 1024));
        assert_eq!(size("1M"), Some(1024 * 1024));
        assert_eq!(size("4096"), Some(4096));
        assert_eq!(size("k"), None);
        assert_eq!(size("99999999999999999999m"), None);
        assert_eq!(size("4kb"), None);
        assert_eq!(size(""), None);
        assert_eq!(size("é"), None);
        assert_eq!(show(Duration::from_secs(25)), "25s");
        assert_eq!(show(Duration::from_millis(1500)), "1s 500ms");
    }
}
