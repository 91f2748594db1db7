//! The direct HTTP/1.1 path (`proxy/direct.rs`): what a plain request and its answer look like
//! on either side is the same as through hyper (`runtime.direct_path: false`); one connection
//! moves to hyper when a request needs it; every response framing an upstream may use is
//! relayed intact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lowercase header lines, sorted, with the values that differ by nature masked.
fn normalize(head: &str) -> (String, Vec<String>) {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    let mut headers: Vec<String> = lines
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            let name = name.trim().to_ascii_lowercase();
            let value = match name.as_str() {
                "x-request-id" if value.trim().len() == 32 => "<generated>".to_string(),
                _ => value.trim().to_string(),
            };
            format!("{name}: {value}")
        })
        .collect();
    headers.sort();
    (first, headers)
}

/// Send `request` on a new connection and read the whole response (the request says
/// `Connection: close`).
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response within 10 s")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// Responses a raw upstream gives, by path; it records each request head it reads.
const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: x-drop\r\nx-drop: 1\r\nkeep-alive: timeout=5\r\nx-app: kept\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n";

#[tokio::test]
async fn both_paths_send_the_same_request_and_relay_the_same_answer() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let upstream = raw_server(move |mut stream| {
        let seen = seen_tx.clone();
        async move {
            let head = String::from_utf8_lossy(&read_head(&mut stream).await).into_owned();
            let length = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length: ")
                        .map(|v| v.parse().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await.unwrap();
            let _ = seen.send(format!("{head}{}", String::from_utf8_lossy(&body)));
            let _ = stream.write_all(CHUNKED).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let direct = start_proxy(&simple_config(upstream.addr)).await;
    let general = start_proxy(&format!(
        "runtime: {{direct_path: false}}\n{}",
        simple_config(upstream.addr)
    ))
    .await;
    let request = b"POST /a/b?c=d HTTP/1.1\r\nContent-Length: 7\r\nHost: shop.test\r\nUser-Agent: t\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nAccept: */*\r\nAccept: text/plain\r\nX-Request-Id: given-42\r\nConnection: close\r\n\r\npayload";
    let mut heads = Vec::new();
    let mut answers = Vec::new();
    for app in [&direct, &general] {
        let answer = exchange(app.traffic_addrs[0], request).await;
        heads.push(seen_rx.recv().await.unwrap());
        answers.push(answer);
    }
    for head in &heads {
        assert!(
            head.ends_with("\r\n\r\npayload"),
            "the body follows the head: {head}"
        );
    }
    let (line, headers) = normalize(&heads[0]);
    assert_eq!(line, "POST /a/b?c=d HTTP/1.1");
    assert!(
        headers.contains(&"content-length: 7".to_string()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"x-forwarded-for: 10.1.2.3, 127.0.0.1".to_string()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"x-forwarded-proto: http".to_string()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"x-forwarded-host: shop.test".to_string()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"x-request-id: given-42".to_string()),
        "{headers:?}"
    );
    assert!(
        !headers.iter().any(|h| h.starts_with("connection")),
        "{headers:?}"
    );
    assert_eq!(
        normalize(&heads[0]),
        normalize(&heads[1]),
        "the backend sees the same request from both paths"
    );

    // The client's view: the same status, headers (but hyper's Date) and decoded body.
    let decoded: Vec<(String, Vec<String>, String)> = answers
        .iter()
        .map(|a| {
            let (head, body) = a.split_once("\r\n\r\n").unwrap();
            let (line, headers) = normalize(head);
            let headers = headers
                .into_iter()
                .filter(|h| !h.starts_with("date:"))
                .collect();
            (line, headers, dechunk(body))
        })
        .collect();
    assert_eq!(
        decoded[0], decoded[1],
        "the client sees the same answer from both paths"
    );
    let (line, headers, body) = &decoded[0];
    assert_eq!(line, "HTTP/1.1 200 OK");
    assert_eq!(body, "hello, world");
    for absent in ["x-drop", "keep-alive"] {
        assert!(
            !headers.iter().any(|h| h.starts_with(absent)),
            "{absent}: {headers:?}"
        );
    }
    assert!(headers.contains(&"x-app: kept".to_string()));
    assert!(headers.contains(&"x-request-id: given-42".to_string()));
    // The direct path passes the chunked body as it came, trailers included.
    assert!(
        answers[0].ends_with("0\r\nx-trailer: t\r\n\r\n"),
        "{}",
        answers[0]
    );
}

/// The payload of a chunked body (trailers ignored).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = body.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

/// Read one response with a `Content-Length` from `stream` (head and body).
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_connection_moves_to_hyper_when_a_request_needs_it() {
    let echo = echo_upstream().await;
    let app = start_proxy(&simple_config(echo.addr)).await;
    let mut stream = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    // Two plain requests in one write (pipelined), then one with a chunked body, then a plain
    // one: the chunked body hands the connection to hyper, which answers it and the one after.
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    for path in ["/one", "/two"] {
        let (head, body) = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body.starts_with(&format!("GET {path} HTTP/1.1")), "{body}");
    }
    stream
        .write_all(
            b"POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("POST /three HTTP/1.1"), "{body}");
    assert!(body.contains("transfer-encoding: chunked"), "{body}");
    stream
        .write_all(b"GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("GET /four HTTP/1.1"), "{body}");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after Connection: close");
    // The direct path's connection carried the first two and went on to hyper's pool for the
    // chunked POST (hyper's client streams it); the last request, read by hyper's engine but
    // plain, goes on a raw connection again (`proxy/stream.rs`): a second one.
    assert_eq!(echo.connections(), 2);
}

#[tokio::test]
async fn every_response_framing_is_relayed() {
    let upstream = raw_server(|mut stream| async move {
        loop {
            let head = read_head(&mut stream).await;
            if head.is_empty() {
                return;
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let answer: &[u8] = match path.as_str() {
                "/length" => b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nlength",
                "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n",
                "/both" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n4\r\nboth\r\n0\r\n\r\n",
                "/hints" => b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhints",
                "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n",
                "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
                "/close" => {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
                        .await;
                    return;
                }
                _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            };
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let app = start_proxy(&simple_config(upstream.addr)).await;
    let c = client();
    let target = app.traffic_addrs[0];
    for (path, body) in [
        ("/length", "length"),
        ("/chunked", "chunked"),
        ("/both", "both"),
        ("/hints", "hints"),
        ("/empty", ""),
        ("/close", "until the end"),
        ("/length", "length"),
    ] {
        let answer = get(&c, target, "x", path).await;
        let expected = if path == "/empty" { 204 } else { 200 };
        assert_eq!(answer.status, expected, "{path}");
        assert_eq!(answer.body, body, "{path}");
        if path == "/both" {
            assert_eq!(
                answer.header("content-length"),
                "",
                "no length beside chunked"
            );
        }
    }
    let head = http::Request::head(format!("http://{target}/head"))
        .header("host", "x")
        .body(full(""))
        .unwrap();
    let answer = send(&c, head).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-length"),
        "1000",
        "HEAD keeps the length"
    );
    assert_eq!(answer.body, "");
    // Still usable after all of that.
    assert_eq!(get(&c, target, "x", "/length").await.body, "length");
}

#[tokio::test]
async fn an_upstream_that_breaks_mid_body_closes_the_client_connection() {
    let upstream = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
            .await;
    })
    .await;
    let app = start_proxy(&simple_config(upstream.addr)).await;
    let response = exchange(app.traffic_addrs[0], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("only part"), "{response}");
}

type Ids = Arc<std::sync::Mutex<Vec<String>>>;

/// One endpoint whose first request gets `first` (then closed), and every later one 200 "ok".
/// Also returns the `x-request-id` of each request it read.
async fn fails_once(first: &'static [u8]) -> (Server, Arc<AtomicUsize>, Ids) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let ids: Ids = Arc::default();
    let record = Arc::clone(&ids);
    let server = raw_server(move |mut stream| {
        let count = Arc::clone(&count);
        let record = Arc::clone(&record);
        async move {
            loop {
                let head = read_head(&mut stream).await;
                if head.is_empty() {
                    return;
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if let Some(id) = head.lines().find_map(|l| l.strip_prefix("x-request-id: ")) {
                    record.lock().unwrap().push(id.to_string());
                }
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    if first.is_empty() {
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    } else {
                        let _ = stream.write_all(first).await;
                    }
                    return;
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    (server, seen, ids)
}

/// The direct path makes the first try; what follows is the general path's, counted once.
async fn continued(first: &'static [u8], reason: &str) {
    let (server, seen, ids) = fails_once(first).await;
    let app = start_proxy(&simple_config(server.addr)).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 200, "{reason}: {}", answer.body);
    assert_eq!(answer.body, "ok");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "{reason}: two tries, no more"
    );
    let ids = ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "both tries carry the request's id");
    assert_eq!(answer.header("x-request-id"), ids[0]);
    let series = format!("hitless_retries_total{{backend=\"app\",reason=\"{reason}\"}}");
    assert_eq!(metric_at(app.admin_addr, &series).await, 1.0, "{series}");
    let requests = "hitless_requests_total{route=\"app\",backend=\"app\",status=\"200\"}";
    wait_metric(app.admin_addr, requests, 1.0).await;
    assert_eq!(
        metric_at(app.admin_addr, requests).await,
        1.0,
        "one request, logged once"
    );
}

#[tokio::test]
async fn a_503_on_the_direct_try_is_retried_by_the_general_path() {
    continued(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy",
        "503",
    )
    .await;
}

#[tokio::test]
async fn a_reset_on_the_direct_try_is_retried_by_the_general_path() {
    // A reset with nothing back on a new connection: counted as unread (the app aborted with
    // SO_LINGER 0: the rule's documented price), and retried for free.
    continued(b"", "unread").await;
}

#[tokio::test]
async fn answers_of_the_general_path_are_written_as_hyper_writes_them() {
    let refused = refused_addr().await;
    let routes = format!(
        "backends:\n  gone: {{endpoints: [\"{refused}\"], hold_timeout: 0s}}\nroutes:\n  - {{match: {{path: /fixed}}, respond: {{status: 200, body: \"fixed\\n\", headers: {{x-fixed: yes}}}}}}\n  - {{match: {{path: /none}}, respond: {{status: 204}}}}\n  - {{backend: gone}}\n"
    );
    let direct = start_proxy(&routes).await;
    let general = start_proxy(&format!("runtime: {{direct_path: false}}\n{routes}")).await;
    for request in [
        "GET /fixed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "HEAD /fixed HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET /none HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET /down HTTP/1.1\r\nHost: a\r\nX-Request-Id: r-1\r\nConnection: close\r\n\r\n",
    ] {
        let mut seen = Vec::new();
        for app in [&direct, &general] {
            let answer = exchange(app.traffic_addrs[0], request.as_bytes()).await;
            let (head, body) = answer.split_once("\r\n\r\n").unwrap();
            let (line, headers) = normalize(head);
            let headers: Vec<String> = headers
                .into_iter()
                .filter(|h| !h.starts_with("date:"))
                .collect();
            seen.push((line, headers, body.to_string()));
        }
        assert_eq!(seen[0], seen[1], "{request}");
    }
}

#[tokio::test]
async fn raw_connections_the_upstream_closed_are_never_an_error() {
    // Answers as if keeping the connection, then closes it: every pooled raw connection is
    // stale by the next request, found closed at checkout or met as the keep-alive race.
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let upstream = raw_server(move |mut stream| {
        let count = Arc::clone(&count);
        async move {
            if read_head(&mut stream).await.is_empty() {
                return;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let app = start_proxy(&simple_config(upstream.addr)).await;
    let c = client();
    for i in 0..50 {
        // Empty POSTs take the direct path, carefully (a request that must not be sent twice).
        let method = if i % 2 == 0 { "POST" } else { "GET" };
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}/", app.traffic_addrs[0]))
            .header("host", "x")
            .header("content-length", "0")
            .body(full(""))
            .unwrap();
        let answer = send(&c, request).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 50, "each reached the app once");
}
