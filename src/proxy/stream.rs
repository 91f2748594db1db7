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
use crate::error::ProxyError;
use crate::upstream::body::RequestBody;
use crate::upstream::endpoints::Endpoint;
use crate::upstream::h1::Framing;
use crate::upstream::raw_body::RawBody;
use crate::upstream::{Backend, SendError, SendOptions};

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
    /// memory (or it has none) and it is not framed by a transfer coding. Its head was
    /// rewritten already (origin-form target, `Host`, hop-by-hop fields out).
    pub fn of(request: &Request<RequestBody>) -> Option<StreamTry> {
        let body: &[u8] = match request.body() {
            RequestBody::Full(Some(data)) => data,
            RequestBody::Full(None) => &[],
            RequestBody::Streaming(incoming) if incoming.is_end_stream() => &[],
            RequestBody::Streaming(_) => return None,
        };
        let headers = request.headers();
        if headers.contains_key(TRANSFER_ENCODING) {
            return None;
        }
        let method = request.method();
        let target = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let mut bytes = Vec::with_capacity(256 + body.len());
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(target.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            if name != CONTENT_LENGTH {
                line(&mut bytes, name.as_str().as_bytes(), value.as_bytes());
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

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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
                return Err(SendError {
                    error: ProxyError::UpstreamProtocol {
                        endpoint: endpoint.addr,
                        reason: "invalid response header".to_string(),
                    },
                    reused: false,
                    request: None,
                    unread: false,
                })
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
    let length = matches!(framing, Framing::Length(_) | Framing::Empty) && status != 204;
    if !length {
        headers.remove(CONTENT_LENGTH);
    }
    head.headers = headers;
    Ok(head)
}
