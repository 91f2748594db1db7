//! Issue #4 with the real binary: SIGTERM under load drains without an error, `hitless drain`
//! then SIGTERM waits the delay once, a second signal exits at once, and reloads (file change,
//! SIGHUP) swap routes and endpoints under load while a broken file is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpStream;

use hitless::demo::replica::{Behaviour, Replica};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hitless-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Write atomically (as editors and ConfigMap updates do): the reader never sees half a file.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Running {
    child: ChildProxy,
    traffic: SocketAddr,
    admin: SocketAddr,
    socket: PathBuf,
}

fn config_text(traffic: u16, admin: u16, socket: &Path, drain: &str, rest: &str) -> String {
    format!(
        "listeners: [{{bind: \"127.0.0.1:{traffic}\"}}]\nadmin: {{bind: \"127.0.0.1:{admin}\"}}\naccess_log: false\nruntime: {{worker_threads: 2}}\ndrain: {{control_socket: \"{}\", {drain}}}\n{rest}",
        socket.display()
    )
}

async fn spawn(dir: &Path, drain: &str, rest: &str) -> (Running, PathBuf) {
    let (traffic, admin) = (free_port(), free_port());
    let socket = dir.join("control.sock");
    let file = dir.join("hitless.yaml");
    write_config(&file, &config_text(traffic, admin, &socket, drain, rest));
    let child = hitless_bin()
        .args(["run", "--config", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running {
        child: ChildProxy { child },
        traffic: SocketAddr::from(([127, 0, 0, 1], traffic)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        socket,
    };
    wait_ready(running.admin).await;
    (running, file)
}

async fn readyz(admin: SocketAddr) -> u16 {
    admin_get(admin, "/readyz").await.status
}

/// Wait for the child to exit (bounded); its exit code and when.
async fn exited(child: &mut ChildProxy, within: Duration) -> (Option<i32>, Instant) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(status)) = child.child.try_wait() {
            return (status.code(), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("hitless did not exit within {within:?}");
}

#[derive(Debug)]
enum Outcome {
    /// An answer; `closing`: it said `Connection: close`.
    Answer { status: u16, closing: bool },
    /// No connection (the listener is closed: expected once the drain closes it).
    Refused,
    /// A request that got no answer on an open connection: what must never happen.
    Lost(String),
}

struct Record {
    sent: Instant,
    outcome: Outcome,
}

/// One HTTP/1.1 keep-alive client, sending until `until`; reconnects when told to.
async fn h1_client(target: SocketAddr, until: Instant) -> Vec<Record> {
    let mut out = Vec::new();
    let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    while Instant::now() < until {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            conn = match TcpStream::connect(target).await {
                Ok(stream) => {
                    let (sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                    tokio::spawn(c);
                    Some(sender)
                }
                Err(_) => {
                    out.push(Record {
                        sent: Instant::now(),
                        outcome: Outcome::Refused,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        let request = http::Request::get("/")
            .header("host", "drain.test")
            .body(Empty::new())
            .unwrap();
        let sent = Instant::now();
        let result = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let closing = response
                .headers()
                .get("connection")
                .is_some_and(|v| v == "close");
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, closing))
        }
        .await;
        match result {
            Ok((status, closing)) => {
                out.push(Record {
                    sent,
                    outcome: Outcome::Answer { status, closing },
                });
                if closing {
                    conn = None;
                }
            }
            Err(e) => {
                out.push(Record {
                    sent,
                    outcome: Outcome::Lost(e.to_string()),
                });
                conn = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
}

/// A request the server's GOAWAY (NO_ERROR) left unprocessed.
fn refused_by_goaway(e: &hyper::Error) -> bool {
    use std::error::Error;
    e.source()
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h2| h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
}

/// One HTTP/2 client on one connection; a GOAWAY ends it (reconnects are refused by then).
async fn h2_client(target: SocketAddr, until: Instant) -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(stream) = TcpStream::connect(target).await else {
        return out;
    };
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    while Instant::now() < until {
        if sender.ready().await.is_err() {
            // GOAWAY received and the connection wound down: told to go elsewhere.
            break;
        }
        let request = http::Request::get(format!("http://{target}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let sent = Instant::now();
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                out.push(Record {
                    sent,
                    outcome: Outcome::Answer {
                        status,
                        closing: false,
                    },
                });
            }
            Err(e) if refused_by_goaway(&e) => {
                // Sent as the GOAWAY crossed it: not processed (RFC 9113 section 6.8), which a
                // client retries elsewhere, like a refused connection.
                out.push(Record {
                    sent,
                    outcome: Outcome::Refused,
                });
                break;
            }
            Err(e) => out.push(Record {
                sent,
                outcome: Outcome::Lost(e.to_string()),
            }),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_without_losing_a_request() {
    let fast = Replica::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Behaviour::named("ok"),
    )
    .await
    .unwrap();
    let mut slow_b = Behaviour::named("slow");
    slow_b.delay = Duration::from_millis(1500);
    let slow = Replica::start(SocketAddr::from(([127, 0, 0, 1], 0)), slow_b)
        .await
        .unwrap();
    let dir = scratch("sigterm");
    let rest = format!(
        "backends:\n  app: {{endpoints: [\"{}\"]}}\n  slow: {{endpoints: [\"{}\"]}}\nroutes:\n  - {{match: {{path_prefix: /slow}}, backend: slow}}\n  - {{backend: app}}\n",
        fast.addr, slow.addr
    );
    let delay = Duration::from_millis(1000);
    let (mut hl, _) = spawn(&dir, "delay: 1s, timeout: 5s", &rest).await;
    let until = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    // Steady but light load: the test binaries are debug builds sharing two cores.
    for _ in 0..3 {
        clients.push(tokio::spawn(h1_client(hl.traffic, until)));
    }
    let mut h2 = Vec::new();
    for _ in 0..1 {
        h2.push(tokio::spawn(h2_client(hl.traffic, until)));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A slow request, in flight across the whole delay and into the closing phase.
    let target = hl.traffic;
    let slow_request = tokio::spawn(async move {
        let answer = get(&client(), target, "drain.test", "/slow").await;
        (answer, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(800)).await;

    let pid = hl.child.child.id();
    signal(pid, "TERM");
    let term = Instant::now();
    // Readiness fails at once.
    let mut polls = Vec::new();
    loop {
        let t0 = term.elapsed();
        let status = readyz(hl.admin).await;
        polls.push((t0, term.elapsed(), status));
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let not_ready_after = term.elapsed();
    assert!(
        not_ready_after < Duration::from_millis(100),
        "readyz 503 only after {not_ready_after:?}: {polls:?}"
    );
    let (code, exit_at) = exited(&mut hl.child, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    let (slow_answer, slow_done) = slow_request.await.unwrap();
    assert_eq!(
        slow_answer.status, 200,
        "the slow in-flight request completes"
    );
    assert_eq!(slow_answer.body, "slow");
    // Exit: after the delay and the slow request, never later than delay + timeout.
    assert!(
        exit_at >= slow_done,
        "exited before the in-flight request finished"
    );
    assert!(exit_at - term >= delay, "exited before drain.delay");
    assert!(
        exit_at - term < Duration::from_millis(6500),
        "{:?}",
        exit_at - term
    );

    let mut h1_records = Vec::new();
    for c in clients {
        h1_records.extend(c.await.unwrap());
    }
    let mut told_to_reconnect = 0;
    for r in &h1_records {
        match &r.outcome {
            Outcome::Answer { status, closing } => {
                assert_eq!(*status, 200);
                told_to_reconnect += usize::from(*closing);
            }
            Outcome::Refused => assert!(
                r.sent >= term + delay,
                "refused during the delay: listeners must stay open"
            ),
            Outcome::Lost(e) => panic!("HTTP/1.1 request lost during drain: {e}"),
        }
    }
    assert!(told_to_reconnect >= 1, "Connection: close was sent");
    let during_delay = h1_records
        .iter()
        .filter(|r| r.sent > term && r.sent < term + delay)
        .count();
    assert!(
        during_delay > 10,
        "load continued during the delay ({during_delay})"
    );
    for c in h2 {
        for r in c.await.unwrap() {
            match r.outcome {
                Outcome::Answer { status, .. } => assert_eq!(status, 200),
                Outcome::Refused => {
                    assert!(r.sent >= term + delay, "GOAWAY before the closing phase")
                }
                other => panic!("HTTP/2 request failed during drain: {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_command_then_sigterm_waits_the_delay_once() {
    let dir = scratch("command");
    let rest = "routes:\n  - {respond: {status: 200, body: \"hi\"}}\n";
    let (mut hl, _) = spawn(&dir, "delay: 1500ms, timeout: 5s", rest).await;
    let started = Instant::now();
    let socket = hl.socket.clone();
    let drain = tokio::task::spawn_blocking(move || {
        hitless_bin()
            .args(["drain", "--socket", socket.to_str().unwrap()])
            .output()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(readyz(hl.admin).await, 503, "draining from the command on");
    // Still serving during the delay.
    assert_eq!(get(&client(), hl.traffic, "x", "/").await.status, 200);
    let output = drain.await.unwrap();
    let waited = started.elapsed();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok"));
    assert!(
        waited >= Duration::from_millis(1400),
        "returned after {waited:?}"
    );
    // The SIGTERM that follows (Kubernetes sends it after preStop) does not wait again.
    signal(hl.child.child.id(), "TERM");
    let term = Instant::now();
    let (code, at) = exited(&mut hl.child, Duration::from_secs(5)).await;
    assert_eq!(code, Some(0));
    assert!(at - term < Duration::from_millis(1000), "{:?}", at - term);
    assert!(!hl.socket.exists(), "control socket removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let dir = scratch("second");
    let rest = "routes:\n  - {respond: {status: 200}}\n";
    let (mut hl, _) = spawn(&dir, "delay: 10s, timeout: 10s", rest).await;
    let pid = hl.child.child.id();
    signal(pid, "TERM");
    while readyz(hl.admin).await != 503 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(pid, "TERM");
    let second = Instant::now();
    let (_, at) = exited(&mut hl.child, Duration::from_secs(5)).await;
    assert!(
        at - second < Duration::from_millis(1000),
        "{:?}",
        at - second
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_swaps_routes_and_endpoints_and_rejects_a_broken_file() {
    let a = Replica::start(SocketAddr::from(([127, 0, 0, 1], 0)), Behaviour::named("a"))
        .await
        .unwrap();
    let b = Replica::start(SocketAddr::from(([127, 0, 0, 1], 0)), Behaviour::named("b"))
        .await
        .unwrap();
    let dir = scratch("reload");
    let v1 = format!(
        "backends:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - {{backend: app}}\n",
        a.addr
    );
    let (hl, file) = spawn(&dir, "delay: 1s", &v1).await;
    let drain_line = "delay: 1s";
    let (traffic_port, admin_port) = (hl.traffic.port(), hl.admin.port());
    let text = |rest: &str| config_text(traffic_port, admin_port, &hl.socket, drain_line, rest);

    let until = Instant::now() + Duration::from_millis(3000);
    let clients: Vec<_> = (0..3)
        .map(|_| tokio::spawn(h1_client(hl.traffic, until)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // v2: another endpoint and a new route.
    let v2 = format!(
        "backends:\n  app: {{endpoints: [\"{}\"]}}\nroutes:\n  - {{match: {{path: /new}}, respond: {{status: 200, body: \"new\"}}}}\n  - {{backend: app}}\n",
        b.addr
    );
    write_config(&file, &text(&v2));
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&c, hl.traffic, "x", "/").await.body != "b" {
        assert!(Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&c, hl.traffic, "x", "/new").await.body, "new");

    // A broken file: rejected with its field path, the running config stays.
    write_config(
        &file,
        &text("routes:\n  - {backend: app, timeouts: {request: \"5\"}}\n"),
    );
    let page_has = |n: f64| {
        let admin = hl.admin;
        async move {
            let page = admin_get(admin, "/metrics").await.body;
            metric(&page, "hitless_config_reloads_total{result=\"error\"}") == Some(n)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !page_has(1.0).await {
        assert!(Instant::now() < deadline, "broken reload not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&c, hl.traffic, "x", "/").await.body, "b");
    assert_eq!(get(&c, hl.traffic, "x", "/new").await.body, "new");
    // The same bytes seen again by the watcher are not counted twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(page_has(1.0).await);
    // SIGHUP reloads too (the same broken file: a second rejection).
    signal(hl.child.child.id(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !page_has(2.0).await {
        assert!(Instant::now() < deadline, "SIGHUP reload not attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for client in clients {
        for r in client.await.unwrap() {
            match r.outcome {
                Outcome::Answer { status, .. } => assert_eq!(status, 200),
                other => panic!("request failed during reload: {other:?}"),
            }
        }
    }
    let page = admin_get(hl.admin, "/metrics").await.body;
    assert_eq!(
        metric(&page, "hitless_config_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnel_lives_through_the_drain_until_the_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (echo, _task) = ws_echo().await;
    let dir = scratch("tunnel");
    let rest =
        format!("backends:\n  app: {{endpoints: [\"{echo}\"]}}\nroutes:\n  - {{backend: app}}\n");
    let (mut hl, _) = spawn(&dir, "delay: 500ms, timeout: 1500ms", &rest).await;
    let stream = TcpStream::connect(hl.traffic).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/", hl.traffic), stream)
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    signal(hl.child.child.id(), "TERM");
    let term = Instant::now();
    // Past the delay, listeners closed: the open tunnel still carries messages.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ws.send(Message::text("during")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("during"));
    // It never ends by itself, so the drain waits for it until drain.timeout, then exits 0.
    let (code, at) = exited(&mut hl.child, Duration::from_secs(6)).await;
    assert_eq!(code, Some(0));
    let took = at - term;
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert!(
        !matches!(ws.next().await, Some(Ok(Message::Text(_)))),
        "the tunnel is closed with the process"
    );
}
