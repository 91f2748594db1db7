//! A backend's endpoints, found once: listed ones as they are, a URL's host name through the
//! system resolver, DNS discovery through the same resolver settings as `discovery::dns`, and
//! Kubernetes discovery as one list of the Service's EndpointSlices, filtered by the same rule
//! as `discovery::kubernetes::select` (ready, else serving and terminating). The doctor never
//! watches: a run is a snapshot, bounded in time ([`RESOLVE_TIMEOUT`]) and in endpoints
//! ([`MAX_ENDPOINTS`] per backend, the rest reported as skipped). A failure is the error text,
//! which the caller turns into a FAIL line for the backend.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::Api;

use crate::config::discovery::Discovery;

use super::targets::Source;

/// A resolution (DNS answer, system lookup, EndpointSlice list) that takes longer is a failure.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many endpoints of one backend are probed.
pub const MAX_ENDPOINTS: usize = 16;

/// The addresses `source` gives now, sorted and without duplicates.
pub(crate) async fn resolve(source: &Source) -> Result<Vec<SocketAddr>, String> {
    let found = match source {
        Source::Listed(addrs) => return Ok(addrs.clone()),
        Source::Host(host, port) => {
            within(async {
                tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map(|addrs| addrs.collect::<Vec<_>>())
                    .map_err(|e| format!("{host}: {e}"))
            })
            .await?
        }
        Source::Discovered(Discovery::Dns(dns)) => {
            let resolver = crate::discovery::dns::resolver(dns)?;
            within(async {
                resolver
                    .lookup_ip(dns.host.as_str())
                    .await
                    .map(|answer| {
                        answer
                            .iter()
                            .map(|ip| SocketAddr::new(ip, dns.port))
                            .collect()
                    })
                    .map_err(|e| format!("{}: {e}", dns.host))
            })
            .await?
        }
        Source::Discovered(Discovery::Kubernetes(k8s)) => {
            within(async {
                let (client, namespace) = crate::discovery::kubernetes::client(k8s).await?;
                let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
                let selector = format!("kubernetes.io/service-name={}", k8s.service);
                let list = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| {
                        format!("listing EndpointSlices of {namespace}/{}: {e}", k8s.service)
                    })?;
                Ok(crate::discovery::kubernetes::select(
                    &list.items,
                    k8s.port.as_ref(),
                ))
            })
            .await?
        }
    };
    let mut found = found;
    found.sort();
    found.dedup();
    if found.is_empty() {
        return Err("no endpoint found (an empty answer)".into());
    }
    Ok(found)
}

async fn within<T>(
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(RESOLVE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(RESOLVE_TIMEOUT)
            ))
        })
}
