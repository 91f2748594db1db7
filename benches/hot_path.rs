//! Criterion benches of the per-request work hitless adds on top of hyper: route matching in a
//! realistic table, request and response header rewriting, request-id generation, and the
//! metric update; and the direct HTTP/1.1 path's equivalents on bytes (request head parsed,
//! routed and rewritten; response head parsed and rewritten).
//! Run: `cargo bench --bench hot_path`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

use hitless::app::build_router;
use hitless::config::Config;
use hitless::error::ProxyError;
use hitless::proxy::headers;
use hitless::runtime::metrics::Metrics;

const CONFIG: &str = r#"
backends:
  api: {endpoints: ["127.0.0.1:3001", "127.0.0.1:3002"]}
  web: {endpoints: ["127.0.0.1:3003"]}
routes:
  - {name: r1, match: {host: admin.example.com}, backend: web}
  - {name: r2, match: {host: api.example.com, path_prefix: /v2}, backend: api}
  - {name: r3, match: {host: api.example.com, path_prefix: /v1/users}, backend: api}
  - {name: r4, match: {host: "*.tenants.example.com"}, backend: web}
  - {name: r5, match: {path: /healthz}, respond: {status: 200}}
  - {name: r6, match: {host: api.example.com, path_prefix: /v1}, backend: api}
  - {name: r7, match: {host: static.example.com}, backend: web}
  - {name: r8, backend: web}
"#;

fn typical_request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo",
        ),
        ("cookie", "session=abc123; theme=dark"),
        ("x-forwarded-for", "203.0.113.7"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let config = match Config::from_yaml(CONFIG) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let metrics = Metrics::new(&ProxyError::CAUSES);
    let (router, _backends) = build_router(&config, &metrics, 1);

    c.bench_function("route_match_6th_of_8", |b| {
        b.iter(|| {
            router.find(
                443,
                black_box("api.example.com:443"),
                black_box("/v1/orders/42"),
            )
        })
    });
    c.bench_function("route_match_fallthrough", |b| {
        b.iter(|| router.find(80, black_box("unknown.example.org"), black_box("/")))
    });

    let template = typical_request_headers();
    let ip = HeaderValue::from_static("10.1.2.3");
    c.bench_function("rewrite_request_headers", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |h| {
                headers::rewrite_request(
                    h,
                    &headers::Forwarding {
                        client_ip: ip.as_bytes(),
                        https: false,
                        authority: None,
                        keep_underscores: false,
                    },
                    headers::new_request_id,
                )
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let mut response = HeaderMap::new();
    response.insert("content-type", HeaderValue::from_static("application/json"));
    response.insert("content-length", HeaderValue::from_static("1234"));
    response.insert("connection", HeaderValue::from_static("keep-alive"));
    response.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    let id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
    c.bench_function("rewrite_response_headers", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |h| headers::rewrite_response(h, &id),
            criterion::BatchSize::SmallInput,
        )
    });

    c.bench_function("new_request_id", |b| b.iter(headers::new_request_id));

    // The direct path: the same request as bytes (what wrk-like clients send, plus the
    // headers above), parsed, routed and rewritten for the backend in one pass.
    let (direct_router, _direct_backends) = build_router(&config, &metrics, 1);
    let proxy = hitless::proxy::Proxy::new(
        direct_router,
        std::sync::Arc::new(Metrics::new(&ProxyError::CAUSES)),
        false,
        &config.downstream,
    );
    let conn = hitless::proxy::body::ClientConn::new(([10, 1, 2, 3], 40000).into(), "http", 80);
    let mut head = b"GET /v1/orders/42?page=2 HTTP/1.1\r\n".to_vec();
    for (k, v) in &template {
        head.extend_from_slice(k.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let mut upstream = Vec::with_capacity(1024);
    c.bench_function("direct_parse_route_rewrite_request", |b| {
        b.iter(|| {
            matches!(
                hitless::proxy::direct::parse(
                    &proxy,
                    black_box(&head),
                    &conn,
                    &mut upstream,
                    65536
                ),
                hitless::proxy::direct::Parsed::Ready(_)
            )
        })
    });
    let response_head: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 19:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 1234\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
    let mut out = Vec::with_capacity(1024);
    c.bench_function("direct_parse_rewrite_response", |b| {
        b.iter_batched_ref(
            || bytes::BytesMut::from(response_head),
            |buf| {
                out.clear();
                let id = &id;
                hitless::upstream::h1::parse_response(buf, false, 65536, |_, _, fields| {
                    let mut head = hitless::proxy::direct::ByteHead::new(fields, &mut out);
                    headers::rewrite_response(&mut head, id);
                    head.finish();
                })
                .is_ok()
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let route = match router.find(80, "api.example.com", "/v1/x") {
        Some(r) => r.clone(),
        None => panic!("no route"),
    };
    c.bench_function("record_metrics", |b| {
        b.iter(|| {
            route
                .metrics
                .record(black_box(200), std::time::Duration::from_micros(850))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
