//! DNS discovery: resolve `host` (A and AAAA; a headless Service answers with its ready pods'
//! addresses) and re-resolve when the answer's TTL runs out, within `[min_ttl, max_ttl]`.
//!
//! An empty answer (NXDOMAIN, no records) keeps the last set like any other failure: a DNS
//! hiccup must not empty a backend, and when the pods really are gone, connecting to them fails
//! and passive health takes them out. Failures are retried from `min_ttl`, doubling to `max_ttl`.

use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use tokio_util::sync::CancellationToken;

use super::{pause, Publisher};
use crate::config::discovery::DnsDiscovery;

pub(crate) fn resolver(config: &DnsDiscovery) -> Result<TokioResolver, String> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|ns| {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    // The answer's TTL, bounded, is when we ask again; the cache then never answers for us.
    options.positive_min_ttl = Some(config.min_ttl);
    options.positive_max_ttl = Some(config.max_ttl);
    options.negative_min_ttl = Some(config.min_ttl);
    options.negative_max_ttl = Some(config.max_ttl);
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder.build().map_err(|e| e.to_string())
}

pub async fn run(mut publisher: Publisher, config: DnsDiscovery, shutdown: CancellationToken) {
    let resolver = loop {
        match resolver(&config) {
            Ok(r) => break r,
            Err(e) => {
                if publisher.failed("DNS resolver not configured", &e).is_err()
                    || !pause(config.max_ttl, &shutdown).await
                {
                    return;
                }
            }
        }
    };
    let mut backoff = config.min_ttl;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = resolver.lookup_ip(config.host.as_str()) => outcome,
        };
        let wait = match outcome {
            Ok(answer) => {
                let addrs: Vec<_> = answer
                    .iter()
                    .map(|ip| std::net::SocketAddr::new(ip, config.port))
                    .collect();
                let wait = answer
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now())
                    .clamp(config.min_ttl, config.max_ttl);
                let published = if addrs.is_empty() {
                    publisher.failed("DNS answer without addresses", &config.host)
                } else {
                    backoff = config.min_ttl;
                    publisher.publish(addrs)
                };
                if published.is_err() {
                    return;
                }
                wait
            }
            Err(e) => {
                let message = format!("{}: {e}", config.host);
                if publisher.failed("DNS resolution failed", &message).is_err() {
                    return;
                }
                let wait = backoff;
                backoff = (backoff * 2).min(config.max_ttl);
                wait
            }
        };
        tracing::debug!(backend = %publisher.name(), ?wait, "next DNS resolution");
        if !pause(wait, &shutdown).await {
            return;
        }
    }
}
