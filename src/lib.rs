//! hitless: a reverse proxy for Kubernetes that removes 502 Bad Gateway errors in code.
//!
//! The data path, in the order a request meets it:
//! `inbound::listener` (accept, choose the engine) -> `inbound::h1` (the direct HTTP/1.1
//! engine's connection loop; `proxy::direct` parses, routes and rewrites plain requests as
//! bytes) or `inbound::hyper` (hyper's engine: HTTP/2, and what the direct engine hands over;
//! `proxy::Proxy::handle`) -> `proxy::route` (host + path) -> `proxy::headers` (the one rewrite
//! rule, over hyper's maps or heads parsed in place) -> `proxy::attempt` (the one attempt loop:
//! pick, retry, hold, budget, over a transport: `proxy::forward::HyperTry`,
//! `proxy::direct::RawTry`, or `proxy::stream::StreamTry` for what hyper's engine read to a
//! plain `http` backend) -> `upstream::Backend` (endpoints, reachability, passive health,
//! pooled connections: hyper's, or raw ones read by `Backend::send_raw`) -> back through
//! `proxy::body::ResponseBody` (hyper's body, or `upstream::raw_body`'s) or `proxy::direct`'s
//! relay (streams, logs, counts). The client-side timer model of both engines is
//! `inbound::server::Server::due`.
//! Errors become responses in exactly one place: `error::ProxyError`, a leaf that every
//! layer converts into.
//! `config` is loaded and validated before anything runs; `app` composes the pieces;
//! `admin` serves health, readiness and metrics; `runtime` holds metrics, logging, shutdown;
//! `lint` (manifests) and `doctor` (live endpoints) look for 502 causes outside the data path;
//! `ingress` turns Ingress, HTTPRoute and GRPCRoute objects into a config (`hitless import`),
//! or watches them and reloads (`hitless ingress`, the controller mode);
//! `demo` reproduces the guide's failures at production load.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod doctor;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod inbound;
pub mod ingress;
pub mod lint;
pub mod proxy;
pub mod runtime;
pub mod upstream;
