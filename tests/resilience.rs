//! Issue #3's scenarios: real upstream replicas started, stopped, crashed and black-holed
//! inside the test, under bounded continuous load through hitless, counting what clients saw.
//! Zero errors where the promise says zero; the plain-proxy runs prove each scenario really
//! produces the fault (so that a zero through hitless means something).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Method;
use support::*;

use hitless::demo::load::Load;
use hitless::demo::replica::{Behaviour, Replica};
use hitless::demo::{self, Mode};

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn load(target: SocketAddr, method: Method, secs: f64, gap_ms: u64) -> Load {
    let mut load = Load::paced(target, method, 6, 0.0, Duration::from_secs_f64(secs));
    load.gap = Duration::from_millis(gap_ms);
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_rolling_restart_fails_requests_through_a_plain_proxy() {
    // Through hitless: tests/churn.rs. Here: the scenario really produces the fault.
    let plain = demo::rolling_restart(Mode::Naive, Method::GET)
        .await
        .unwrap()
        .report;
    assert!(plain.errors() > 0, "no fault produced: {}", plain.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_crash_fails_requests_through_a_plain_proxy() {
    // Through hitless: tests/churn.rs. Here: the scenario really produces the fault.
    let plain = demo::crash(Mode::Naive).await.unwrap().report;
    assert!(plain.errors() > 0, "no fault produced: {}", plain.summary());
}

async fn keepalive_race(app_keepalive: Duration, secs: u64) {
    let run = |method| {
        demo::keepalive_race(
            Mode::Hitless,
            app_keepalive,
            method,
            Duration::from_secs(secs),
        )
    };
    let (get, post) = tokio::join!(run(Method::GET), run(Method::POST));
    let (get, post) = (get.unwrap(), post.unwrap());
    for (name, r) in [("GET", get), ("POST", post)] {
        // Every client sends at least twice: once on a fresh connection, once after the gap.
        assert!(r.ok >= 32, "{name}: {}", r.summary());
        assert_eq!(r.errors(), 0, "{name}: {}", r.summary());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keepalive_race_app_closing_after_200ms() {
    keepalive_race(Duration::from_millis(200), 3).await;
    let plain = demo::keepalive_race(
        Mode::Naive,
        Duration::from_millis(200),
        Method::POST,
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    assert!(plain.errors() > 0, "no race produced: {}", plain.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keepalive_race_gunicorn_2s() {
    keepalive_race(Duration::from_secs(2), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keepalive_race_node_5s() {
    keepalive_race(Duration::from_secs(5), 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4b_single_replica_restart_is_held_not_failed() {
    let only = Replica::start(any_port(), Behaviour::named("only"))
        .await
        .unwrap();
    let addr = only.addr;
    let app = demo::start_proxy(&demo::proxy_config(Mode::Hitless, &[addr]))
        .await
        .unwrap();
    let target = app.traffic_addrs[0];
    let get = tokio::spawn(load(target, Method::GET, 3.5, 10).run());
    let post = tokio::spawn(load(target, Method::POST, 3.5, 10).run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    only.stop().await;
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let back = Replica::start(addr, Behaviour::named("only"))
        .await
        .unwrap();
    let down_for = down.elapsed();
    let (get, post) = (get.await.unwrap(), post.await.unwrap());
    for (name, r) in [("GET", &get), ("POST", &post)] {
        assert_eq!(r.errors(), 0, "{name}: {}", r.summary());
        // The requests that waited for the replica did not wait past its return (+ a probe).
        assert!(
            r.latency(1.0) < down_for + Duration::from_millis(700),
            "{name}: max {:?}",
            r.latency(1.0)
        );
    }
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    let served = metric(
        &page,
        "hitless_held_requests_total{backend=\"app\",reason=\"served\"}",
    );
    assert!(served.unwrap_or(0.0) >= 6.0, "{page}");
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4c_endpoint_turning_into_a_black_hole_is_out_of_rotation() {
    let a = Replica::start(any_port(), Behaviour::named("a"))
        .await
        .unwrap();
    let b = Replica::start(any_port(), Behaviour::named("b"))
        .await
        .unwrap();
    let c = Replica::start(any_port(), Behaviour::named("c"))
        .await
        .unwrap();
    let config = demo::proxy_config(Mode::Hitless, &[a.addr, b.addr, c.addr]).replace(
        "backends:\n  app:\n",
        "backends:\n  app:\n    connect_timeout: 500ms\n",
    );
    let app = demo::start_proxy(&config).await.unwrap();
    let running = tokio::spawn(load(app.traffic_addrs[0], Method::GET, 4.0, 2).run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = c.addr;
    c.stop().await;
    let _hole = blackhole_at(gone).await;
    let report = running.await.unwrap();
    assert_eq!(report.errors(), 0, "{}", report.summary());
    // Only the few requests that met the black hole before its ejection paid the timeout.
    assert!(
        report.latency(0.99) < Duration::from_millis(300),
        "p99 {:?}",
        report.latency(0.99)
    );
    assert!(
        report.latency(1.0) < Duration::from_millis(2500),
        "max {:?}",
        report.latency(1.0)
    );
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(
            &page,
            "hitless_backend_endpoints_unreachable{backend=\"app\"}"
        ),
        Some(1.0),
        "out of rotation, not ejected: {page}"
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4d_app_closing_after_n_requests_silently_has_zero_errors() {
    let every5 = |name| {
        let mut b = Behaviour::named(name);
        b.max_requests_per_conn = Some(5);
        b
    };
    let a = Replica::start(any_port(), every5("a")).await.unwrap();
    let b = Replica::start(any_port(), every5("b")).await.unwrap();
    let app = demo::start_proxy(&demo::proxy_config(Mode::Hitless, &[a.addr, b.addr]))
        .await
        .unwrap();
    let target = app.traffic_addrs[0];
    let (get, post) = tokio::join!(
        load(target, Method::GET, 2.5, 1).run(),
        load(target, Method::POST, 2.5, 1).run()
    );
    for (name, r) in [("GET", &get), ("POST", &post)] {
        assert!(r.ok > 100, "{name}: {}", r.summary());
        assert_eq!(r.errors(), 0, "{name}: {}", r.summary());
    }
    // The fault was real: connections were closed under the proxy every five requests.
    assert!(a.seen.connections.load(Ordering::SeqCst) > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_total_outage_answers_503_when_the_hold_expires_within_budget() {
    let (x, y) = (refused_addr().await, refused_addr().await);
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{x}\", \"{y}\"]\n    hold_timeout: 1s\n    retry_budget: {{ratio: 0.2, min_per_second: 0}}\nroutes:\n  - backend: app\n"
    );
    let app = start_proxy(&config).await;
    let target = app.traffic_addrs[0];
    let requests = 30;
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            tokio::spawn(async move {
                // Spread over half a second, as a steady trickle of users would.
                tokio::time::sleep(Duration::from_millis(i * 15)).await;
                let started = Instant::now();
                let answer = get(&client(), target, "x", "/").await;
                (answer, started.elapsed())
            })
        })
        .collect();
    for t in tasks {
        let (answer, took) = t.await.unwrap();
        assert_eq!(answer.status, 503, "{}", answer.body);
        let ps = answer.header("proxy-status").to_string();
        assert!(
            ps.contains("error=destination_unavailable") && ps.contains("no_healthy_endpoints"),
            "{ps}"
        );
        assert!(
            ps.contains("connect_refused"),
            "names the last failure: {ps}"
        );
        // As soon as the hold expires, never later.
        assert!(took >= Duration::from_millis(950), "{took:?}");
        assert!(took < Duration::from_millis(1600), "{took:?}");
    }
    // Connection attempts: one first try per request, plus retries and hold probes, which
    // all draw on the budget (20% of requests, no floor here).
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    let retries: f64 = page
        .lines()
        .filter(|l| l.starts_with("hitless_retries_total{backend=\"app\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        retries <= 0.2 * requests as f64 + 1.0,
        "retries {retries}\n{page}"
    );
    assert_eq!(
        metric(
            &page,
            "hitless_held_requests_total{backend=\"app\",reason=\"expired\"}"
        ),
        Some(requests as f64)
    );
}

/// The other face of a total outage: every replica up but unready (503). Nothing to hold for;
/// the retry budget alone bounds what reaches their ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_unready_replicas_receive_at_most_the_budget_in_retries() {
    let mut unready = Behaviour::named("unready");
    unready.not_ready_for = Some(Duration::from_secs(3600));
    let a = Replica::start(any_port(), unready.clone()).await.unwrap();
    let b = Replica::start(any_port(), unready).await.unwrap();
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\", \"{}\"]\n    retry_budget: {{ratio: 0.2, min_per_second: 0}}\nroutes:\n  - backend: app\n",
        a.addr, b.addr
    );
    let app = demo::start_proxy(&config).await.unwrap();
    let c = client();
    let requests = 50;
    for _ in 0..requests {
        let answer = get(&c, app.traffic_addrs[0], "x", "/").await;
        assert_eq!(answer.status, 503, "the apps' own answer");
    }
    let reached = a.seen.requests.load(Ordering::SeqCst) + b.seen.requests.load(Ordering::SeqCst);
    // 50 first tries + 20% of 50 in retries; not 150 (3 attempts each).
    assert_eq!(reached, requests + requests / 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_overload_is_shed_with_503_and_retry_after() {
    let mut slow = Behaviour::named("slow");
    slow.delay = Duration::from_millis(200);
    let up = Replica::start(any_port(), slow).await.unwrap();
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\"]\n    max_concurrent_requests: 4\nroutes:\n  - backend: app\n",
        up.addr
    );
    let app = demo::start_proxy(&config).await.unwrap();
    let mut heavy = load(app.traffic_addrs[0], Method::GET, 2.0, 0);
    heavy.connections = 16;
    let running = tokio::spawn(async move { heavy.run().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While saturated: an extra request is shed at once, with Retry-After.
    let c = client();
    let mut shed = None;
    for _ in 0..50 {
        let started = Instant::now();
        let answer = get(&c, app.traffic_addrs[0], "x", "/").await;
        if answer.status == 503 {
            shed = Some((answer, started.elapsed()));
            break;
        }
    }
    let (answer, took) = shed.expect("a request beyond the limit is shed");
    assert_eq!(answer.header("retry-after"), "1");
    assert!(answer.header("proxy-status").contains("overloaded"));
    assert!(
        took < Duration::from_millis(150),
        "shed at once, took {took:?}"
    );
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    let in_flight = metric(&page, "hitless_backend_requests_in_flight{backend=\"app\"}");
    assert!(in_flight.unwrap_or(99.0) <= 4.0, "{page}");
    let report = running.await.unwrap();
    assert!(report.ok > 10, "{}", report.summary());
    assert_eq!(report.client_errors, 0, "{}", report.summary());
    for what in report.failed.keys() {
        assert_eq!(what, "503 overloaded", "{}", report.summary());
    }
    assert!(up.seen.requests.load(Ordering::SeqCst) <= report.ok + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_post_read_by_a_dying_app_is_not_sent_again() {
    let mut dies = Behaviour::named("dies");
    dies.die_on_post_after = Some(Duration::from_millis(50));
    let up = Replica::start(any_port(), dies.clone()).await.unwrap();
    let other = Replica::start(any_port(), dies).await.unwrap();
    let app = demo::start_proxy(&demo::proxy_config(Mode::Hitless, &[up.addr, other.addr]))
        .await
        .unwrap();
    let c = client();
    let target = app.traffic_addrs[0];
    // Pooled connections to both replicas, then idle long enough to look like the race.
    for _ in 0..4 {
        assert_eq!(get(&c, target, "x", "/").await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let post = http::Request::post(format!("http://{target}/orders"))
        .header("host", "x")
        .body(full("order=42"))
        .unwrap();
    let answer = send(&c, post).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(answer.header("proxy-status").contains("upstream_reset"));
    let posts = up.seen.posts.load(Ordering::SeqCst) + other.seen.posts.load(Ordering::SeqCst);
    assert_eq!(
        posts, 1,
        "the POST reached the application once, and only once"
    );
    // It went out on a reused connection: no replica opened a connection for it.
    let conns =
        up.seen.connections.load(Ordering::SeqCst) + other.seen.connections.load(Ordering::SeqCst);
    assert!(conns <= 2, "{conns} connections");
}

/// Scenario 4, slow start: a replica that listens before it is ready (503 on every path,
/// its health path included, for 1.5 s). POSTs are not retried after a 503, so only the
/// health check keeps them away from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_replica_listening_before_ready_gets_traffic_only_after_its_check() {
    async fn run(checks: bool) -> (hitless::demo::load::Report, usize) {
        let ready = Replica::start(any_port(), Behaviour::named("ready"))
            .await
            .unwrap();
        let mut starting = Behaviour::named("starting");
        starting.not_ready_for = Some(Duration::from_millis(1500));
        let starting = Replica::start(any_port(), starting).await.unwrap();
        let mut config = demo::proxy_config(Mode::Hitless, &[ready.addr, starting.addr]);
        if checks {
            config = config.replace(
                "backends:\n  app:\n",
                "backends:\n  app:\n    health_check: {path: /healthz, interval: 100ms, timeout: 100ms}\n",
            );
        }
        let app = demo::start_proxy(&config).await.unwrap();
        let report = load(app.traffic_addrs[0], Method::POST, 2.5, 5).run().await;
        let page = admin_get(app.admin_addr, "/metrics").await.body;
        if checks {
            assert_eq!(
                metric(&page, "hitless_backend_endpoints_unready{backend=\"app\"}"),
                Some(0.0),
                "ready by the end: {page}"
            );
        }
        (report, starting.seen.requests.load(Ordering::SeqCst))
    }
    let (checked, reached) = run(true).await;
    assert_eq!(checked.errors(), 0, "{}", checked.summary());
    assert!(
        reached > 10,
        "it takes traffic once ready ({reached} requests)"
    );
    let (unchecked, _) = run(false).await;
    assert!(
        unchecked.errors() > 0,
        "without checks the 503s reach clients: {}",
        unchecked.summary()
    );
}

/// Endpoint set change by reload: the removed endpoint gets no new request, its in-flight one
/// finishes, its idle connections close; the kept backend's pooled connections survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removes_an_endpoint_without_failing_its_in_flight_request() {
    let mut slow = Behaviour::named("old");
    slow.delay = Duration::from_millis(800);
    let old = Replica::start(any_port(), slow).await.unwrap();
    let new = Replica::start(any_port(), Behaviour::named("new"))
        .await
        .unwrap();
    // Pooled connections are not reaped while the test looks (on 2 busy cores it can take
    // longer than the default 1.5 s idle timeout).
    let yaml = |addr: SocketAddr| {
        format!(
            "backends:\n  app: {{endpoints: [\"{addr}\"], pool: {{idle_timeout: 60s}}}}\nroutes:\n  - {{backend: app}}\n"
        )
    };
    let config = |addr: SocketAddr| hitless::config::Config::from_yaml(&yaml(addr)).unwrap();
    let app = demo::start_proxy(&yaml(old.addr)).await.unwrap();
    let target = app.traffic_addrs[0];
    // One pooled connection to the old endpoint, then a slow request in flight on it.
    assert_eq!(get(&client(), target, "x", "/").await.body, "old");
    let in_flight = tokio::spawn(async move { get(&client(), target, "x", "/").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.reload(&config(new.addr)).unwrap();
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            get(&c, target, "x", "/").await.body,
            "new",
            "no new request to the removed endpoint"
        );
    }
    let answer = in_flight.await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "old"));
    assert_eq!(old.seen.requests.load(Ordering::SeqCst), 2);
    // Its connections close once idle (the pool dropped them with the endpoint): what is left
    // open is the new endpoint's, which closes none (one per worker that served it).
    let open = "hitless_upstream_connections_open{backend=\"app\"}";
    let new_conns = || new.seen.connections.load(Ordering::SeqCst) as f64;
    let mut page = String::new();
    for _ in 0..100 {
        page = admin_get(app.admin_addr, "/metrics").await.body;
        if metric(&page, open) == Some(new_conns()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&page, open),
        Some(new_conns()),
        "only the new endpoint's connections are left: {page}"
    );
}

/// The gunicorn case: an application that stops takes a new connection with a POST in it and
/// closes it unread (the kernel answers RST: unread data). Nothing of the request was read,
/// so hitless sends it to another endpoint: it reaches an application exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_on_a_new_connection_closed_unread_is_sent_elsewhere_once() {
    // Accepts, waits until the request is there (peeked, not read), and closes.
    let unread = raw_server(|stream| async move {
        let mut byte = [0u8; 1];
        let _ = stream.peek(&mut byte).await;
        drop(stream);
    })
    .await;
    let app = Replica::start(any_port(), Behaviour::named("app"))
        .await
        .unwrap();
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\", \"{}\"]\n    balance: round_robin\nroutes:\n  - backend: app\n",
        unread.addr, app.addr
    );
    let proxy = demo::start_proxy(&config).await.unwrap();
    let c = client();
    for _ in 0..4 {
        let post = http::Request::post(format!("http://{}/orders", proxy.traffic_addrs[0]))
            .header("host", "x")
            .body(full("order=42"))
            .unwrap();
        let answer = send(&c, post).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "app"));
    }
    assert_eq!(app.seen.posts.load(Ordering::SeqCst), 4, "each POST once");
    assert!(unread.connections() >= 2, "the unread endpoint was tried");
}

/// The other side of the rule: an application that read the POST on a new connection and
/// then closed it (a FIN: it died after reading) may have acted on it: not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_read_on_a_new_connection_then_closed_is_not_sent_again() {
    let mut dies = Behaviour::named("dies");
    dies.die_on_post_after = Some(Duration::ZERO);
    let dying = Replica::start(any_port(), dies).await.unwrap();
    let app = Replica::start(any_port(), Behaviour::named("app"))
        .await
        .unwrap();
    let config = format!(
        "backends:\n  app:\n    endpoints: [\"{}\", \"{}\"]\n    balance: round_robin\nroutes:\n  - backend: app\n",
        dying.addr, app.addr
    );
    let proxy = demo::start_proxy(&config).await.unwrap();
    let post = http::Request::post(format!("http://{}/orders", proxy.traffic_addrs[0]))
        .header("host", "x")
        .body(full("order=42"))
        .unwrap();
    let answer = send(&client(), post).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(answer.header("proxy-status").contains("upstream_reset"));
    assert_eq!(dying.seen.posts.load(Ordering::SeqCst), 1);
    assert_eq!(app.seen.posts.load(Ordering::SeqCst), 0, "not sent twice");
}
