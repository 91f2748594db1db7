//! Entry points for fuzzing what reads bytes from outside: request heads (`proxy::direct`),
//! response heads and chunked bodies (`upstream::h1`), the header rewrite on both engines'
//! heads (`proxy::headers`), and configuration files. `fuzz/` (cargo-fuzz) calls them with
//! libFuzzer's inputs; `tests/fuzz_corpus.rs` replays the committed corpus and a bounded
//! mutation run through the same functions, so that stable toolchains run them too.
//!
//! Each function must not panic on any input, and checks what must hold whatever the input:
//! a request taken by the direct engine is sent upstream as exactly one well-framed request; a
//! response head the relay accepts is rewritten into one that parses; the chunked scanner
//! finds the same end however the bytes are split; the rewrite gives the same fields on
//! hyper's map and on a byte head.

// A fuzzer learns of a broken invariant by a panic: that is what these functions are for.
#![allow(clippy::panic)]

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::body::ClientConn;
use crate::proxy::direct::{self, ByteHead, Parsed};
use crate::proxy::headers::{self, Forwarding};
use crate::proxy::Proxy;
use crate::upstream::h1::{self, ChunkedEnd, Framing};

const MAX_HEAD: usize = 65536;

fn proxy() -> &'static (Proxy, ClientConn) {
    static PROXY: OnceLock<(Proxy, ClientConn)> = OnceLock::new();
    PROXY.get_or_init(|| {
        let yaml = "backends:\n  app: {endpoints: [\"127.0.0.1:9\"]}\nroutes:\n  - {match: {path: /fixed}, respond: {status: 200}}\n  - backend: app\n";
        let config = match crate::config::Config::from_yaml(yaml) {
            Ok(c) => c,
            Err(e) => unreachable!("the fuzz config is valid: {e}"),
        };
        let metrics = crate::runtime::metrics::Metrics::new(&crate::error::ProxyError::CAUSES);
        let (router, _backends) = crate::app::build_router(&config, &metrics, 1);
        let proxy = Proxy::new(router, Arc::new(metrics), false, &config.downstream);
        (proxy, ClientConn::new(([10, 0, 0, 1], 1234).into(), "http", 80))
    })
}

/// A request head (and what follows) as a client would send it to the direct engine.
pub fn request_head(data: &[u8]) {
    let (proxy, conn) = proxy();
    let mut upstream = Vec::new();
    let Parsed::Ready(request) = direct::parse(proxy, data, conn, &mut upstream, MAX_HEAD) else {
        return;
    };
    assert!(request.len <= data.len(), "took more than was there");
    if upstream.is_empty() {
        return; // answered by hitless itself (no route, `respond`)
    }
    // What goes upstream is one complete request, framed by at most one Content-Length,
    // with exactly the body it announces and nothing after it.
    let mut fields = [httparse::EMPTY_HEADER; 80];
    let mut sent = httparse::Request::new(&mut fields);
    let head = match sent.parse(&upstream) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("the upstream head does not parse: {other:?}"),
    };
    let lengths: Vec<&[u8]> = sent
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    assert!(lengths.len() <= 1, "several Content-Length fields upstream");
    assert!(
        !sent
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")),
        "a transfer coding upstream from the direct engine"
    );
    let body = lengths
        .first()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    assert_eq!(
        upstream.len(),
        head + body,
        "bytes beyond the announced body"
    );
}

/// A response head as an upstream would send it, rewritten for the client as the relay does.
pub fn response_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    let id = HeaderValue::from_static("fuzz");
    let parsed = h1::parse_response(&mut buf, false, MAX_HEAD, |status, framing, fields| {
        out.extend_from_slice(format!("HTTP/1.1 {status} X\r\n").as_bytes());
        let mut head = ByteHead::new(fields, &mut out);
        if !matches!(framing, Framing::Length(_) | Framing::Empty) {
            headers::Head::remove(&mut head, "content-length");
        }
        headers::rewrite_response(&mut head, &id);
        head.finish();
        out.extend_from_slice(b"\r\n");
    });
    let Ok(Some(head)) = parsed else { return };
    assert!(head.len <= buf.len(), "a head longer than the bytes");
    assert!(head.status >= 100, "a status below 100 accepted");
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut rewritten = httparse::Response::new(&mut fields);
    assert!(
        matches!(rewritten.parse(&out), Ok(httparse::Status::Complete(n)) if n == out.len()),
        "the client's head does not parse: {:?}",
        String::from_utf8_lossy(&out)
    );
    let lengths = rewritten
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .count();
    assert!(lengths <= 1, "several Content-Length fields to the client");
}

/// Bytes of a chunked body: the end found does not depend on how they arrive.
pub fn chunked(data: &[u8]) {
    let whole = ChunkedEnd::default().scan(data);
    if let Ok(Some(end)) = whole {
        assert!(end <= data.len());
    }
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut pieces = ChunkedEnd::default();
    let first = pieces.scan(&data[..split]);
    let combined = match first {
        Ok(None) => pieces.scan(&data[split..]).map(|e| e.map(|n| n + split)),
        other => other,
    };
    match (whole, combined) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the end depends on the split at {split}"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("split at {split}: {a:?} whole, {b:?} in pieces"),
    }
}

/// Header lines (`name: value`): the request rewrite gives the same fields on hyper's map as
/// on a byte head (the two engines agree).
pub fn header_rewrite(data: &[u8]) {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    head.extend_from_slice(data);
    head.extend_from_slice(b"\r\n\r\n");
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut fields);
    if !matches!(request.parse(&head), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut map = HeaderMap::new();
    for f in request.headers.iter() {
        match (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => return, // hyper would have refused this head
        }
    }
    let fwd = Forwarding {
        client_ip: b"10.0.0.1",
        https: false,
        authority: None,
        keep_underscores: false,
    };
    let id = || HeaderValue::from_static("fuzz-id");
    let from_map = headers::rewrite_request(&mut map, &fwd, id).value;
    let mut bytes = Vec::new();
    let mut byte_head = ByteHead::new(request.headers, &mut bytes);
    let from_bytes = headers::rewrite_request(&mut byte_head, &fwd, id).value;
    byte_head.finish();
    assert_eq!(
        from_map, from_bytes,
        "the engines chose different request ids"
    );
    let mut a: Vec<(String, Vec<u8>)> = map
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    bytes.extend_from_slice(b"\r\n");
    let mut parsed = [httparse::EMPTY_HEADER; 80];
    let mut lines = httparse::Request::new(&mut parsed);
    let mut rebuilt = b"GET / HTTP/1.1\r\n".to_vec();
    rebuilt.extend_from_slice(&bytes);
    assert!(
        matches!(lines.parse(&rebuilt), Ok(httparse::Status::Complete(_))),
        "the byte head does not parse"
    );
    let mut b: Vec<(String, Vec<u8>)> = lines
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the engines rewrote differently");
}

/// A configuration file: an answer (valid, or errors with their paths), never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = crate::config::Config::from_yaml(text) {
        assert!(!errors.0.is_empty(), "an error without a message");
    }
}
