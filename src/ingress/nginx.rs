//! ingress-nginx annotations as hitless settings. Each annotation an Ingress carries gets one
//! line in the report: it maps, it maps differently (and how), hitless has no equivalent, or
//! it is refused (raw nginx configuration: the retired controller's main security problem).
//! Nothing is silently ignored.

use serde_json::{json, Map, Value};

use super::{Note, Outcome};
use crate::lint::{duration, Object};

const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// What an Ingress's annotations set: on its routes and on the backends they use.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Settings {
    /// `timeouts:` of each route.
    pub timeouts: Map<String, Value>,
    /// `retry:` of each route.
    pub retry: Map<String, Value>,
    /// Backend settings (`protocol`, `connect_timeout`, `pool`).
    pub backend: Map<String, Value>,
    /// `service-upstream: "true"`: send to the Service's cluster IP, not to its pods.
    pub service_upstream: bool,
    /// `proxy-next-upstream: off`: no retry, whatever `-tries` says.
    no_retry: bool,
    /// A canary Ingress (`canary: "true"`): a weighted or conditional copy of another one,
    /// merged into the main Ingress's routes of the same host and path (`translate.rs`).
    pub canary: bool,
    /// `canary-weight` out of `canary-weight-total` (default 100).
    pub canary_weight: Option<u64>,
    pub canary_weight_total: Option<u64>,
    /// `canary-by-header` and its `canary-by-header-value` (default `always`).
    pub canary_header: Option<String>,
    pub canary_header_value: Option<String>,
    /// `rewrite-target`: the path sent upstream (see `path_plan`).
    pub rewrite_target: Option<String>,
    /// `use-regex: "true"`: paths are regular expressions.
    pub use_regex: bool,
    /// `app-root`: `/` redirects there.
    pub app_root: Option<String>,
    /// `ssl-redirect` (`None`: the default, on for hosts with TLS).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect: "true"`: every host redirects to HTTPS, TLS section or not.
    pub force_ssl_redirect: bool,
}

/// How one Ingress path is matched and rewritten under the Ingress's annotations.
pub(super) enum PathPlan {
    /// Match the path as written, sending it upstream with `rewrite` (a route's `rewrite:`).
    Literal { rewrite: Option<Value> },
    /// ingress-nginx's documented idiom, path `/prefix(/|$)(.*)` with `rewrite-target:
    /// /target/$2`: match `prefix` (segment-wise) and replace it with `target`.
    Prefix { prefix: String, rewrite: Value },
    /// `use-regex`: the path is a regular expression, matched as nginx's `location ~*`:
    /// case-insensitive, from the start of the path (this pattern, for `match.path_regex`).
    Pattern(String),
    /// A regular expression hitless cannot match: the path is left out, for this reason.
    Regex(String),
}

/// Characters that make an nginx location a regular expression rather than a literal.
fn regex_like(path: &str) -> bool {
    path.contains([
        '(', ')', '[', ']', '*', '+', '?', '{', '}', '|', '^', '$', '\\',
    ])
}

/// The plan for `path` (an Ingress path) under `settings`.
pub(super) fn path_plan(settings: &Settings, path: &str) -> PathPlan {
    let Some(target) = &settings.rewrite_target else {
        if settings.use_regex && regex_like(path) {
            return PathPlan::Pattern(format!("(?i)^{path}"));
        }
        return PathPlan::Literal { rewrite: None };
    };
    // `/prefix(/|$)(.*)` -> `/target/$2`: the rest of the path kept under a new prefix.
    let idiom = path
        .strip_suffix("(/|$)(.*)")
        .filter(|prefix| prefix.starts_with('/') && !regex_like(prefix));
    let kept = target
        .strip_suffix("$2")
        .filter(|t| t.starts_with('/') && !t.contains('$'));
    if let (Some(prefix), Some(kept)) = (idiom, kept) {
        let replacement = match kept.trim_end_matches('/') {
            "" => "/",
            t => t,
        };
        return PathPlan::Prefix {
            prefix: prefix.to_string(),
            rewrite: json!({ "path_prefix": replacement }),
        };
    }
    if regex_like(path) || target.contains('$') {
        return PathPlan::Regex(format!(
            "{path:?} with rewrite-target {target:?}: hitless rewrites the whole path, or a \
             prefix in the /prefix(/|$)(.*) -> /target/$2 form; not imported"
        ));
    }
    // No capture groups: nginx replaces the whole path with the target.
    PathPlan::Literal {
        rewrite: Some(json!({ "path": target })),
    }
}

pub(super) fn settings(ingress: &Object, notes: &mut Vec<Note>) -> Settings {
    let mut settings = Settings::default();
    let Some(annotations) = ingress.annotations() else {
        return settings;
    };
    let object = ingress.id();
    for (key, value) in annotations {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let text = value.as_str().unwrap_or_default().trim();
        let (outcome, message) = one(name, text, &mut settings);
        notes.push(Note {
            object: object.clone(),
            source: key.clone(),
            outcome,
            message,
        });
    }
    if settings.no_retry {
        settings.retry.clear();
        settings.retry.insert("attempts".into(), json!(1));
    }
    settings
}

/// Seconds (`"60"`) or a duration (`"60s"`) as hitless writes it.
fn seconds(text: &str) -> Option<String> {
    duration(text)
        .filter(|d| !d.is_zero())
        .map(|d| humantime::format_duration(d).to_string())
}

fn one(name: &str, text: &str, s: &mut Settings) -> (Outcome, String) {
    use Outcome::*;
    let bad = || {
        (
            Unsupported,
            format!("\"{text}\" is not a value hitless can read: ignored"),
        )
    };
    match name {
        "proxy-connect-timeout" => match seconds(text) {
            Some(d) => {
                s.backend.insert("connect_timeout".into(), json!(d));
                (Maps, format!("backend connect_timeout: {d}"))
            }
            None => bad(),
        },
        "proxy-read-timeout" => match seconds(text) {
            Some(d) => {
                s.timeouts.insert("backend_request".into(), json!(d));
                (
                    Differs,
                    format!(
                        "timeouts.backend_request: {d}: nginx's limit is between two reads of the \
                         answer, hitless's until the response head (a body then streams without one)"
                    ),
                )
            }
            None => bad(),
        },
        "proxy-send-timeout" => (
            Differs,
            "hitless has no separate send timeout: timeouts.request bounds the request until the \
             answer starts"
                .into(),
        ),
        "proxy-next-upstream" => next_upstream(text, s),
        "proxy-next-upstream-tries" => match text.parse::<u64>() {
            Ok(0) => {
                s.retry.insert("attempts".into(), json!(10));
                (
                    Differs,
                    "0 (no limit in nginx): retry.attempts: 10, hitless's most; the retry budget \
                     bounds retries as a whole"
                        .into(),
                )
            }
            Ok(n) => {
                let n = n.min(10);
                s.retry.insert("attempts".into(), json!(n));
                (Maps, format!("retry.attempts: {n}"))
            }
            Err(_) => bad(),
        },
        "proxy-next-upstream-timeout" => match text {
            "0" => (
                Maps,
                "0: no limit on trying other servers (hitless bounds them with timeouts.request \
                 and the retry budget)"
                    .into(),
            ),
            _ => (
                Differs,
                "not set: nginx stops moving to the next server after this long but never cuts a \
                 try; hitless bounds the whole request with timeouts.request (default 30s, set it \
                 above the read timeout) and retries with the retry budget"
                    .into(),
            ),
        },
        "backend-protocol" => {
            let protocol = match text.to_ascii_uppercase().as_str() {
                "HTTP" => "http",
                "HTTPS" => "https",
                "GRPC" => "grpc",
                "GRPCS" => "grpcs",
                _ => {
                    return (
                        Unsupported,
                        format!(
                            "\"{text}\": hitless speaks HTTP, HTTPS, GRPC and GRPCS to backends"
                        ),
                    )
                }
            };
            s.backend.insert("protocol".into(), json!(protocol));
            (Maps, format!("backend protocol: {protocol}"))
        }
        "upstream-keepalive-timeout" => match seconds(text) {
            Some(d) => {
                s.backend
                    .insert("pool".into(), json!({ "idle_timeout": d }));
                (
                    Maps,
                    format!(
                        "backend pool.idle_timeout: {d} (keep it below the app's keep-alive; \
                         hitless's default, 1.5s, already is for most servers)"
                    ),
                )
            }
            None => bad(),
        },
        "proxy-body-size" | "client-body-buffer-size" => (
            Unsupported,
            "hitless streams request bodies and sets no size limit".into(),
        ),
        "proxy-buffer-size" | "proxy-buffering" | "proxy-buffers-number" => (
            Differs,
            "accepted, no effect: hitless reads response heads up to \
             limits.max_response_header_bytes (64 KiB) and streams bodies, so no 502 for a head \
             under that"
                .into(),
        ),
        "proxy-http-version" => match text {
            "1.1" => (Maps, "hitless speaks HTTP/1.1 to http backends".into()),
            _ => (
                Unsupported,
                format!(
                    "\"{text}\": hitless speaks HTTP/1.1 (or HTTP/2 for h2c and gRPC backends)"
                ),
            ),
        },
        "ssl-redirect" => match text {
            "true" | "false" => {
                s.ssl_redirect = Some(text == "true");
                (
                    Maps,
                    "plain-HTTP requests for the hosts in spec.tls get 308 to https when on".into(),
                )
            }
            _ => bad(),
        },
        "force-ssl-redirect" => match text {
            "true" | "false" => {
                s.force_ssl_redirect = text == "true";
                (
                    Maps,
                    "plain-HTTP requests for every host get 308 to https when on".into(),
                )
            }
            _ => bad(),
        },
        "rewrite-target" if text.starts_with('/') => {
            s.rewrite_target = Some(text.to_string());
            (
                Maps,
                "a whole-path rewrite, or the /prefix(/|$)(.*) -> /target/$2 idiom as a prefix \
                 rewrite; other regular expressions are reported per path"
                    .into(),
            )
        }
        "rewrite-target" => bad(),
        "use-regex" => {
            s.use_regex = text == "true";
            (
                Differs,
                "paths that are regular expressions match as `path_regex`, case-insensitive from \
                 the start of the path as nginx's `~*` locations; one hitless cannot match \
                 (look-around, back-references) is reported per path and left out"
                    .into(),
            )
        }
        "app-root" if text.starts_with('/') && !text.contains(['?', '#', ' ']) => {
            s.app_root = Some(text.to_string());
            (Maps, format!("`/` redirects (302) to {text}"))
        }
        "app-root" => bad(),
        "service-upstream" if text != "true" => (Maps, "off: hitless follows the pods".into()),
        "service-upstream" => {
            s.service_upstream = true;
            (
                Differs,
                "backends discovered by DNS on the Service's name (its cluster IP): kube-proxy then \
                 picks the pod, and a retry may meet the same one; without the annotation hitless \
                 follows the pods themselves"
                    .into(),
            )
        }
        "affinity"
        | "affinity-mode"
        | "session-cookie-name"
        | "session-cookie-path"
        | "session-cookie-max-age"
        | "session-cookie-expires" => (
            Unsupported,
            "hitless has no session affinity: balancing is per request (p2c)".into(),
        ),
        "canary" if text == "true" => {
            s.canary = true;
            (
                Maps,
                "merged into the main Ingress's route of the same host and path: a weighted \
                 split (canary-weight) or a header condition (canary-by-header)"
                    .into(),
            )
        }
        "canary" => (Maps, "off".into()),
        "canary-weight" | "canary-weight-total" => match text.parse::<u64>() {
            Ok(0) if name == "canary-weight-total" => bad(),
            Ok(n) if n <= 1_000_000 => {
                if name == "canary-weight" {
                    s.canary_weight = Some(n);
                } else {
                    s.canary_weight_total = Some(n);
                }
                (Maps, "the weights of the split with the main route".into())
            }
            _ => bad(),
        },
        "canary-by-header" if !text.is_empty() => {
            s.canary_header = Some(text.to_string());
            (
                Maps,
                "a route with that header condition, tried before the main one".into(),
            )
        }
        "canary-by-header-value" if !text.is_empty() => {
            s.canary_header_value = Some(text.to_string());
            (Maps, "the header's value that selects the canary".into())
        }
        n if n.starts_with("canary") => (
            Unsupported,
            "cookie and pattern canaries: hitless matches headers by exact value; not applied"
                .into(),
        ),
        n if n.ends_with("-snippet") || n == "configuration-snippet" => (
            Refused,
            "raw nginx configuration is refused (it was the retired controller's main security \
             problem): the Ingress is imported without it"
                .into(),
        ),
        _ => (Unsupported, "no hitless equivalent: ignored".into()),
    }
}

fn next_upstream(text: &str, s: &mut Settings) -> (Outcome, String) {
    use Outcome::*;
    let mut on = Vec::new();
    let mut lost = Vec::new();
    let mut idempotent = false;
    for token in text.split_whitespace() {
        match token {
            "off" => {
                s.no_retry = true;
                return (
                    Maps,
                    "retry.attempts: 1 (no retry, whatever proxy-next-upstream-tries says)".into(),
                );
            }
            "error" => on.extend(["connect-failure", "refused-stream", "reset"]),
            "timeout" => on.extend(["connect-failure", "backend-timeout"]),
            "http_502" => on.push("502"),
            "http_503" => on.push("503"),
            "http_504" => on.push("504"),
            "non_idempotent" => idempotent = true,
            other => lost.push(other),
        }
    }
    on.sort_unstable();
    on.dedup();
    s.retry.insert("on".into(), json!(on));
    if idempotent {
        s.retry.insert("idempotent".into(), json!(true));
    }
    let mut message = format!("retry.on: [{}]", on.join(", "));
    if idempotent {
        message.push_str(", retry.idempotent: true");
    }
    if lost.is_empty() {
        (Maps, message)
    } else {
        (
            Differs,
            format!("{message}; not retried by hitless: {}", lost.join(", ")),
        )
    }
}
