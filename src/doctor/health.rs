//! The probe's answer judged: the health path's status (or, for gRPC backends, the gRPC health
//! protocol, `grpc.health.v1.Health/Check` as hitless's active checks call it) and the size of
//! the response head against `limits.max_response_header_bytes`.
//!
//! A health path that fails is a FAIL when active checks are configured (the endpoint never
//! takes traffic) and for any 5xx; a 4xx on a path that is not the configured health check is
//! a warning (the probe path may just be wrong). A head over the limit is a FAIL (hitless
//! answers 502 `upstream_header_too_large`), over 75% of it a warning.

use super::exchange::{Answer, Ask, Failure, GrpcAnswer};
use super::human;
use super::report::Finding;
use super::targets::Settings;

/// The `health` or `grpc-health` line.
pub(crate) fn finding(settings: &Settings, ask: &Ask, answer: &Result<Answer, Failure>) -> Finding {
    if *ask == Ask::GrpcHealth {
        return grpc(settings, answer);
    }
    const CHECK: &str = "health";
    let what = format!("GET {}", settings.path);
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return Finding::fail(CHECK, format!("{what}: {e}"), None),
    };
    let status = answer.status;
    if let Some(limit) = settings.health_check {
        if answer.elapsed > limit {
            return Finding::fail(
                CHECK,
                format!(
                    "{what}: {status} in {}, after health_check.timeout {}: the active check fails",
                    human(answer.elapsed),
                    human(limit)
                ),
                Some(settings.setting(&format!(
                    "health_check.timeout: {}",
                    human(answer.elapsed * 2)
                ))),
            );
        }
    }
    match status {
        200..=399 => Finding::ok(CHECK, format!("{what}: {status}")),
        _ if settings.health_check.is_some() => Finding::fail(
            CHECK,
            format!("{what}: {status}: the active check fails, the endpoint gets no traffic"),
            Some(settings.setting("health_check.path: the app's health path")),
        ),
        500.. => Finding::fail(CHECK, format!("{what}: {status}"), None),
        _ => Finding::warn(
            CHECK,
            format!("{what}: {status} (is it the app's health path?)"),
            None,
        ),
    }
}

fn grpc(settings: &Settings, answer: &Result<Answer, Failure>) -> Finding {
    const CHECK: &str = "grpc-health";
    let what = format!("grpc.health.v1.Health/Check({:?})", settings.grpc_service);
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return Finding::fail(CHECK, format!("{what}: {e}"), None),
    };
    let GrpcAnswer {
        status,
        message,
        serving,
    } = answer.grpc.clone().unwrap_or_default();
    let message = message.map_or_else(String::new, |m| format!(" ({m})"));
    let service_fix = || {
        Some(settings.setting(
            "health_check.grpc_service: a service the app registers (\"\" for the whole server)",
        ))
    };
    match (status.as_deref(), serving) {
        (Some("0"), Some(1)) => Finding::ok(CHECK, format!("{what}: SERVING")),
        (Some("0"), Some(state)) => {
            let name = match state {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "an unknown status",
            };
            Finding::fail(
                CHECK,
                format!("{what}: {name}: hitless's active checks keep it out of rotation"),
                (state == 3).then(service_fix).flatten(),
            )
        }
        (Some("0"), None) => Finding::fail(
            CHECK,
            format!("{what}: an answer that is not a HealthCheckResponse"),
            None,
        ),
        (Some("5"), _) => Finding::fail(
            CHECK,
            format!("{what}: NOT_FOUND{message}: the service is unknown to the health service"),
            service_fix(),
        ),
        (Some("12"), _) if settings.health_check.is_some() => Finding::fail(
            CHECK,
            format!("{what}: UNIMPLEMENTED: the app has no gRPC health service, the active check fails"),
            Some(format!(
                "(the app) register grpc.health.v1.Health, or remove {}",
                settings.setting("health_check")
            )),
        ),
        (Some("12"), _) => Finding::warn(
            CHECK,
            format!("{what}: UNIMPLEMENTED: no gRPC health service (hitless's active checks would need it)"),
            Some("(the app) register grpc.health.v1.Health".into()),
        ),
        (Some(code), _) => Finding::fail(CHECK, format!("{what}: grpc-status {code}{message}"), None),
        (None, _) => Finding::fail(
            CHECK,
            format!(
                "{what}: HTTP {} without grpc-status: not a gRPC server",
                answer.status
            ),
            Some(settings.setting("protocol: h2c")),
        ),
    }
}

/// The `header-size` line, when there was an answer.
pub(crate) fn header_size(settings: &Settings, answer: &Answer) -> Finding {
    const CHECK: &str = "header-size";
    let (size, limit) = (answer.head_bytes, settings.max_header);
    // The smallest power of two that leaves the head at 75% of the limit or less.
    let suggest = || {
        Some(format!(
            "limits.max_response_header_bytes: {}",
            (size.saturating_mul(4) / 3 + 1).next_power_of_two()
        ))
    };
    if size > limit {
        Finding::fail(
            CHECK,
            format!(
                "response head {size} bytes, over limits.max_response_header_bytes {limit}: hitless answers 502 upstream_header_too_large"
            ),
            suggest(),
        )
    } else if size * 4 > limit * 3 {
        Finding::warn(
            CHECK,
            format!("response head {size} bytes, over 75% of the limit {limit}"),
            suggest(),
        )
    } else {
        Finding::ok(CHECK, format!("response head {size} bytes (limit {limit})"))
    }
}
