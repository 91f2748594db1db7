//! `ProxyError`: every answer that hitless itself produces instead of the backend's.
//!
//! This file is a leaf: the layers above and below convert *into* it, it imports none of them.
//! Each property of an error (HTTP status, gRPC code, cause label, RFC 9209 error type, retry class,
//! whether the client connection must close) is one exhaustive `match` with no `_` arm, so a new
//! variant cannot be added without deciding every one of them; `tests::table` pins the mapping.
//! The cause label is the same string in the `Proxy-Status` header, the access log and the
//! `hitless_proxy_errors_total{cause}` metric, so an operator can go from one to the others.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// An error that hitless answers itself. Endpoint addresses are kept for `details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matched the request's host and path.
    NoRoute,
    /// The route's backend has no endpoints at all.
    NoEndpoints { backend: String },
    /// The endpoint actively refused the TCP connection (nothing listening: RST to our SYN).
    ConnectRefused { endpoint: SocketAddr },
    /// The TCP connection was not established within the backend's `connect_timeout`.
    ConnectTimeout { endpoint: SocketAddr },
    /// Any other connect failure (unreachable network or host, ...), with the OS reason.
    ConnectFailed {
        endpoint: SocketAddr,
        reason: String,
    },
    /// The connection closed or was reset before a complete response head arrived.
    UpstreamReset { endpoint: SocketAddr },
    /// An HTTP/2 backend refused the stream (REFUSED_STREAM, or beyond its GOAWAY): by the
    /// protocol's definition, the request was not processed.
    RefusedStream { endpoint: SocketAddr },
    /// The backend answered something that is not a valid HTTP response.
    UpstreamProtocol {
        endpoint: SocketAddr,
        reason: String,
    },
    /// The backend speaks another protocol than its `protocol:` setting says.
    ProtocolMismatch {
        endpoint: SocketAddr,
        speaks: &'static str,
        fix: &'static str,
    },
    /// The TLS handshake with an `https`/`grpcs` endpoint failed (unknown CA, name mismatch,
    /// handshake failure), with rustls's reason.
    TlsError {
        endpoint: SocketAddr,
        reason: String,
    },
    /// The backend's response head exceeded `max_response_header_bytes`.
    UpstreamHeaderTooLarge { endpoint: SocketAddr },
    /// No response head within the per-try timeout `backend_request`.
    BackendTimeout { endpoint: SocketAddr },
    /// No response head within the whole-request timeout `request`.
    RequestTimeout,
    /// The client's request body failed (the client went away or sent a malformed body)
    /// while it was being forwarded.
    ClientBody { reason: String },
    /// Every endpoint failed to take the request and none came back within `hold_timeout`;
    /// `last` is the failure of the last try.
    NoHealthyEndpoints {
        backend: String,
        last: Box<ProxyError>,
    },
    /// The backend is at `max_concurrent_requests`: shed at once (with `Retry-After`).
    Overloaded { backend: String },
    /// The client's request head is malformed or ambiguous (no `Host`, two `Host`s, invalid
    /// framing...): answered 400 before any backend sees it.
    BadRequest { reason: &'static str },
    /// The request target alone is longer than `max_request_header_bytes` allows.
    UriTooLong,
    /// The request head is longer than `max_request_header_bytes`.
    RequestHeaderTooLarge,
    /// A method hitless does not proxy (CONNECT: hitless is a reverse proxy, not a tunnel).
    MethodNotAllowed { method: &'static str },
    /// A request body in a transfer coding other than `chunked` (RFC 9112 6.1: 501).
    UnsupportedTransferCoding,
    /// An answer the route's `fault.abort` (or the `x-hitless-fault` header) asked for: a
    /// rehearsal, not a failure.
    FaultInjected { status: StatusCode },
}

/// What a failed attempt proves about whether the backend application saw the request.
/// The retry loop (`proxy/attempt.rs`) decides from this what may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Nothing was sent: retrying elsewhere is always safe, whatever the method.
    NotSent,
    /// The request may have reached the application: retry only idempotent, replayable requests.
    MaybeSent,
    /// Retrying cannot help (or the error is about the client itself).
    Never,
}

impl ProxyError {
    /// Stable cause label: the `details` of `Proxy-Status`, the access log `cause`, the metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoEndpoints { .. } => "no_endpoints",
            ProxyError::ConnectRefused { .. } => "connect_refused",
            ProxyError::ConnectTimeout { .. } => "connect_timeout",
            ProxyError::ConnectFailed { .. } => "connect_error",
            ProxyError::UpstreamReset { .. } => "upstream_reset",
            ProxyError::UpstreamProtocol { .. } => "upstream_protocol_error",
            ProxyError::UpstreamHeaderTooLarge { .. } => "upstream_header_too_large",
            ProxyError::BackendTimeout { .. } => "backend_timeout",
            ProxyError::RequestTimeout => "request_timeout",
            ProxyError::ClientBody { .. } => "client_body_error",
            ProxyError::NoHealthyEndpoints { .. } => "no_healthy_endpoints",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::RefusedStream { .. } => "refused_stream",
            ProxyError::ProtocolMismatch { .. } => "protocol_mismatch",
            ProxyError::TlsError { .. } => "tls_error",
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::RequestHeaderTooLarge => "request_header_too_large",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::UnsupportedTransferCoding => "unsupported_transfer_coding",
            ProxyError::FaultInjected { .. } => "fault_injected",
        }
    }

    /// Every cause, in a fixed order: metric handles are resolved for all of them at start.
    pub const CAUSES: [&'static str; 22] = [
        "no_route",
        "no_endpoints",
        "connect_refused",
        "connect_timeout",
        "connect_error",
        "upstream_reset",
        "upstream_protocol_error",
        "upstream_header_too_large",
        "backend_timeout",
        "request_timeout",
        "client_body_error",
        "no_healthy_endpoints",
        "overloaded",
        "refused_stream",
        "protocol_mismatch",
        "tls_error",
        "bad_request",
        "uri_too_long",
        "request_header_too_large",
        "method_not_allowed",
        "unsupported_transfer_coding",
        "fault_injected",
    ];

    /// Index of `cause()` in `CAUSES`.
    pub fn cause_index(&self) -> usize {
        match self {
            ProxyError::NoRoute => 0,
            ProxyError::NoEndpoints { .. } => 1,
            ProxyError::ConnectRefused { .. } => 2,
            ProxyError::ConnectTimeout { .. } => 3,
            ProxyError::ConnectFailed { .. } => 4,
            ProxyError::UpstreamReset { .. } => 5,
            ProxyError::UpstreamProtocol { .. } => 6,
            ProxyError::UpstreamHeaderTooLarge { .. } => 7,
            ProxyError::BackendTimeout { .. } => 8,
            ProxyError::RequestTimeout => 9,
            ProxyError::ClientBody { .. } => 10,
            ProxyError::NoHealthyEndpoints { .. } => 11,
            ProxyError::Overloaded { .. } => 12,
            ProxyError::RefusedStream { .. } => 13,
            ProxyError::ProtocolMismatch { .. } => 14,
            ProxyError::TlsError { .. } => 15,
            ProxyError::BadRequest { .. } => 16,
            ProxyError::UriTooLong => 17,
            ProxyError::RequestHeaderTooLarge => 18,
            ProxyError::MethodNotAllowed { .. } => 19,
            ProxyError::UnsupportedTransferCoding => 20,
            ProxyError::FaultInjected { .. } => 21,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectRefused { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamReset { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamHeaderTooLarge { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::BackendTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NoHealthyEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RefusedStream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ProtocolMismatch { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::TlsError { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::RequestHeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ProxyError::FaultInjected { status } => *status,
        }
    }

    /// RFC 9209 error type for the `Proxy-Status` header.
    pub fn proxy_status_error(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "destination_not_found",
            ProxyError::NoEndpoints { .. } => "destination_unavailable",
            ProxyError::ConnectRefused { .. } => "connection_refused",
            ProxyError::ConnectTimeout { .. } => "connection_timeout",
            ProxyError::ConnectFailed { .. } => "destination_ip_unroutable",
            ProxyError::UpstreamReset { .. } => "connection_terminated",
            ProxyError::UpstreamProtocol { .. } => "http_protocol_error",
            ProxyError::UpstreamHeaderTooLarge { .. } => "http_response_header_section_size",
            ProxyError::BackendTimeout { .. } => "http_response_timeout",
            ProxyError::RequestTimeout => "http_response_timeout",
            ProxyError::ClientBody { .. } => "http_request_error",
            ProxyError::NoHealthyEndpoints { .. } => "destination_unavailable",
            ProxyError::Overloaded { .. } => "connection_limit_reached",
            ProxyError::RefusedStream { .. } => "connection_terminated",
            ProxyError::ProtocolMismatch { .. } => "http_protocol_error",
            ProxyError::TlsError { .. } => "tls_protocol_error",
            ProxyError::BadRequest { .. } => "http_request_error",
            ProxyError::UriTooLong => "http_request_error",
            ProxyError::RequestHeaderTooLarge => "http_request_error",
            ProxyError::MethodNotAllowed { .. } => "http_request_denied",
            ProxyError::UnsupportedTransferCoding => "http_request_error",
            // RFC 9209: "the intermediary generated the response locally".
            ProxyError::FaultInjected { .. } => "proxy_internal_response",
        }
    }

    /// gRPC status code for requests with an `application/grpc*` content type.
    pub fn grpc_code(&self) -> u8 {
        const INTERNAL: u8 = 13;
        const UNAVAILABLE: u8 = 14;
        const DEADLINE_EXCEEDED: u8 = 4;
        const UNIMPLEMENTED: u8 = 12;
        const CANCELLED: u8 = 1;
        const RESOURCE_EXHAUSTED: u8 = 8;
        const INVALID_ARGUMENT: u8 = 3;
        match self {
            ProxyError::NoRoute => UNIMPLEMENTED,
            ProxyError::NoEndpoints { .. } => UNAVAILABLE,
            ProxyError::ConnectRefused { .. } => UNAVAILABLE,
            ProxyError::ConnectTimeout { .. } => UNAVAILABLE,
            ProxyError::ConnectFailed { .. } => UNAVAILABLE,
            ProxyError::UpstreamReset { .. } => UNAVAILABLE,
            ProxyError::UpstreamProtocol { .. } => INTERNAL,
            ProxyError::UpstreamHeaderTooLarge { .. } => INTERNAL,
            ProxyError::BackendTimeout { .. } => DEADLINE_EXCEEDED,
            ProxyError::RequestTimeout => DEADLINE_EXCEEDED,
            ProxyError::ClientBody { .. } => CANCELLED,
            ProxyError::NoHealthyEndpoints { .. } => UNAVAILABLE,
            ProxyError::Overloaded { .. } => RESOURCE_EXHAUSTED,
            ProxyError::RefusedStream { .. } => UNAVAILABLE,
            ProxyError::ProtocolMismatch { .. } => INTERNAL,
            ProxyError::TlsError { .. } => UNAVAILABLE,
            ProxyError::BadRequest { .. } => INVALID_ARGUMENT,
            ProxyError::UriTooLong => INVALID_ARGUMENT,
            ProxyError::RequestHeaderTooLarge => RESOURCE_EXHAUSTED,
            ProxyError::MethodNotAllowed { .. } => UNIMPLEMENTED,
            ProxyError::UnsupportedTransferCoding => UNIMPLEMENTED,
            ProxyError::FaultInjected { .. } => UNAVAILABLE,
        }
    }

    pub fn retry_class(&self) -> RetryClass {
        match self {
            ProxyError::NoRoute => RetryClass::Never,
            ProxyError::NoEndpoints { .. } => RetryClass::Never,
            ProxyError::ConnectRefused { .. } => RetryClass::NotSent,
            ProxyError::ConnectTimeout { .. } => RetryClass::NotSent,
            ProxyError::ConnectFailed { .. } => RetryClass::NotSent,
            ProxyError::UpstreamReset { .. } => RetryClass::MaybeSent,
            ProxyError::UpstreamProtocol { .. } => RetryClass::MaybeSent,
            ProxyError::UpstreamHeaderTooLarge { .. } => RetryClass::Never,
            ProxyError::BackendTimeout { .. } => RetryClass::MaybeSent,
            ProxyError::RequestTimeout => RetryClass::Never,
            ProxyError::ClientBody { .. } => RetryClass::Never,
            ProxyError::NoHealthyEndpoints { .. } => RetryClass::Never,
            ProxyError::Overloaded { .. } => RetryClass::Never,
            ProxyError::RefusedStream { .. } => RetryClass::NotSent,
            ProxyError::ProtocolMismatch { .. } => RetryClass::Never,
            // The handshake failed: no request byte was sent.
            ProxyError::TlsError { .. } => RetryClass::NotSent,
            ProxyError::BadRequest { .. } => RetryClass::Never,
            ProxyError::UriTooLong => RetryClass::Never,
            ProxyError::RequestHeaderTooLarge => RetryClass::Never,
            ProxyError::MethodNotAllowed { .. } => RetryClass::Never,
            ProxyError::UnsupportedTransferCoding => RetryClass::Never,
            ProxyError::FaultInjected { .. } => RetryClass::Never,
        }
    }

    /// Whether the client connection must close after this answer: only when the request
    /// body was left half-read, so the connection's framing can no longer be trusted.
    pub fn closes_connection(&self) -> bool {
        match self {
            ProxyError::NoRoute => false,
            ProxyError::NoEndpoints { .. } => false,
            ProxyError::ConnectRefused { .. } => false,
            ProxyError::ConnectTimeout { .. } => false,
            ProxyError::ConnectFailed { .. } => false,
            ProxyError::UpstreamReset { .. } => false,
            ProxyError::UpstreamProtocol { .. } => false,
            ProxyError::UpstreamHeaderTooLarge { .. } => false,
            ProxyError::BackendTimeout { .. } => false,
            ProxyError::RequestTimeout => false,
            ProxyError::ClientBody { .. } => true,
            ProxyError::NoHealthyEndpoints { .. } => false,
            ProxyError::Overloaded { .. } => false,
            ProxyError::RefusedStream { .. } => false,
            ProxyError::ProtocolMismatch { .. } => false,
            ProxyError::TlsError { .. } => false,
            // The head could not be read as one message: what follows cannot be trusted.
            ProxyError::BadRequest { .. } => true,
            ProxyError::UriTooLong => true,
            ProxyError::RequestHeaderTooLarge => true,
            ProxyError::MethodNotAllowed { .. } => false,
            // The body's framing is unknown.
            ProxyError::UnsupportedTransferCoding => true,
            ProxyError::FaultInjected { .. } => false,
        }
    }

    /// The endpoint the failure happened on, when there was one.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match self {
            ProxyError::NoRoute | ProxyError::NoEndpoints { .. } => None,
            ProxyError::RequestTimeout | ProxyError::ClientBody { .. } => None,
            ProxyError::NoHealthyEndpoints { last, .. } => last.endpoint(),
            ProxyError::Overloaded { .. } => None,
            ProxyError::BadRequest { .. }
            | ProxyError::UriTooLong
            | ProxyError::RequestHeaderTooLarge
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::UnsupportedTransferCoding
            | ProxyError::FaultInjected { .. } => None,
            ProxyError::ConnectRefused { endpoint }
            | ProxyError::ConnectTimeout { endpoint }
            | ProxyError::ConnectFailed { endpoint, .. }
            | ProxyError::UpstreamReset { endpoint }
            | ProxyError::RefusedStream { endpoint }
            | ProxyError::ProtocolMismatch { endpoint, .. }
            | ProxyError::TlsError { endpoint, .. }
            | ProxyError::UpstreamProtocol { endpoint, .. }
            | ProxyError::UpstreamHeaderTooLarge { endpoint }
            | ProxyError::BackendTimeout { endpoint } => Some(*endpoint),
        }
    }

    /// `Proxy-Status` header value (RFC 9209): `hitless; error=...; details="cause endpoint"`.
    pub fn proxy_status(&self) -> HeaderValue {
        let details = self.to_string().replace(['"', '\\'], "'");
        let value = format!(
            "hitless; error={}; details=\"{}\"",
            self.proxy_status_error(),
            details
        );
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("hitless"))
    }

    /// Render as the response the client sees. gRPC clients get a trailers-only answer
    /// (HTTP 200 with `grpc-status`) so their library reports the code instead of an HTTP error.
    pub fn to_response<B: From<Bytes>>(&self, grpc: bool) -> Response<B> {
        let mut builder = Response::builder().header("proxy-status", self.proxy_status());
        if self.closes_connection() {
            builder = builder.header(header::CONNECTION, "close");
        }
        if let ProxyError::Overloaded { .. } = self {
            // Shed load asks the client to come back shortly, not to hammer.
            builder = builder.header(header::RETRY_AFTER, "1");
        }
        let body = if grpc {
            builder = builder
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", self.grpc_code().to_string())
                .header(
                    "grpc-message",
                    HeaderValue::from_str(&self.to_string())
                        .unwrap_or(HeaderValue::from_static("hitless proxy error")),
                );
            Bytes::new()
        } else {
            builder = builder
                .status(self.status())
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
            let status = self.status();
            Bytes::from(format!(
                "{} {}: {}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                self
            ))
        };
        match builder.body(B::from(body)) {
            Ok(response) => response,
            // All header values above are valid by construction; keep a plain answer anyway.
            Err(_) => {
                let mut response = Response::new(B::from(Bytes::from_static(b"proxy error\n")));
                *response.status_mut() = self.status();
                response
            }
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = self.cause();
        match self {
            ProxyError::NoRoute
            | ProxyError::RequestTimeout
            | ProxyError::UriTooLong
            | ProxyError::RequestHeaderTooLarge
            | ProxyError::UnsupportedTransferCoding => f.write_str(cause),
            ProxyError::BadRequest { reason } => write!(f, "{cause}: {reason}"),
            ProxyError::MethodNotAllowed { method } => write!(f, "{cause}: {method}"),
            ProxyError::NoEndpoints { backend } => write!(f, "{cause} backend={backend}"),
            ProxyError::ConnectRefused { endpoint }
            | ProxyError::ConnectTimeout { endpoint }
            | ProxyError::UpstreamReset { endpoint }
            | ProxyError::RefusedStream { endpoint }
            | ProxyError::UpstreamHeaderTooLarge { endpoint }
            | ProxyError::BackendTimeout { endpoint } => write!(f, "{cause} {endpoint}"),
            ProxyError::ConnectFailed { endpoint, reason }
            | ProxyError::TlsError { endpoint, reason }
            | ProxyError::UpstreamProtocol { endpoint, reason } => {
                write!(f, "{cause} {endpoint}: {reason}")
            }
            ProxyError::ClientBody { reason } => write!(f, "{cause}: {reason}"),
            ProxyError::ProtocolMismatch {
                endpoint,
                speaks,
                fix,
            } => write!(
                f,
                "{cause} {endpoint}: the backend speaks {speaks}; set the backend's {fix}"
            ),
            ProxyError::NoHealthyEndpoints { backend, last } => {
                write!(f, "{cause} backend={backend}, last try: {last}")
            }
            ProxyError::Overloaded { backend } => write!(f, "{cause} backend={backend}"),
            ProxyError::FaultInjected { status } => {
                write!(
                    f,
                    "{cause}: abort with {} (the route's fault setting)",
                    status.as_u16()
                )
            }
        }
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 5], 8080))
    }

    /// The whole mapping in one table: changing any mapping must change this test.
    #[rustfmt::skip]
    #[test]
    fn table() {
        let rows: Vec<(ProxyError, &str, u16, &str, u8, RetryClass, bool)> = vec![
            (ProxyError::NoRoute, "no_route", 404, "destination_not_found", 12, RetryClass::Never, false),
            (ProxyError::NoEndpoints { backend: "api".into() }, "no_endpoints", 503, "destination_unavailable", 14, RetryClass::Never, false),
            (ProxyError::ConnectRefused { endpoint: ep() }, "connect_refused", 502, "connection_refused", 14, RetryClass::NotSent, false),
            (ProxyError::ConnectTimeout { endpoint: ep() }, "connect_timeout", 502, "connection_timeout", 14, RetryClass::NotSent, false),
            (ProxyError::ConnectFailed { endpoint: ep(), reason: "unreachable".into() }, "connect_error", 502, "destination_ip_unroutable", 14, RetryClass::NotSent, false),
            (ProxyError::UpstreamReset { endpoint: ep() }, "upstream_reset", 502, "connection_terminated", 14, RetryClass::MaybeSent, false),
            (ProxyError::UpstreamProtocol { endpoint: ep(), reason: "bad".into() }, "upstream_protocol_error", 502, "http_protocol_error", 13, RetryClass::MaybeSent, false),
            (ProxyError::UpstreamHeaderTooLarge { endpoint: ep() }, "upstream_header_too_large", 502, "http_response_header_section_size", 13, RetryClass::Never, false),
            (ProxyError::BackendTimeout { endpoint: ep() }, "backend_timeout", 504, "http_response_timeout", 4, RetryClass::MaybeSent, false),
            (ProxyError::RequestTimeout, "request_timeout", 504, "http_response_timeout", 4, RetryClass::Never, false),
            (ProxyError::ClientBody { reason: "eof".into() }, "client_body_error", 400, "http_request_error", 1, RetryClass::Never, true),
            (ProxyError::NoHealthyEndpoints { backend: "api".into(), last: Box::new(ProxyError::ConnectRefused { endpoint: ep() }) }, "no_healthy_endpoints", 503, "destination_unavailable", 14, RetryClass::Never, false),
            (ProxyError::Overloaded { backend: "api".into() }, "overloaded", 503, "connection_limit_reached", 8, RetryClass::Never, false),
            (ProxyError::RefusedStream { endpoint: ep() }, "refused_stream", 502, "connection_terminated", 14, RetryClass::NotSent, false),
            (ProxyError::ProtocolMismatch { endpoint: ep(), speaks: "TLS", fix: "protocol: https" }, "protocol_mismatch", 502, "http_protocol_error", 13, RetryClass::Never, false),
            (ProxyError::TlsError { endpoint: ep(), reason: "unknown issuer".into() }, "tls_error", 502, "tls_protocol_error", 14, RetryClass::NotSent, false),
            (ProxyError::BadRequest { reason: "no Host" }, "bad_request", 400, "http_request_error", 3, RetryClass::Never, true),
            (ProxyError::UriTooLong, "uri_too_long", 414, "http_request_error", 3, RetryClass::Never, true),
            (ProxyError::RequestHeaderTooLarge, "request_header_too_large", 431, "http_request_error", 8, RetryClass::Never, true),
            (ProxyError::MethodNotAllowed { method: "CONNECT" }, "method_not_allowed", 405, "http_request_denied", 12, RetryClass::Never, false),
            (ProxyError::UnsupportedTransferCoding, "unsupported_transfer_coding", 501, "http_request_error", 12, RetryClass::Never, true),
            (ProxyError::FaultInjected { status: StatusCode::SERVICE_UNAVAILABLE }, "fault_injected", 503, "proxy_internal_response", 14, RetryClass::Never, false),
        ];
        assert_eq!(rows.len(), ProxyError::CAUSES.len());
        for (err, cause, status, ps, grpc, retry, close) in rows {
            assert_eq!(err.cause(), cause);
            assert_eq!(ProxyError::CAUSES[err.cause_index()], cause);
            assert_eq!(err.status().as_u16(), status, "{cause}");
            assert_eq!(err.proxy_status_error(), ps, "{cause}");
            assert_eq!(err.grpc_code(), grpc, "{cause}");
            assert_eq!(err.retry_class(), retry, "{cause}");
            assert_eq!(err.closes_connection(), close, "{cause}");
        }
    }

    #[test]
    fn proxy_status_header_names_cause_and_endpoint() {
        let err = ProxyError::ConnectRefused { endpoint: ep() };
        assert_eq!(
            err.proxy_status().to_str().ok(),
            Some("hitless; error=connection_refused; details=\"connect_refused 10.0.0.5:8080\"")
        );
    }

    #[test]
    fn grpc_answer_is_trailers_only() {
        let err = ProxyError::NoEndpoints {
            backend: "api".into(),
        };
        let response: Response<Bytes> = err.to_response(true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert!(response.body().is_empty());
    }
}
