//! DNS discovery against a real DNS server on 127.0.0.1 (a small UDP responder written here,
//! answering A queries for `api.test.` with the addresses the test sets), and real upstreams
//! sharing one port on 127.0.0.1/.2/.3 like a headless Service's pods.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use tokio::net::UdpSocket;

/// What the DNS server answers for `api.test.`.
#[derive(Clone)]
enum Answer {
    Addresses(Vec<Ipv4Addr>, u32),
    ServFail,
    NxDomain,
}

struct Dns {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    /// A queries received.
    queries: Arc<AtomicUsize>,
}

impl Dns {
    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

/// A DNS responder: RFC 1035 messages, one question, A records for any name (AAAA and other
/// types get an empty NOERROR answer).
async fn dns_server(answer: Answer) -> Dns {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let answer = Arc::new(Mutex::new(answer));
    let queries = Arc::new(AtomicUsize::new(0));
    let (current, count) = (Arc::clone(&answer), Arc::clone(&queries));
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let query = &buf[..n];
            // The question: labels up to a zero byte, then type and class.
            let Some(end) = query[12..].iter().position(|&b| b == 0).map(|p| 12 + p + 5) else {
                continue;
            };
            if end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
            let answer = current.lock().unwrap().clone();
            if qtype == 1 {
                count.fetch_add(1, Ordering::SeqCst);
            }
            let (rcode, records, ttl) = match answer {
                Answer::Addresses(ips, ttl) if qtype == 1 => (0u8, ips, ttl),
                Answer::Addresses(..) => (0, Vec::new(), 0),
                Answer::ServFail => (2, Vec::new(), 0),
                Answer::NxDomain => (3, Vec::new(), 0),
            };
            let mut out = Vec::with_capacity(512);
            out.extend_from_slice(&query[0..2]); // id
            out.extend_from_slice(&[0x81, 0x80 | rcode]); // response, RD, RA, rcode
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&(records.len() as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&query[12..end]);
            for ip in records {
                out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]); // name pointer, A, IN
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            let _ = socket.send_to(&out, peer).await;
        }
    });
    Dns {
        addr,
        answer,
        queries,
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn config(dns: &Dns, port: u16, ttls: &str) -> String {
    format!(
        "backends:\n  api:\n    discovery:\n      dns: {{name: \"api.test.:{port}\", nameservers: [\"{}\"], {ttls}}}\n    hold_timeout: 0s\nroutes:\n  - backend: api\n",
        dns.addr
    )
}

async fn metric_value(app: &hitless::app::App, series: &str) -> f64 {
    metric_at(app.admin_addr, series).await
}

/// Wait until the backend's endpoint set changed `n` times in all.
async fn wait_updates(app: &hitless::app::App, n: f64) {
    let series = "hitless_discovery_updates_total{backend=\"api\"}";
    wait_metric(app.admin_addr, series, n).await;
}

/// `n` requests; returns how many each pod answered, and fails on any non-200.
async fn spread(
    c: &Client,
    proxy: SocketAddr,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let answer = get(c, proxy, "api", "/").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        *seen.entry(answer.body).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn endpoints_follow_the_dns_answer_and_readiness_waits_for_the_first() {
    let (port, _pods) = pods(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]).await;
    let dns = dns_server(Answer::ServFail).await;
    let app = start_proxy(&config(&dns, port, "min_ttl: 100ms, max_ttl: 300ms")).await;

    // No answer yet: not ready, and the reason is said.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let readyz = admin_get(app.admin_addr, "/readyz").await;
    assert_eq!(readyz.status, 503);
    assert!(readyz.body.contains("discovery"), "{}", readyz.body);

    dns.set(Answer::Addresses(vec![ip("127.0.0.1"), ip("127.0.0.2")], 0));
    wait_ready(app.admin_addr).await;
    let c = client();
    let seen = spread(&c, app.traffic_addrs[0], 40).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["127.0.0.1", "127.0.0.2"]);

    // A rollout as DNS tells it: .1 replaced by .3. Requests run all along; none fails.
    let load = {
        let (c, proxy) = (c.clone(), app.traffic_addrs[0]);
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                statuses.push(get(&c, proxy, "api", "/").await.status);
            }
            statuses
        })
    };
    dns.set(Answer::Addresses(vec![ip("127.0.0.2"), ip("127.0.0.3")], 0));
    wait_updates(&app, 2.0).await;
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 20, "{}", statuses.len());
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let seen = spread(&c, app.traffic_addrs[0], 40).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["127.0.0.2", "127.0.0.3"]);
}

#[tokio::test]
async fn a_failed_resolution_keeps_the_last_good_set() {
    let (port, _pods) = pods(&["127.0.0.1", "127.0.0.2"]).await;
    let dns = dns_server(Answer::Addresses(vec![ip("127.0.0.1"), ip("127.0.0.2")], 0)).await;
    let app = start_proxy(&config(&dns, port, "min_ttl: 100ms, max_ttl: 200ms")).await;
    wait_ready(app.admin_addr).await;
    let c = client();
    let errors = "hitless_discovery_errors_total{backend=\"api\"}";
    for failure in [
        Answer::ServFail,
        Answer::NxDomain,
        Answer::Addresses(vec![], 0),
    ] {
        let before = metric_value(&app, errors).await;
        dns.set(failure);
        wait_metric(app.admin_addr, errors, before + 1.0).await;
        let seen = spread(&c, app.traffic_addrs[0], 20).await;
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["127.0.0.1", "127.0.0.2"]);
    }
    // Only the first answer changed the set.
    assert_eq!(
        metric_value(&app, "hitless_discovery_updates_total{backend=\"api\"}").await,
        1.0
    );
}

#[tokio::test]
async fn the_ttl_is_followed_within_its_floor_and_ceiling() {
    let (port, _pods) = pods(&["127.0.0.1", "127.0.0.2"]).await;
    // TTL 0 (a query storm if followed) with a 500 ms floor.
    let dns = dns_server(Answer::Addresses(vec![ip("127.0.0.1")], 0)).await;
    let app = start_proxy(&config(&dns, port, "min_ttl: 500ms, max_ttl: 5s")).await;
    wait_ready(app.admin_addr).await;
    let start = dns.queries.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = dns.queries.load(Ordering::SeqCst) - start;
    assert!(
        (2..=6).contains(&asked),
        "{asked} A queries in 2 s with a 500 ms floor"
    );

    // TTL of an hour with a 1 s ceiling: a change is seen within about a second.
    let dns = dns_server(Answer::Addresses(vec![ip("127.0.0.1")], 3600)).await;
    let app = start_proxy(&config(&dns, port, "min_ttl: 100ms, max_ttl: 1s")).await;
    wait_ready(app.admin_addr).await;
    let changed_at = Instant::now();
    dns.set(Answer::Addresses(vec![ip("127.0.0.2")], 3600));
    wait_updates(&app, 2.0).await;
    assert!(
        changed_at.elapsed() < Duration::from_secs(3),
        "seen after {:?}",
        changed_at.elapsed()
    );
    let seen = spread(&client(), app.traffic_addrs[0], 10).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["127.0.0.2"]);
}

#[tokio::test]
async fn discovery_settings_are_checked_with_their_field_path() {
    let cases = [
        (
            "dns: {name: api.test}",
            "backends.api.discovery.dns.name: expected \"host:port\"",
        ),
        (
            "dns: {name: \"a:1\", min_ttl: 10ms}",
            "backends.api.discovery.dns.min_ttl",
        ),
        (
            "dns: {name: \"a:1\", min_ttl: 5s, max_ttl: 1s}",
            "backends.api.discovery.dns.max_ttl",
        ),
        (
            "dns: {name: \"a:1\", nameservers: [dns]}",
            "backends.api.discovery.dns.nameservers[0]",
        ),
        (
            "",
            "backends.api.discovery: set exactly one of dns or kubernetes",
        ),
        (
            "kubernetes: {service: Cart_Svc}",
            "backends.api.discovery.kubernetes.service",
        ),
        (
            "kubernetes: {namespace: shop}",
            "backends.api.discovery.kubernetes.service: required",
        ),
        (
            "kubernetes: {service: cart, port: 70000}",
            "backends.api.discovery.kubernetes.port",
        ),
    ];
    for (discovery, expected) in cases {
        let yaml = format!(
            "backends:\n  api:\n    discovery: {{{discovery}}}\nroutes:\n  - backend: api\n"
        );
        let e = hitless::config::Config::from_yaml(&yaml)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{discovery}: {e}");
    }
    let both = "backends:\n  api:\n    endpoints: [\"127.0.0.1:1\"]\n    discovery: {dns: {name: \"a:1\"}}\nroutes:\n  - backend: api\n";
    let e = hitless::config::Config::from_yaml(both)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("backends.api.discovery: set either endpoints or discovery"),
        "{e}"
    );
}

#[tokio::test]
async fn a_reload_keeps_a_discovered_set_and_follows_changed_discovery_settings() {
    let (port, _pods) = pods(&["127.0.0.1", "127.0.0.2"]).await;
    let first = dns_server(Answer::Addresses(vec![ip("127.0.0.1")], 0)).await;
    let second = dns_server(Answer::Addresses(vec![ip("127.0.0.2")], 0)).await;
    let yaml = config(&first, port, "min_ttl: 100ms, max_ttl: 200ms");
    let app = start_proxy(&yaml).await;
    wait_ready(app.admin_addr).await;
    let c = client();
    // The same settings: the backend and its discovered endpoints are kept (the config's empty
    // endpoint list must not replace them), so the very next request is served.
    app.reload(&hitless::config::Config::from_yaml(&yaml).unwrap())
        .unwrap();
    let seen = spread(&c, app.traffic_addrs[0], 10).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["127.0.0.1"]);
    // Another name server: a new backend with its own discovery; the old task stops asking.
    let yaml = config(&second, port, "min_ttl: 100ms, max_ttl: 200ms");
    app.reload(&hitless::config::Config::from_yaml(&yaml).unwrap())
        .unwrap();
    let mut last = Vec::new();
    for _ in 0..100 {
        let answer = get(&c, app.traffic_addrs[0], "api", "/").await;
        if answer.status == 200 && answer.body == "127.0.0.2" {
            last.push(answer.body);
            if last.len() == 5 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        last.len(),
        5,
        "the new backend's discovered endpoint answers"
    );
    let asked = first.queries.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        first.queries.load(Ordering::SeqCst) <= asked + 1,
        "the replaced backend's discovery stopped"
    );
}
