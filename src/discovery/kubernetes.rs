//! EndpointSlice discovery: watch the EndpointSlices of one Service (label
//! `kubernetes.io/service-name`) with kube-runtime's watcher, which lists, then watches from
//! the list's resourceVersion, follows bookmarks, relists after `410 Gone` and re-watches
//! after a dropped connection (with backoff).
//!
//! Which endpoints take requests is kube-proxy's rule: those `ready`; when none is, those
//! `serving` and `terminating` (a Service whose every pod is shutting down still answers
//! while they drain). An endpoint that turns not-ready or terminating leaves the set on that
//! event: no new requests, and the ones in flight finish on it.
//!
//! During a (re)list the set in use stays until the list is complete, then is replaced whole,
//! so a relist never shows a half-empty backend.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::{pause, Publisher};
use crate::config::discovery::{KubernetesDiscovery, PortRef};

/// The addresses that should take requests, from a Service's EndpointSlices.
pub fn select<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port: Option<&PortRef>,
) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue; // FQDN slices have no defined meaning (kube-proxy ignores them too)
        }
        let Some(port) = slice_port(slice, port) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            // Unset conditions mean ready and serving, not terminating (API documentation).
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let target = if is_ready && !is_terminating {
                &mut ready
            } else if is_serving && is_terminating {
                &mut terminating
            } else {
                continue;
            };
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    target.push(SocketAddr::new(ip, port));
                }
            }
        }
    }
    if ready.is_empty() {
        terminating
    } else {
        ready
    }
}

/// The slice's port for `wanted`: by the Service port's name, or by number; unset, the only
/// port. (Each slice carries its own port numbers: pods of two versions may differ.)
fn slice_port(slice: &EndpointSlice, wanted: Option<&PortRef>) -> Option<u16> {
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = match wanted {
        Some(PortRef::Name(name)) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))?,
        Some(PortRef::Number(n)) => ports.iter().find(|p| p.port == Some(i32::from(*n)))?,
        None if ports.len() == 1 => &ports[0],
        None => return None,
    };
    port.port.and_then(|p| u16::try_from(p).ok())
}

pub(crate) async fn client(config: &KubernetesDiscovery) -> Result<(Client, String), String> {
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| kube_config.default_namespace.clone());
    let client = Client::try_from(kube_config).map_err(|e| e.to_string())?;
    Ok((client, namespace))
}

pub async fn run(
    mut publisher: Publisher,
    config: KubernetesDiscovery,
    shutdown: CancellationToken,
) {
    let (client, namespace) = loop {
        match client(&config).await {
            Ok(c) => break c,
            Err(e) => {
                if publisher
                    .failed("no Kubernetes API configuration", &e)
                    .is_err()
                    || !pause(Duration::from_secs(5), &shutdown).await
                {
                    return;
                }
            }
        }
    };
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let selector = format!("kubernetes.io/service-name={}", config.service);
    let mut events = watcher::watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    tracing::info!(backend = %publisher.name(), namespace, selector, "watching EndpointSlices");
    let mut slices: HashMap<String, EndpointSlice> = HashMap::new();
    let mut listing: Option<HashMap<String, EndpointSlice>> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        let changed = match event {
            None => return,
            Some(Err(e)) => {
                if publisher.failed("EndpointSlice watch failed", &e).is_err() {
                    return;
                }
                continue;
            }
            Some(Ok(Event::Init)) => {
                listing = Some(HashMap::new());
                false
            }
            Some(Ok(Event::InitApply(slice))) => {
                if let Some(listing) = listing.as_mut() {
                    listing.insert(slice_name(&slice), slice);
                }
                false
            }
            Some(Ok(Event::InitDone)) => {
                slices = listing.take().unwrap_or_default();
                true
            }
            Some(Ok(Event::Apply(slice))) => {
                slices.insert(slice_name(&slice), slice);
                true
            }
            Some(Ok(Event::Delete(slice))) => {
                slices.remove(&slice_name(&slice));
                true
            }
        };
        if changed {
            let addrs = select(slices.values(), config.port.as_ref());
            if addrs.is_empty() && !slices.is_empty() {
                tracing::warn!(backend = %publisher.name(), slices = slices.len(), port = ?config.port.as_ref().map(|p| p.to_string()), "no ready or serving endpoint with the configured port");
            }
            if publisher.publish(addrs).is_err() {
                return;
            }
        }
    }
}

fn slice_name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}
