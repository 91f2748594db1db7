//! Client side of the proxy: accepting connections and choosing the engine ([1]
//! `listener.rs`), the direct HTTP/1.1 loop HTTP/1.1 connections start in ([2] `h1.rs`,
//! `proxy/direct.rs`), and hyper speaking HTTP/1.1 and HTTP/2 for everything else ([3]
//! `hyper.rs`, handing each request to `proxy::Proxy::handle`); `server.rs` holds what both
//! engines are served with and their one timer model.

mod buffers;
pub mod h1;
pub mod hyper;
mod limit;
pub mod listener;
pub mod server;
