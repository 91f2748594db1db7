//! An application that answers an upload before reading it (a 413 for its body limit, a 401
//! for an expired token) and closes resets the connection under the proxy's write of the
//! body: its answer is what the client gets, not a 502, whatever the body's size (each size
//! takes another transport: the direct engine's, the raw one for HTTP/2 streams, hyper's for
//! streamed bodies), over HTTP/1.1 and HTTP/2. An application that closes without answering
//! is still a prompt 502 `upstream_reset`, and the upload is not sent again. A reset after
//! the backend's end is no early answer: a tunnel whose backend closed ends at the client's
//! next bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests: failing is the point

mod support;

use std::time::Duration;

use http::Request;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads the request head only, answers 401 (or nothing) and closes with the body unread:
/// the kernel resets the connection.
async fn rejecting_backend(answer: bool) -> Server {
    raw_server(move |mut stream: TcpStream| async move {
        read_head(&mut stream).await;
        if answer {
            let _ = stream
                .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 13\r\nconnection: close\r\n\r\ntoken expired")
                .await;
        }
    })
    .await
}

fn config(backend: std::net::SocketAddr) -> String {
    format!(
        "timeouts: {{backend_request: 30s, request: 30s}}\nbackends:\n  app: {{endpoints: [\"{backend}\"]}}\nroutes:\n  - backend: app\n"
    )
}

/// Bodies that take each transport: in the direct engine's buffer (and, from HTTP/2, the raw
/// transport's 16 KiB), held for replay (64 KiB), streamed.
const SIZES: [usize; 4] = [1024, 12 * 1024, 60 * 1024, 8 << 20];

async fn upload(h2: bool, proxy: std::net::SocketAddr, size: usize) -> Answer {
    let c = if h2 { h2c_client() } else { client() };
    let post = Request::post(format!("http://{proxy}/upload"))
        .body(full(vec![b'x'; size]))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), send(&c, post))
        .await
        .expect("answered without waiting for a timeout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_written_before_the_body_was_read_is_the_answer() {
    let backend = rejecting_backend(true).await;
    let app = start_proxy(&config(backend.addr)).await;
    let proxy = app.traffic_addrs[0];
    let mut seen = Vec::new();
    for h2 in [false, true] {
        for size in SIZES {
            for _ in 0..5 {
                let answer = upload(h2, proxy, size).await;
                seen.push((h2, size, answer.status, answer.body));
            }
        }
    }
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(_, _, status, body)| (*status, body.as_str()) != (401, "token expired"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {}: {wrong:?}",
        wrong.len(),
        seen.len()
    );
    // One connection per upload: nothing was sent twice.
    assert_eq!(backend.connections(), seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_without_an_answer_is_still_a_prompt_502() {
    let backend = rejecting_backend(false).await;
    let app = start_proxy(&config(backend.addr)).await;
    let proxy = app.traffic_addrs[0];
    let mut uploads = 0;
    for h2 in [false, true] {
        for size in [60 * 1024, 8 << 20] {
            let answer = upload(h2, proxy, size).await;
            assert_eq!(answer.status, 502, "h2 {h2}, {size} bytes: {}", answer.body);
            assert!(
                answer.body.contains("upstream_reset"),
                "h2 {h2}, {size} bytes: {}",
                answer.body
            );
            uploads += 1;
        }
    }
    // A POST the application may have read is not sent again.
    assert_eq!(backend.connections(), uploads);
}

/// A tunnel (an Upgrade) whose backend closed: the client's next bytes meet the backend's
/// reset, and the tunnel ends; they are not written into the void for as long as the client
/// sends (which kept the tunnel open, busy, with `tunnel_idle` never reached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_whose_backend_closed_ends_at_the_clients_next_bytes() {
    let backend = raw_server(|mut stream: TcpStream| async move {
        read_head(&mut stream).await;
        let _ = stream.write_all(SWITCHING).await;
        // Closed: the tunnel's backend side ends here.
    })
    .await;
    let app = start_proxy(&config(backend.addr)).await;
    let mut client = open_tunnel(app.traffic_addrs[0]).await;
    // The backend's end is passed on as the tunnel's half-close.
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(0))), "{eof:?} {rest:?}");
    // 64 MiB at most: the tunnel must have ended (the client's writes fail) well before.
    let chunk = vec![b'x'; 16 * 1024];
    let mut written = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while written < 64 << 20 {
            if client.write_all(&chunk).await.is_err() {
                return true;
            }
            written += chunk.len();
        }
        false
    })
    .await;
    assert_eq!(
        ended,
        Ok(true),
        "the client wrote {written} bytes into a tunnel whose backend had closed"
    );
}

/// The client side of an early answer: hitless passes the application's 401 on and closes the
/// client's connection with the upload unfinished; it goes on reading (and dropping) what the
/// client still sends until the client closes (a lingering close, as nginx's), so the client's
/// writes never meet a reset and its connection ends cleanly. Without it, a client still
/// writing the body got a reset and could fail before reading the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_still_uploading_after_the_answer_meets_no_reset() {
    let backend = rejecting_backend(true).await;
    let app = start_proxy(&config(backend.addr)).await;
    let client = TcpStream::connect(app.traffic_addrs[0]).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    // The upload goes on, whatever comes back, as a client's does: 8 MiB, then its end.
    let upload = tokio::spawn(async move {
        writer
            .write_all(b"POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: 8388608\r\n\r\n")
            .await
            .map_err(|e| format!("head: {e}"))?;
        let chunk = vec![b'x'; 64 * 1024];
        for i in 0..128 {
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| format!("write {i} of 128: {e}"))?;
        }
        writer
            .shutdown()
            .await
            .map_err(|e| format!("shutdown: {e}"))
    });
    let mut answer = Vec::new();
    while !answer.ends_with(b"token expired") {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
            .await
            .expect("the answer came")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 401"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let uploaded = tokio::time::timeout(Duration::from_secs(20), upload)
        .await
        .expect("the upload ended")
        .unwrap();
    assert_eq!(uploaded, Ok(()), "the client's upload met a reset");
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest))
        .await
        .expect("hitless closed once the client did");
    assert!(
        end.is_ok(),
        "the connection ended with {end:?}, not a clean close"
    );
}

/// A tunnel's half-close is passed on as is, never taken for a close to linger on: a backend
/// that stops writing mid-upload (its half of an Upgrade) still gets every byte the client
/// sends after, until the client's own end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnels_half_close_drops_none_of_the_clients_bytes() {
    const TOTAL: usize = 4 << 20;
    let (count_tx, count_rx) = tokio::sync::oneshot::channel::<usize>();
    let count_tx = std::sync::Mutex::new(Some(count_tx));
    let counted = std::sync::Arc::new(count_tx);
    let backend = raw_server(move |mut stream: TcpStream| {
        let counted = std::sync::Arc::clone(&counted);
        async move {
            read_head(&mut stream).await;
            let _ = stream.write_all(SWITCHING).await;
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            let mut half_closed = false;
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                if !half_closed && got >= 256 * 1024 {
                    // Done writing, still reading: the half-close, mid-upload.
                    let _ = stream.shutdown().await;
                    half_closed = true;
                }
            }
            if let Some(tx) = counted.lock().unwrap().take() {
                let _ = tx.send(got);
            }
        }
    })
    .await;
    let app = start_proxy(&config(backend.addr)).await;
    let client = open_tunnel(app.traffic_addrs[0]).await;
    let (mut reader, mut writer) = client.into_split();
    let upload = tokio::spawn(async move {
        let chunk = vec![b't'; 64 * 1024];
        for _ in 0..TOTAL / chunk.len() {
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await
    });
    // The backend's half-close reaches the client as its end of the tunnel.
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest)).await;
    assert!(matches!(eof, Ok(Ok(0))), "{eof:?}");
    tokio::time::timeout(Duration::from_secs(20), upload)
        .await
        .expect("the upload ended")
        .unwrap()
        .expect("the client's writes went through");
    let got = tokio::time::timeout(Duration::from_secs(20), count_rx)
        .await
        .expect("the backend saw the client's end")
        .unwrap();
    assert_eq!(
        got, TOTAL,
        "bytes the backend received of the client's {TOTAL}"
    );
}

/// The backend's answer to an Upgrade to `x-test`.
const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x-test\r\nconnection: upgrade\r\n\r\n";

/// A client connection through `proxy` upgraded to `x-test` (the 101 read).
async fn open_tunnel(proxy: std::net::SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(
            b"GET /tunnel HTTP/1.1\r\nhost: app\r\nupgrade: x-test\r\nconnection: upgrade\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    client
}
