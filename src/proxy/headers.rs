//! Header rewriting between client and backend (RFC 9110 section 7.6.1).
//!
//! Hop-by-hop headers describe one connection and must not cross the proxy: `Connection` and
//! every header it names, `Keep-Alive`, `Proxy-Connection`, `TE` (except `trailers`, which gRPC
//! needs end to end), `Transfer-Encoding` (hyper re-frames the body on each side) and `Upgrade`.
//! On the way in hitless appends `X-Forwarded-For`, sets `X-Forwarded-Proto` and
//! `X-Forwarded-Host`, keeps `Host`, and makes sure an `x-request-id` exists; the same id is
//! returned to the client so that a user's report can be found in the access log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The hop-by-hop header names (lowercase), for both paths: hyper's maps here, the direct
/// path's bytes in `direct.rs`.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Whether `name` (any case) is one of `HOP_BY_HOP`.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Remove hop-by-hop headers in place. `TE: trailers` survives when `keep_te_trailers`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Most messages carry none of these (HTTP/1.1 keep-alive is the default). One pass over the
    // names (no hashing) finds out, instead of six hash lookups per message.
    let any = headers.keys().any(|name| is_hop_by_hop(name.as_str()));
    if !any {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            if let Ok(s) = value.to_str() {
                for token in s.split(',') {
                    if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                        named.push(name);
                    }
                }
            }
        }
        headers.remove(header::CONNECTION);
        for name in named {
            // Never let `Connection` strip the end-to-end headers that identify the request.
            if name != header::HOST && name != X_REQUEST_ID {
                headers.remove(&name);
            }
        }
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::UPGRADE);
    if let Some(te) = headers.remove(header::TE) {
        let trailers = te
            .to_str()
            .map(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
            .unwrap_or(false);
        if trailers && keep_te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Rewrite a request's headers for the backend. Returns the request id (existing or new).
pub fn rewrite_request(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    authority: Option<&HeaderValue>,
) -> HeaderValue {
    use http::header::Entry;
    remove_hop_by_hop(headers, true);
    // hyper sizes a request's map for the headers it parsed: the four added here would grow
    // it (reallocate and rehash every entry) once or twice. One reservation instead.
    headers.reserve(5);

    // Entries: one hash per header name instead of a lookup and then an insert.
    match headers.entry(&X_FORWARDED_FOR) {
        Entry::Occupied(mut e) => {
            let prev = e.get();
            let mut v = Vec::with_capacity(prev.len() + 48);
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            if let Ok(xff) = HeaderValue::from_bytes(&v) {
                e.insert(xff);
            }
        }
        Entry::Vacant(e) => {
            e.insert(client_ip.clone());
        }
    }
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
    );
    // HTTP/2 clients send `:authority` instead of `Host`; an HTTP/1.1 backend needs `Host`.
    let host = match headers.entry(header::HOST) {
        Entry::Occupied(e) => Some(e.get().clone()),
        Entry::Vacant(e) => authority.map(|a| e.insert(a.clone()).clone()),
    };
    if let Some(host) = host {
        headers.insert(&X_FORWARDED_HOST, host);
    }
    match headers.entry(&X_REQUEST_ID) {
        Entry::Occupied(e) if !e.get().is_empty() => e.get().clone(),
        Entry::Occupied(mut e) => {
            let id = new_request_id();
            e.insert(id.clone());
            id
        }
        Entry::Vacant(e) => e.insert(new_request_id()).clone(),
    }
}

/// Rewrite a backend's response headers for the client.
pub fn rewrite_response(headers: &mut HeaderMap, request_id: HeaderValue) {
    remove_hop_by_hop(headers, false);
    headers.insert(&X_REQUEST_ID, request_id);
}

/// 32 hex digits: 64 random bits per process, then a counter. Unique within the process
/// without coordination, and unlikely to collide across replicas.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pid = std::process::id() as u64;
        // splitmix64 of time and pid
        let mut z = t ^ (pid << 32) ^ 0x9E37_79B9_7F4A_7C15;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in prefix
        .to_be_bytes()
        .iter()
        .chain(n.to_be_bytes().iter())
        .enumerate()
    {
        buf[2 * i] = HEX[(byte >> 4) as usize];
        buf[2 * i + 1] = HEX[(byte & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers, deflate"),
            ("x-end-to-end", "kept"),
        ]);
        remove_hop_by_hop(&mut h, true);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-end-to-end", "te"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn forwarded_headers_and_request_id() {
        let mut h = map(&[("host", "api.example.com"), ("x-forwarded-for", "1.2.3.4")]);
        let id = rewrite_request(&mut h, &HeaderValue::from_static("10.1.1.1"), "http", None);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.1.1.1");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["host"], "api.example.com");
        assert_eq!(h["x-request-id"], id);
        assert_eq!(id.len(), 32);
    }

    #[test]
    fn existing_request_id_is_kept() {
        let mut h = map(&[("x-request-id", "abc")]);
        let id = rewrite_request(&mut h, &HeaderValue::from_static("10.1.1.1"), "http", None);
        assert_eq!(id, "abc");
    }

    #[test]
    fn request_ids_are_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
    }
}
