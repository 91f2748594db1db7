//! Client side of the proxy: accepting connections ([1] `listener.rs`) and speaking HTTP/1.1 and
//! HTTP/2 on them ([2] `server.rs`), handing each request to `proxy::Proxy::handle`.

pub mod listener;
pub mod server;
