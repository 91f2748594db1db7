//! hitless: a reverse proxy for Kubernetes that removes 502 Bad Gateway errors in code.
//!
//! The data path, in the order a request meets it:
//! `inbound::listener` (accept) -> `inbound::server` (HTTP/1.1 + h2c, timeouts) ->
//! `proxy::Proxy::handle` -> `proxy::route` (host + path) -> `proxy::headers` (rewrite) ->
//! `proxy::forward` (one attempt, timeouts) -> `upstream::Backend` (pick endpoint, pooled
//! connection) -> back through `proxy::body::ResponseBody` (streams, logs, counts).
//! Errors become responses in exactly one place: `proxy::error::ProxyError`.
//! `config` is loaded and validated before anything runs; `app` composes the pieces;
//! `admin` serves health, readiness and metrics; `runtime` holds metrics, logging, shutdown;
//! `lint` (manifests) and `doctor` (live endpoints) look for 502 causes outside the data path.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod doctor;
pub mod inbound;
pub mod lint;
pub mod proxy;
pub mod runtime;
pub mod upstream;
