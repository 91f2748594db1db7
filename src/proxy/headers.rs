//! Header rewriting between client and backend (RFC 9110 section 7.6.1).
//!
//! Hop-by-hop headers describe one connection and must not cross the proxy: `Connection` and
//! every header it names, `Keep-Alive`, `Proxy-Connection`, `TE` (except `trailers`, which gRPC
//! needs end to end), `Transfer-Encoding` (hyper re-frames the body on each side) and `Upgrade`.
//! On the way in hitless appends `X-Forwarded-For`, sets `X-Forwarded-Proto` and
//! `X-Forwarded-Host`, keeps `Host`, and makes sure an `x-request-id` exists; the same id is
//! returned to the client so that a user's report can be found in the access log. A route's
//! own header changes (`request_headers:`, `response_headers:`) come after these rules
//! (`apply_filter`), on hyper's engine only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderFilter;

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
    /// Remove every field of kind `k` (not `Kind::Other`).
    fn remove_kind(&mut self, k: Kind) {
        self.remove(NAMES[k as usize]);
    }
    /// Each field with its kind (`kind`), in order; a head that knows them already says so.
    fn for_each_kind(&self, mut f: impl FnMut(Kind, &str, &Self::Value)) {
        self.for_each(|name, value| f(kind(name), name, value));
    }
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

/// The fields the rules act on, told apart in one pass over a head (by length first: one
/// case-insensitive comparison per field at most).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Other,
    Connection,
    KeepAlive,
    ProxyConnection,
    TransferEncoding,
    Upgrade,
    Te,
    Host,
    ContentLength,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XRequestId,
    Date,
    /// `x-hitless-mirror`: hitless marks the copies it mirrors with it (`mirror.rs`); a
    /// client's is removed, so that an application can trust it.
    XHitlessMirror,
}

/// The lowercase name of each kind (`Other` has none).
const NAMES: [&str; 15] = [
    "",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "date",
    "x-hitless-mirror",
];

/// The field that marks a mirrored copy (`mirror.rs`).
pub const MIRROR_MARK: &str = NAMES[Kind::XHitlessMirror as usize];

const HOP_KINDS: [Kind; 6] = [
    Kind::Connection,
    Kind::KeepAlive,
    Kind::ProxyConnection,
    Kind::TransferEncoding,
    Kind::Upgrade,
    Kind::Te,
];

/// The kind of a field called `name` (any case).
pub fn kind(name: &str) -> Kind {
    let candidates: &[Kind] = match name.len() {
        2 => &[Kind::Te],
        4 => &[Kind::Host, Kind::Date],
        7 => &[Kind::Upgrade],
        10 => &[Kind::Connection, Kind::KeepAlive],
        12 => &[Kind::XRequestId],
        14 => &[Kind::ContentLength],
        15 => &[Kind::XForwardedFor],
        16 => &[
            Kind::ProxyConnection,
            Kind::XForwardedHost,
            Kind::XHitlessMirror,
        ],
        17 => &[Kind::TransferEncoding, Kind::XForwardedProto],
        _ => return Kind::Other,
    };
    candidates
        .iter()
        .copied()
        .find(|k| name.eq_ignore_ascii_case(NAMES[*k as usize]))
        .unwrap_or(Kind::Other)
}

/// At most this many `Connection` fields, and `X-Forwarded-For` fields, are read.
const MAX_LIST_FIELDS: usize = 4;

/// What one pass over a head found.
struct Scan<V> {
    /// Bit `k`: a field of kind `k` is present.
    seen: u16,
    connection: [Option<V>; MAX_LIST_FIELDS],
    forwarded_for: [Option<V>; MAX_LIST_FIELDS],
    host: Option<V>,
    request_id: Option<V>,
    /// The first `Content-Length`, and how many there are.
    content_length: Option<V>,
    content_lengths: u8,
    te_trailers: bool,
    underscores: bool,
}

impl<V: AsRef<[u8]> + Clone> Scan<V> {
    /// `request`: also look for names with `_` (they are dropped from requests only).
    fn of<H: Head<Value = V>>(head: &H, request: bool) -> Scan<V> {
        let mut scan = Scan {
            seen: 0,
            connection: Default::default(),
            forwarded_for: Default::default(),
            host: None,
            request_id: None,
            content_length: None,
            content_lengths: 0,
            te_trailers: false,
            underscores: false,
        };
        let (mut n_connection, mut n_forwarded) = (0, 0);
        head.for_each_kind(|k, name, value| {
            scan.seen |= 1 << k as u16;
            match k {
                Kind::Connection => {
                    if let Some(slot) = scan.connection.get_mut(n_connection) {
                        *slot = Some(value.clone());
                        n_connection += 1;
                    }
                }
                Kind::XForwardedFor => {
                    if let Some(slot) = scan.forwarded_for.get_mut(n_forwarded) {
                        *slot = Some(value.clone());
                        n_forwarded += 1;
                    }
                }
                Kind::Host => {
                    scan.host.get_or_insert_with(|| value.clone());
                }
                Kind::ContentLength => {
                    scan.content_length.get_or_insert_with(|| value.clone());
                    scan.content_lengths = scan.content_lengths.saturating_add(1);
                }
                Kind::XRequestId if !value.as_ref().is_empty() => {
                    scan.request_id.get_or_insert_with(|| value.clone());
                }
                Kind::Te => {
                    scan.te_trailers |= value
                        .as_ref()
                        .split(|&b| b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
                }
                Kind::Other if request => {
                    scan.underscores |= name.bytes().any(|b| b == b'_');
                }
                _ => {}
            }
        });
        scan
    }

    fn has(&self, k: Kind) -> bool {
        self.seen & (1 << k as u16) != 0
    }
}

/// Remove the fields of the kinds in `kinds` that `scan` saw.
fn remove_seen<H: Head>(head: &mut H, scan: &Scan<H::Value>, kinds: &[Kind]) {
    for &k in kinds {
        if scan.has(k) {
            head.remove_kind(k);
        }
    }
}

/// Remove the hop-by-hop fields and those `Connection` names, never the message's framing or
/// identity (an attacker's `Connection: content-length` would leave a body unframed), and
/// `Content-Length` when a transfer coding framed the body (RFC 9112 6.3: it overrides the
/// length, and the body is framed anew on the other side).
fn remove_hop_by_hop<H: Head>(head: &mut H, scan: &Scan<H::Value>) {
    for value in scan.connection.iter().flatten() {
        for token in value.as_ref().split(|&b| b == b',') {
            let Ok(token) = std::str::from_utf8(token.trim_ascii()) else {
                continue;
            };
            let k = kind(token);
            let known = k != Kind::Other || token.is_empty() || token.eq_ignore_ascii_case("close");
            if !known {
                head.remove(token);
            }
        }
    }
    remove_seen(head, scan, &HOP_KINDS);
    if scan.has(Kind::TransferEncoding) {
        remove_seen(head, scan, &[Kind::ContentLength]);
    }
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
/// fields out, names with `_` out (unless kept), a client's `x-hitless-mirror` out (only
/// hitless's copies carry it), `X-Forwarded-For` appended,
/// `X-Forwarded-Proto` and `X-Forwarded-Host` set, `Host` from the target's authority when it
/// has one, and an `x-request-id` (the client's, or `new_id`'s). Returns the id.
pub fn rewrite_request<H: Head>(
    head: &mut H,
    fwd: &Forwarding<'_>,
    new_id: impl FnOnce() -> HeaderValue,
) -> RequestId {
    let scan = Scan::of(head, true);
    remove_hop_by_hop(head, &scan);
    if scan.underscores && !fwd.keep_underscores {
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
    remove_seen(
        head,
        &scan,
        &[
            Kind::XForwardedFor,
            Kind::XForwardedProto,
            Kind::XForwardedHost,
            Kind::XRequestId,
            Kind::XHitlessMirror,
        ],
    );
    if fwd.authority.is_some() {
        remove_seen(head, &scan, &[Kind::Host]);
    }
    let request_id = match scan
        .request_id
        .as_ref()
        .map(|v| HeaderValue::from_bytes(v.as_ref()))
    {
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
    if scan.te_trailers {
        head.add(&header::TE, &[b"trailers"]);
    }
    if let Some(authority) = fwd.authority {
        head.add(&header::HOST, &[authority]);
    }
    let mut xff: [&[u8]; 2 * MAX_LIST_FIELDS + 1] = [b""; 2 * MAX_LIST_FIELDS + 1];
    let mut parts = 0;
    for prev in scan.forwarded_for.iter().flatten() {
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
    match (fwd.authority, &scan.host) {
        (Some(authority), _) => head.add(&X_FORWARDED_HOST, &[authority]),
        (None, Some(host)) => head.add(&X_FORWARDED_HOST, &[host.as_ref()]),
        (None, None) => {}
    }
    head.add(&X_REQUEST_ID, &[request_id.value.as_bytes()]);
    request_id
}

/// Rewrite a backend's response head for the client (the one rule, for both engines):
/// hop-by-hop fields out, one `Content-Length` at most, the request's id set, and `Date`
/// added when the backend sent none (RFC 9110 6.6.1: a forwarding recipient with a clock
/// must).
pub fn rewrite_response<H: Head>(head: &mut H, request_id: &HeaderValue) {
    let scan = Scan::of(head, false);
    remove_hop_by_hop(head, &scan);
    remove_seen(head, &scan, &[Kind::XRequestId]);
    // Repeated Content-Length fields (which agree: disagreeing ones were refused) become one
    // (RFC 9110 8.6): a client must not have two to choose from.
    let repeated_length = scan.content_lengths > 1
        && !scan.has(Kind::TransferEncoding)
        && scan.content_length.is_some();
    if repeated_length {
        head.remove_kind(Kind::ContentLength);
    }
    if let (true, Some(length)) = (repeated_length, &scan.content_length) {
        head.add(&header::CONTENT_LENGTH, &[length.as_ref()]);
    }
    if !scan.has(Kind::Date) {
        head.add(&header::DATE, &[http_date().as_bytes()]);
    }
    head.add(&X_REQUEST_ID, &[request_id.as_bytes()]);
}

/// Apply a route's `request_headers:` or `response_headers:` to a head hitless's rules have
/// rewritten already: removals, then replacements, then additions. Validation keeps framing,
/// hop-by-hop fields and the request id out of a filter's reach, so nothing here can undo
/// what the rules above guarantee.
pub fn apply_filter(map: &mut HeaderMap, filter: &HeaderFilter) {
    for name in &filter.remove {
        map.remove(name);
    }
    for (name, value) in &filter.set {
        map.insert(name, value.clone());
    }
    for (name, value) in &filter.add {
        map.append(name, value.clone());
    }
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
