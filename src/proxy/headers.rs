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

/// The hop-by-hop header names (lowercase).
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

/// A message head as an engine holds it: hyper's `HeaderMap`, or the fields of a head parsed
/// in place by the direct path (`direct::ByteHead`). The rewriting rules below are written
/// once, over this.
pub trait Head {
    /// A field value as the head keeps it (cheap to clone).
    type Value: AsRef<[u8]> + Clone;
    /// Each field, in order: its name (any case) and value.
    fn for_each(&self, f: impl FnMut(&str, &Self::Value));
    /// Remove every field called `name` (any case).
    fn remove(&mut self, name: &str);
    /// Add a field whose value is `parts` joined. Every `remove` of a rule comes before its
    /// first `add` (a byte head writes the fields it keeps at the first add).
    fn add(&mut self, name: &HeaderName, parts: &[&[u8]]);
}

impl Head for HeaderMap {
    type Value = HeaderValue;

    fn for_each(&self, mut f: impl FnMut(&str, &HeaderValue)) {
        for (name, value) in self {
            f(name.as_str(), value);
        }
    }

    fn remove(&mut self, name: &str) {
        // Names in a map are lowercase already; tokens from `Connection` may not be.
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                HeaderMap::remove(self, n);
            }
        } else {
            HeaderMap::remove(self, name);
        }
    }

    fn add(&mut self, name: &HeaderName, parts: &[&[u8]]) {
        let value = match parts {
            [one] => HeaderValue::from_bytes(one),
            _ => HeaderValue::from_bytes(&parts.concat()),
        };
        if let Ok(v) = value {
            self.append(name, v);
        }
    }
}

/// Fields that a `Connection` header may never remove: the message's framing (an attacker's
/// `Connection: content-length` would leave the body unframed) and what identifies it.
fn protected(name: &str) -> bool {
    ["content-length", "host", "x-request-id"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// At most this many `Connection` fields are honoured (their named fields removed).
const MAX_CONNECTION_FIELDS: usize = 4;

/// Remove the hop-by-hop fields of `head` and those its `Connection` fields name (never the
/// `protected` ones). `TE: trailers` survives when `keep_te_trailers` (gRPC needs it end to
/// end); returns whether it did (the caller adds it back, after its other removals).
fn remove_hop_by_hop<H: Head>(head: &mut H, keep_te_trailers: bool) -> bool {
    // Most messages carry none of these (HTTP/1.1 keep-alive is the default): one pass over
    // the names finds out, instead of six lookups per message.
    let mut any = false;
    let mut connection: [Option<H::Value>; MAX_CONNECTION_FIELDS] = Default::default();
    let mut n = 0;
    let mut trailers = false;
    let mut transfer_encoding = false;
    head.for_each(|name, value| {
        if !is_hop_by_hop(name) {
            return;
        }
        any = true;
        transfer_encoding |= name.eq_ignore_ascii_case("transfer-encoding");
        if name.eq_ignore_ascii_case("connection") && n < MAX_CONNECTION_FIELDS {
            connection[n] = Some(value.clone());
            n += 1;
        } else if name.eq_ignore_ascii_case("te") {
            trailers |= value
                .as_ref()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
    });
    if !any {
        return false;
    }
    for value in connection.iter().flatten() {
        for token in value.as_ref().split(|&b| b == b',') {
            let Ok(token) = std::str::from_utf8(token.trim_ascii()) else {
                continue;
            };
            if !token.is_empty() && !protected(token) {
                head.remove(token);
            }
        }
    }
    for name in HOP_BY_HOP {
        head.remove(name);
    }
    if transfer_encoding {
        // The body was framed by its transfer coding, which overrides a `Content-Length`
        // (RFC 9112 6.3); it is framed anew on the other side, so the length must not cross.
        head.remove("content-length");
    }
    trailers && keep_te_trailers
}

/// How a request reached hitless, for the `X-Forwarded-*` fields.
pub struct Forwarding<'a> {
    /// The client's IP address, as text.
    pub client_ip: &'a [u8],
    pub https: bool,
    /// The request target's authority (absolute form, or HTTP/2's `:authority`): it wins
    /// over `Host` (RFC 9112 3.2.2).
    pub authority: Option<&'a [u8]>,
    /// Keep header names with `_` (by default they are dropped: many backends read
    /// `Content_Length` as `Content-Length`).
    pub keep_underscores: bool,
}

/// The request id a rewritten request carries: the client's, or a new one (`fresh`).
pub struct RequestId {
    pub value: HeaderValue,
    pub fresh: bool,
}

/// Rewrite a request's head for the backend (the one rule, for both engines): hop-by-hop
/// fields out, names with `_` out (unless kept), `X-Forwarded-For` appended,
/// `X-Forwarded-Proto` and `X-Forwarded-Host` set, `Host` from the target's authority when it
/// has one, and an `x-request-id` (the client's, or `new_id`'s). Returns the id.
pub fn rewrite_request<H: Head>(
    head: &mut H,
    fwd: &Forwarding<'_>,
    new_id: impl FnOnce() -> HeaderValue,
) -> RequestId {
    let te_trailers = remove_hop_by_hop(head, true);
    let mut forwarded_for: [Option<H::Value>; 4] = Default::default();
    let mut n_forwarded = 0;
    let mut host: Option<H::Value> = None;
    let mut id: Option<H::Value> = None;
    let mut underscores = false;
    head.for_each(|name, value| {
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            if let Some(slot) = forwarded_for.get_mut(n_forwarded) {
                *slot = Some(value.clone());
                n_forwarded += 1;
            }
        } else if name.eq_ignore_ascii_case("host") {
            host.get_or_insert_with(|| value.clone());
        } else if name.eq_ignore_ascii_case("x-request-id") {
            if !value.as_ref().is_empty() {
                id.get_or_insert_with(|| value.clone());
            }
        } else if !underscores && name.contains('_') {
            underscores = true;
        }
    });
    if underscores && !fwd.keep_underscores {
        let mut names: Vec<String> = Vec::new();
        head.for_each(|name, _| {
            if name.contains('_') {
                names.push(name.to_string());
            }
        });
        for name in &names {
            head.remove(name);
        }
    }
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ] {
        head.remove(name);
    }
    if fwd.authority.is_some() {
        head.remove("host");
    }
    let request_id = match id.as_ref().map(|v| HeaderValue::from_bytes(v.as_ref())) {
        Some(Ok(value)) => RequestId {
            value,
            fresh: false,
        },
        _ => RequestId {
            value: new_id(),
            fresh: true,
        },
    };
    // Adds, after every removal.
    if te_trailers {
        head.add(&header::TE, &[b"trailers"]);
    }
    if let Some(authority) = fwd.authority {
        head.add(&header::HOST, &[authority]);
    }
    let mut xff: [&[u8]; 9] = [b""; 9];
    let mut parts = 0;
    for prev in forwarded_for.iter().flatten() {
        xff[parts] = prev.as_ref();
        xff[parts + 1] = b", ";
        parts += 2;
    }
    xff[parts] = fwd.client_ip;
    head.add(&X_FORWARDED_FOR, &xff[..=parts]);
    head.add(
        &X_FORWARDED_PROTO,
        &[if fwd.https { b"https" } else { b"http" }],
    );
    match (fwd.authority, &host) {
        (Some(authority), _) => head.add(&X_FORWARDED_HOST, &[authority]),
        (None, Some(host)) => head.add(&X_FORWARDED_HOST, &[host.as_ref()]),
        (None, None) => {}
    }
    head.add(&X_REQUEST_ID, &[request_id.value.as_bytes()]);
    request_id
}

/// Rewrite a backend's response head for the client (the one rule, for both engines):
/// hop-by-hop fields out, the request's id set, and `Date` added when the backend sent none
/// (RFC 9110 6.6.1: a forwarding recipient with a clock must).
pub fn rewrite_response<H: Head>(head: &mut H, request_id: &HeaderValue) {
    remove_hop_by_hop(head, false);
    let mut date = false;
    head.for_each(|name, _| date |= name.eq_ignore_ascii_case("date"));
    head.remove("x-request-id");
    if !date {
        head.add(&header::DATE, &[http_date().as_bytes()]);
    }
    head.add(&X_REQUEST_ID, &[request_id.as_bytes()]);
}

/// The current time as an HTTP date, formatted once per second (per thread).
pub fn http_date() -> HeaderValue {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHED.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            cached.1 = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
            cached.0 = secs;
        }
        cached.1.clone()
    })
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

    fn fwd() -> Forwarding<'static> {
        Forwarding {
            client_ip: b"10.1.1.1",
            https: false,
            authority: None,
            keep_underscores: false,
        }
    }

    #[test]
    fn connection_named_headers_are_removed_but_never_framing() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, Content-Length, host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers, deflate"),
            ("content-length", "5"),
            ("host", "h"),
            ("x-end-to-end", "kept"),
        ]);
        let id = rewrite_request(&mut h, &fwd(), || HeaderValue::from_static("new"));
        assert!(id.fresh);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // (Content-Length goes because of Transfer-Encoding: the body is framed anew.)
        assert_eq!(
            names,
            vec![
                "host",
                "te",
                "x-end-to-end",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-request-id"
            ]
        );
        assert_eq!(h["te"], "trailers");
        let mut framed = map(&[("connection", "content-length"), ("content-length", "5")]);
        rewrite_request(&mut framed, &fwd(), new_request_id);
        assert_eq!(
            framed["content-length"], "5",
            "Connection cannot unframe a message"
        );
    }

    #[test]
    fn forwarded_headers_and_request_id() {
        let mut h = map(&[
            ("host", "api.example.com"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x_forwarded_for", "spoofed"),
        ]);
        let id = rewrite_request(&mut h, &fwd(), new_request_id);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.1.1.1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["host"], "api.example.com");
        assert_eq!(h["x-request-id"], id.value);
        assert!(!h.contains_key("x_forwarded_for"), "underscores dropped");
        assert_eq!(id.value.len(), 32);
    }

    #[test]
    fn the_targets_authority_wins_over_host() {
        let mut h = map(&[("host", "a.test")]);
        let mut f = fwd();
        f.authority = Some(b"b.test");
        rewrite_request(&mut h, &f, new_request_id);
        assert_eq!(h["host"], "b.test");
        assert_eq!(h.get_all("host").iter().count(), 1);
        assert_eq!(h["x-forwarded-host"], "b.test");
    }

    #[test]
    fn existing_request_id_is_kept() {
        let mut h = map(&[("x-request-id", "abc")]);
        let id = rewrite_request(&mut h, &fwd(), new_request_id);
        assert_eq!(id.value, "abc");
        assert!(!id.fresh);
    }

    #[test]
    fn response_rewrite_adds_date_and_id() {
        let mut h = map(&[
            ("connection", "x-a"),
            ("x-a", "1"),
            ("x-request-id", "other"),
        ]);
        rewrite_response(&mut h, &HeaderValue::from_static("id-1"));
        assert_eq!(h["x-request-id"], "id-1");
        assert!(!h.contains_key("x-a"));
        assert!(h.contains_key("date"));
        let mut dated = map(&[("date", "Tue, 01 Jan 2030 00:00:00 GMT")]);
        rewrite_response(&mut dated, &HeaderValue::from_static("id-1"));
        assert_eq!(dated["date"], "Tue, 01 Jan 2030 00:00:00 GMT");
    }

    #[test]
    fn request_ids_are_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
    }
}
