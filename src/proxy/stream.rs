//! The raw transport for requests hyper's engine read (HTTP/2 streams above all): a request
//! to a plain `http` backend is written as HTTP/1.1 bytes on the raw pooled connections the
//! direct engine uses (`Backend::send_raw`), its response head is parsed into a header map,
//! and its body is read as frames from the connection by the stream's own task
//! (`upstream/raw_body.rs`). hyper's client would hand each request to a connection task
//! through a channel and back (README, Performance: half of an HTTP/2 request's CPU).
//!
//! Taken when the request's body is in memory (none, or held for replay by `HyperTry::new`)
//! and nothing is upgraded; any other request stays on the hyper transport (`forward.rs`).
//! The attempt loop is the same (`attempt.rs`), so tries, retries and holds do not change.

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body::Body;

use super::attempt::Transport;
use super::direct::header_line;
use crate::error::ProxyError;
use crate::upstream::body::RequestBody;
use crate::upstream::endpoints::Endpoint;
use crate::upstream::h1::Framing;
use crate::upstream::raw_body::RawBody;
use crate::upstream::{Backend, SendError, SendOptions};

/// At most this many body bytes go on the raw transport: written whole before the answer is
/// read, a larger body could fill the socket buffers of a backend that answers early without
/// reading it (a 413, a 401) and stalls until the try's timeout; hyper's client reads the
/// answer while it writes. 16 KiB is the kernel's smallest default send buffer.
const MAX_BODY: usize = 16 * 1024;

/// A request's bytes for the raw transport.
pub struct StreamTry {
    /// The request as HTTP/1.1: head and body.
    bytes: Vec<u8>,
    head_request: bool,
}

/// A response head from the raw transport, and the body that follows it on the connection.
pub struct StreamAnswer {
    pub head: http::response::Parts,
    pub body: RawBody,
}

impl StreamTry {
    /// The request as HTTP/1.1 bytes, when it can take the raw transport: its body is in
    /// memory (or it has none) and at most `MAX_BODY`, and it is not framed by a transfer
    /// coding. Its head was rewritten already (origin-form target, `Host`, hop-by-hop fields
    /// out).
    pub fn of(request: &Request<RequestBody>) -> Option<StreamTry> {
        let body: &[u8] = match request.body() {
            RequestBody::Full(Some(data)) => data,
            RequestBody::Full(None) => &[],
            RequestBody::Streaming(incoming) if incoming.is_end_stream() => &[],
            RequestBody::Streaming(_) => return None,
        };
        let headers = request.headers();
        if headers.contains_key(TRANSFER_ENCODING) || body.len() > MAX_BODY {
            return None;
        }
        let method = request.method();
        let mut bytes = Vec::with_capacity(256 + body.len());
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        // The path routing saw (`/` for an HTTP/2 `:path` of only a query), then the query.
        let uri = request.uri();
        bytes.extend_from_slice(uri.path().as_bytes());
        if let Some(query) = uri.query() {
            bytes.push(b'?');
            bytes.extend_from_slice(query.as_bytes());
        }
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            if name != CONTENT_LENGTH {
                header_line(&mut bytes, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        // The length of what is sent, as hyper's client writes it: for a body, a length the
        // client gave (HTTP/2 need not give one), or a method that carries one.
        let carries = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        if !body.is_empty() || headers.contains_key(CONTENT_LENGTH) || carries {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(bytes, "content-length: {}\r\n", body.len());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        Some(StreamTry {
            bytes,
            head_request: method == Method::HEAD,
        })
    }
}

impl Transport for StreamTry {
    type Answer = StreamAnswer;

    async fn send(
        &mut self,
        backend: &Backend,
        endpoint: &Arc<Endpoint>,
        options: SendOptions,
        _keep_copy: bool,
    ) -> Result<StreamAnswer, SendError> {
        let mut head = None;
        let exchange = backend
            .send_raw(
                endpoint,
                &self.bytes,
                self.head_request,
                options,
                |status, framing, fields| head = Some(response_head(status, framing, fields)),
            )
            .await?;
        let head = match head {
            Some(Ok(head)) => head,
            // `send_raw` returns a head only after `on_head` saw it; a field httparse took
            // but `http` does not is the backend's protocol error, as hyper's client says.
            _ => {
                let error = ProxyError::UpstreamProtocol {
                    endpoint: endpoint.addr,
                    reason: "invalid response header".to_string(),
                };
                return Err(SendError::raw(error, false, exchange.reused));
            }
        };
        let body = RawBody::new(
            exchange.conn,
            exchange.lease,
            exchange.head.framing,
            exchange.head.keep_alive,
        );
        Ok(StreamAnswer { head, body })
    }

    fn status(answer: &StreamAnswer) -> u16 {
        answer.head.status.as_u16()
    }

    fn resendable(&self) -> bool {
        true
    }

    fn has_request(&self) -> bool {
        true
    }
}

/// The response head as hyper's client would give it: every field as it came, but a
/// `Content-Length` where it does not delimit the body (a transfer coding framed it, or a
/// 204), which the client's side frames anew.
fn response_head(
    status: u16,
    framing: Framing,
    fields: &[httparse::Header<'_>],
) -> Result<http::response::Parts, ()> {
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = StatusCode::from_u16(status).map_err(|_| ())?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ())?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| ())?;
        headers.append(name, value);
    }
    if !framing.keeps_length(status) {
        headers.remove(CONTENT_LENGTH);
    }
    head.headers = headers;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn bytes_of(request: Request<RequestBody>) -> Option<String> {
        StreamTry::of(&request).map(|t| String::from_utf8_lossy(&t.bytes).into_owned())
    }

    #[test]
    fn requests_become_http1_bytes_with_their_length() {
        let get = Request::get("/a?b=1")
            .header("host", "example.com")
            .body(RequestBody::empty())
            .unwrap();
        assert_eq!(
            bytes_of(get).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\n\r\n"
        );
        // A client's length is replaced by the length of what is sent.
        let post = Request::post("/p")
            .header("content-length", "99")
            .body(RequestBody::from(Bytes::from_static(b"abc")))
            .unwrap();
        assert_eq!(
            bytes_of(post).unwrap(),
            "POST /p HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"
        );
        let empty_put = Request::put("/p").body(RequestBody::empty()).unwrap();
        assert!(bytes_of(empty_put)
            .unwrap()
            .ends_with("content-length: 0\r\n\r\n"));
    }

    #[test]
    fn a_query_only_target_is_sent_with_the_path_routing_saw() {
        let uri = http::Uri::from_parts({
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("?a=1"));
            parts
        })
        .unwrap();
        let request = Request::get(uri).body(RequestBody::empty()).unwrap();
        assert!(bytes_of(request)
            .unwrap()
            .starts_with("GET /?a=1 HTTP/1.1\r\n"));
    }

    #[test]
    fn chunked_or_large_bodies_stay_on_hyper() {
        let chunked = Request::post("/p")
            .header("transfer-encoding", "chunked")
            .body(RequestBody::from(Bytes::from_static(b"abc")))
            .unwrap();
        assert!(bytes_of(chunked).is_none());
        let large = Request::post("/p")
            .body(RequestBody::from(Bytes::from(vec![b'x'; MAX_BODY + 1])))
            .unwrap();
        assert!(bytes_of(large).is_none());
        let at_limit = Request::post("/p")
            .body(RequestBody::from(Bytes::from(vec![b'x'; MAX_BODY])))
            .unwrap();
        assert!(bytes_of(at_limit).is_some());
    }
}
