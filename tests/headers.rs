//! What the backend and the client see of each other's headers: hop-by-hop headers removed,
//! X-Forwarded-* set, Host kept, x-request-id generated and returned; HTTP/2 clients reach
//! HTTP/1.1 backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use http::Request;
use support::*;

fn header_of<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    echo.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
        .collect()
}

#[tokio::test]
async fn hop_by_hop_removed_and_forwarding_headers_set() {
    let echo = echo_upstream().await;
    let app = start_proxy(&simple_config(echo.addr)).await;
    let request = Request::get(format!("http://{}/path?q=1", app.traffic_addrs[0]))
        .header("host", "shop.example.com")
        .header("connection", "x-hop, keep-alive")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers, gzip")
        .header("upgrade", "something")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-end-to-end", "passes")
        .body(full(""))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200);
    let seen = answer.body.as_str();
    assert!(seen.starts_with("GET /path?q=1 HTTP/1.1\n"), "{seen}");
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(header_of(seen, gone).is_empty(), "{gone} passed: {seen}");
    }
    assert_eq!(header_of(seen, "te"), vec!["trailers"]);
    assert_eq!(header_of(seen, "host"), vec!["shop.example.com"]);
    assert_eq!(
        header_of(seen, "x-forwarded-for"),
        vec!["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(header_of(seen, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        header_of(seen, "x-forwarded-host"),
        vec!["shop.example.com"]
    );
    assert_eq!(header_of(seen, "x-end-to-end"), vec!["passes"]);
    // The id the backend saw is the one the client got back.
    let id = answer.header("x-request-id");
    assert_eq!(id.len(), 32);
    assert_eq!(header_of(seen, "x-request-id"), vec![id]);
}

#[tokio::test]
async fn client_request_id_is_kept_both_ways() {
    let echo = echo_upstream().await;
    let app = start_proxy(&simple_config(echo.addr)).await;
    let request = Request::get(format!("http://{}/", app.traffic_addrs[0]))
        .header("x-request-id", "trace-me-42")
        .body(full(""))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.header("x-request-id"), "trace-me-42");
    assert_eq!(header_of(&answer.body, "x-request-id"), vec!["trace-me-42"]);
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let server = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-secret\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\nx-app: yes\r\n\r\nok",
    )
    .await;
    let app = start_proxy(&simple_config(server.addr)).await;
    let answer = get(&client(), app.traffic_addrs[0], "x", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ok");
    assert_eq!(answer.header("x-secret"), "");
    assert_eq!(answer.header("keep-alive"), "");
    assert_eq!(answer.header("x-app"), "yes");
}

#[tokio::test]
async fn h2c_client_reaches_http1_backend() {
    let echo = echo_upstream().await;
    let app = start_proxy(&simple_config(echo.addr)).await;
    // HTTP/2 carries the host in `:authority`; the backend must get it as `Host`.
    let request = Request::post(format!("http://{}/submit?x=1", app.traffic_addrs[0]))
        .body(full("payload"))
        .unwrap();
    let answer = send(&h2c_client(), request).await;
    assert_eq!(answer.status, 200);
    let seen = answer.body.as_str();
    assert!(seen.starts_with("POST /submit?x=1 HTTP/1.1\n"), "{seen}");
    let authority = app.traffic_addrs[0].to_string();
    assert_eq!(header_of(seen, "host"), vec![authority.as_str()], "{seen}");
    assert_eq!(
        header_of(seen, "x-forwarded-host"),
        vec![authority.as_str()],
        "{seen}"
    );
}

/// Only hitless's mirrored copies carry `x-hitless-mirror` (an application may skip side
/// effects on them): a client's is removed, on both engines and over HTTP/2.
#[tokio::test]
async fn a_clients_mirror_mark_is_removed() {
    let echo = echo_upstream().await;
    for engine in ["", "runtime: {direct_path: false}\n"] {
        let app = start_proxy(&format!("{engine}{}", simple_config(echo.addr))).await;
        for c in [client(), h2c_client()] {
            let request = Request::get(format!("http://{}/", app.traffic_addrs[0]))
                .header("host", "shop.example.com")
                .header("x-hitless-mirror", "1")
                .header("X-Hitless-Mirror", "yes")
                .body(full(""))
                .unwrap();
            let answer = send(&c, request).await;
            assert_eq!(answer.status, 200);
            let seen = answer.body.as_str();
            assert!(
                header_of(seen, "x-hitless-mirror").is_empty(),
                "{engine}: {seen}"
            );
        }
    }
}
