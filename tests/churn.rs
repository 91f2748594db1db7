//! The first promise at production load: endpoints restarting, crashing, warming up and
//! vanishing under 1,500 requests a second over 64 keep-alive connections, through hitless
//! with its defaults, and the exact number of requests that failed: zero. Counted at both
//! ends: clients count what they saw, replicas count what they read (a POST must reach an
//! application exactly once). The scenarios are `hitless demo`'s (`src/demo/`).
//!
//! The tests of this file take turns (`LOAD`): two of them at once would halve the load each
//! sees and make the machine, not the policy, the subject.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use support::*;

use hitless::demo::load::Report;
use hitless::demo::replica::Behaviour;
use hitless::demo::{self, Mode, Replicas, Run};

static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether a run was at production load: at least 1,000 requests a second offered. The
/// generator offers 1,500; a machine too slow to keep two thirds of that makes the run
/// meaningless rather than failed, so it is reported, and counted as a failure only when far
/// off (then every figure below would be about the machine).
fn at_load(report: &Report, seconds: f64) {
    let rate = report.requests() as f64 / seconds;
    eprintln!("{} ({rate:.0} requests/s)", report.summary());
    assert!(
        rate >= 1000.0,
        "the load generator reached only {rate:.0} requests/s: {}",
        report.summary()
    );
}

fn zero_errors(run: &Run, seconds: f64) {
    at_load(&run.report, seconds);
    assert_eq!(run.report.errors(), 0, "{}", run.report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_get_has_zero_errors() {
    let _turn = LOAD.lock().await;
    let run = demo::rolling_restart(Mode::Hitless, Method::GET)
        .await
        .unwrap();
    zero_errors(&run, 5.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_post_has_zero_errors_and_each_post_reaches_an_app_once() {
    let _turn = LOAD.lock().await;
    let run = demo::rolling_restart(Mode::Hitless, Method::POST)
        .await
        .unwrap();
    zero_errors(&run, 5.5);
    assert_eq!(
        run.posts, run.report.ok,
        "every answered POST reached an application exactly once, and no other did"
    );
}

/// HTTP/2 clients (64 connections, one stream at a time each): their requests reach the
/// HTTP/1.1 replicas over hitless's raw transport for HTTP/2 streams (`proxy/stream.rs`), and
/// the rollout must cost them nothing either; POSTs reach an application exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_over_http2_has_zero_errors() {
    let _turn = LOAD.lock().await;
    let run = demo::rolling_restart_with(Mode::Hitless, Method::GET, true)
        .await
        .unwrap();
    zero_errors(&run, 5.5);
    let run = demo::rolling_restart_with(Mode::Hitless, Method::POST, true)
        .await
        .unwrap();
    zero_errors(&run, 5.5);
    assert_eq!(
        run.posts, run.report.ok,
        "each answered POST reached an app once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_with_503_for_two_seconds_has_zero_errors() {
    let _turn = LOAD.lock().await;
    let run = demo::slow_start(Mode::Hitless).await.unwrap();
    zero_errors(&run, 5.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_response_has_zero_errors_for_idempotent_requests() {
    let _turn = LOAD.lock().await;
    let run = demo::crash(Mode::Hitless).await.unwrap();
    zero_errors(&run, 3.5);
}

/// A new endpoint whose address drops SYNs (a pod on a dead node). With the defaults
/// (`connect_timeout: 1s`), live traffic gives up on its connects after their patience (about
/// 50 ms on loopback) and goes elsewhere; the endpoint leaves rotation, and only its probe
/// waits out the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_costs_live_traffic_far_less_than_the_connect_timeout() {
    let _turn = LOAD.lock().await;
    let run = demo::black_hole(Mode::Hitless).await.unwrap();
    zero_errors(&run, 3.5);
    let slowest = run.report.latency(1.0);
    assert!(
        slowest < Duration::from_millis(400),
        "slowest answer {slowest:?}: live traffic must not wait for the 1 s connect timeout"
    );
    assert!(
        slowest >= Duration::from_millis(45),
        "slowest answer {slowest:?}: no request met the black hole (the test tests nothing)"
    );
}

/// A replica stops and its address turns into a black hole: refused first, then silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_turning_into_a_black_hole_stays_out_of_rotation() {
    let _turn = LOAD.lock().await;
    let mut replicas = Replicas::start(&[app_replica("a"), app_replica("b"), app_replica("c")])
        .await
        .unwrap();
    let app = demo::start_proxy(&demo::proxy_config(Mode::Hitless, &replicas.addrs))
        .await
        .unwrap();
    let traffic = demo::production_load(app.traffic_addrs[0], Method::GET, Duration::from_secs(3));
    let running = tokio::spawn(traffic.run());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let gone = replicas.addrs[2];
    replicas.stop(2).await;
    let _hole = blackhole_at(gone).await;
    let report = running.await.unwrap();
    at_load(&report, 3.0);
    assert_eq!(report.errors(), 0, "{}", report.summary());
    assert!(report.latency(1.0) < Duration::from_millis(400));
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    assert_eq!(
        metric(
            &page,
            "hitless_backend_endpoints_unreachable{backend=\"app\"}"
        ),
        Some(1.0),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_restarting_has_zero_errors() {
    let _turn = LOAD.lock().await;
    let mut replicas = Replicas::start(&[app_replica("a"), app_replica("b")])
        .await
        .unwrap();
    let app = demo::start_proxy(&demo::proxy_config(Mode::Hitless, &replicas.addrs))
        .await
        .unwrap();
    let (get, post) = {
        let target = app.traffic_addrs[0];
        let half = |method| {
            let mut load = demo::production_load(target, method, Duration::from_secs(4));
            load.connections /= 2;
            load.rate /= 2.0;
            tokio::spawn(load.run())
        };
        let (get, post) = (half(Method::GET), half(Method::POST));
        for i in 0..2 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            replicas.stop(i).await;
            tokio::time::sleep(Duration::from_millis(800)).await;
            replicas.restart(i, None).await.unwrap();
        }
        (get.await.unwrap(), post.await.unwrap())
    };
    let mut both = get.clone();
    both.merge(post.clone());
    at_load(&both, 4.0);
    assert_eq!(get.errors(), 0, "GET: {}", get.summary());
    assert_eq!(post.errors(), 0, "POST: {}", post.summary());
    assert_eq!(
        replicas.posts(),
        post.ok,
        "each POST reached an application once"
    );
}

/// A single replica restarting (a sidecar's app, a one-replica Deployment): its requests are
/// held, not failed, and go as soon as it accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_replica_restart_is_held_not_failed() {
    let _turn = LOAD.lock().await;
    let mut replicas = Replicas::start(&[app_replica("only")]).await.unwrap();
    let app = demo::start_proxy(&demo::proxy_config(Mode::Hitless, &replicas.addrs))
        .await
        .unwrap();
    let traffic = demo::production_load(app.traffic_addrs[0], Method::GET, Duration::from_secs(4));
    let running = tokio::spawn(traffic.run());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    replicas.stop(0).await;
    let down = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    replicas.restart(0, None).await.unwrap();
    let down_for = down.elapsed();
    let report = running.await.unwrap();
    // Paced clients wait during the restart, so fewer requests are offered: no rate check.
    assert_eq!(report.errors(), 0, "{}", report.summary());
    assert!(
        report.latency(1.0) < down_for + Duration::from_millis(700),
        "held no longer than the restart (+ a probe): {:?}",
        report.latency(1.0)
    );
}

/// Every endpoint refusing: requests wait for the hold, then get 503 naming the cause, and
/// the backend sees a bounded number of connects (its probes), whatever the request rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_outage_answers_503_at_the_end_of_the_hold_with_bounded_attempts() {
    let _turn = LOAD.lock().await;
    let mut replicas = Replicas::start(&[app_replica("a"), app_replica("b")])
        .await
        .unwrap();
    let config = demo::proxy_config(Mode::Hitless, &replicas.addrs).replace(
        "backends:\n  app:\n",
        "backends:\n  app:\n    hold_timeout: 1s\n",
    );
    let app = demo::start_proxy(&config).await.unwrap();
    let target = app.traffic_addrs[0];
    replicas.stop(0).await;
    replicas.stop(1).await;
    let mut load = demo::production_load(target, Method::GET, Duration::from_secs(3));
    load.connections = 32;
    load.rate = 1000.0;
    let started = std::time::Instant::now();
    let report = load.run().await;
    let outage = started.elapsed();
    assert_eq!(report.ok, 0, "{}", report.summary());
    assert_eq!(report.client_errors, 0, "{}", report.summary());
    // Every answer: 503 no_healthy_endpoints, after the hold (the latencies of failed
    // requests are not recorded by the generator; the hold is checked below with one request).
    assert_eq!(
        report.failed.keys().collect::<Vec<_>>(),
        vec!["503 no_healthy_endpoints"],
        "{}",
        report.summary()
    );
    let t = std::time::Instant::now();
    let answer = get(&client(), target, "x", "/").await;
    let took = t.elapsed();
    assert_eq!(answer.status, 503);
    let ps = answer.header("proxy-status").to_string();
    assert!(
        ps.contains("error=destination_unavailable")
            && ps.contains("no_healthy_endpoints")
            && ps.contains("connect_refused"),
        "{ps}"
    );
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2000),
        "answered at the end of the 1 s hold: {took:?}"
    );
    // The bound: while every endpoint refuses, each is probed about ten times a second, and
    // requests add at most one connect each for those in flight when it went down.
    let page = admin_get(app.admin_addr, "/metrics").await.body;
    let probes = metric(
        &page,
        "hitless_endpoint_probes_total{backend=\"app\",result=\"failed\"}",
    )
    .unwrap_or(0.0);
    let failed_connects: f64 = ["connect_refused"]
        .iter()
        .filter_map(|c| {
            metric(
                &page,
                &format!("hitless_retries_total{{backend=\"app\",reason=\"{c}\"}}"),
            )
        })
        .sum();
    let seconds = outage.as_secs_f64() + took.as_secs_f64();
    let probe_bound = 2.0 * (seconds * 10.0 + 2.0);
    assert!(
        probes <= probe_bound,
        "{probes} probes > {probe_bound}\n{page}"
    );
    assert!(
        failed_connects <= 2.0 + 32.0,
        "{failed_connects} connects by requests for {} requests\n{page}",
        report.requests()
    );
    eprintln!(
        "{} requests in {seconds:.1} s: {probes} probe connects, {failed_connects} request connects",
        report.requests() + 1
    );
}

/// More concurrency than the backend's limit: the excess gets 503 `overloaded` at once, and
/// nothing else fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_never_a_502() {
    let _turn = LOAD.lock().await;
    let slow = |name| {
        let mut b = Behaviour::named(name);
        b.delay = Duration::from_millis(40);
        b
    };
    let replicas = Replicas::start(&[slow("a"), slow("b")]).await.unwrap();
    let config = demo::proxy_config(Mode::Hitless, &replicas.addrs).replace(
        "backends:\n  app:\n",
        "backends:\n  app:\n    max_concurrent_requests: 24\n",
    );
    let app = demo::start_proxy(&config).await.unwrap();
    let report = demo::production_load(app.traffic_addrs[0], Method::GET, Duration::from_secs(3))
        .run()
        .await;
    at_load(&report, 3.0);
    assert!(report.ok > 1000, "{}", report.summary());
    assert_eq!(report.client_errors, 0, "{}", report.summary());
    let shed = report.failed.get("503 overloaded").copied().unwrap_or(0);
    assert!(shed > 0, "the limit was reached: {}", report.summary());
    assert_eq!(
        report.errors(),
        shed,
        "only overload answers: {}",
        report.summary()
    );
    assert!(replicas.reached() <= report.ok + 24);
}

/// The access log of every retried request shows its tries on distinct endpoints (the real
/// binary, its access log read from stdout), through a rolling restart at load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_try_distinct_endpoints() {
    let _turn = LOAD.lock().await;
    let mut replicas = Replicas::start(&[app_replica("a"), app_replica("b"), app_replica("c")])
        .await
        .unwrap();
    let (port, admin) = (free_port(), free_port());
    let list = replicas
        .addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dir = std::env::temp_dir().join(format!("hitless-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners: [{{bind: \"127.0.0.1:{port}\"}}]\nadmin: {{bind: \"127.0.0.1:{admin}\"}}\ndrain: {{delay: 0s, timeout: 1s, control_socket: \"{}\"}}\nbackends:\n  app:\n    endpoints: [{list}]\nroutes:\n  - backend: app\n",
            dir.join("sock").display()
        ),
    )
    .unwrap();
    let mut child = hitless_bin()
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(format!("127.0.0.1:{admin}").parse().unwrap()).await;
    let running =
        tokio::spawn(demo::production_load(target, Method::GET, Duration::from_millis(4500)).run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        replicas.stop(i).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        replicas.restart(i, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = running.await.unwrap();
    // SIGTERM: drain, exit, close stdout.
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let lines = lines.join().unwrap();
    assert_eq!(report.errors(), 0, "{}", report.summary());
    let mut retried = 0;
    for line in &lines {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let attempts = entry["attempts"].as_u64().unwrap_or(0);
        if attempts < 2 {
            continue;
        }
        retried += 1;
        let mut endpoints: Vec<&str> = entry["failed_tries"]
            .as_str()
            .unwrap_or("")
            .split(", ")
            .filter_map(|t| t.split(' ').next())
            .collect();
        endpoints.push(entry["endpoint"].as_str().unwrap_or(""));
        let mut distinct = endpoints.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            endpoints.len(),
            "tries on one endpoint twice: {line}"
        );
    }
    eprintln!(
        "{} access log lines, {retried} retried requests",
        lines.len()
    );
    assert!(lines.len() >= report.requests(), "one line per request");
    let _ = std::fs::remove_dir_all(&dir);
}

fn app_replica(name: &'static str) -> Behaviour {
    let mut b = Behaviour::named(name);
    b.delay = demo::APP_DELAY;
    b
}
