//! Controller mode (`hitless ingress`): the routes come from the cluster. Ingress objects of
//! hitless's IngressClass and the Services they name are watched (kube-runtime's watcher: list,
//! then watch, relist after `410 Gone`, backoff after errors); after each change (and once both
//! first lists are complete) they are translated as `hitless import` does, merged with the base
//! config file (listeners, admin, defaults, routes of its own as a fallback), validated, and
//! sent to the running instance, which swaps routes and backends at once through its reload
//! path: requests in flight finish on what they had. An Ingress whose translation the config
//! rejects is left out alone, with its errors logged; the others keep working.
//!
//! With `--publish-address`, each Ingress applied gets that address in
//! `status.loadBalancer.ingress` (patched only when it differs, so every replica writes the same
//! value and a watch event of our own patch changes nothing). Not here yet: Kubernetes Events,
//! leader election, Gateway API objects, TLS Secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{translate, Note, Outcome};
use crate::config::discovery::KubernetesDiscovery;
use crate::config::Config;

/// Changes are applied once the objects have been quiet this long (a `kubectl apply` of a
/// folder is many events).
const SETTLE: Duration = Duration::from_millis(200);

/// What the controller watches and what it builds on.
#[derive(Debug, Clone)]
pub struct Controller {
    /// The IngressClass name whose Ingresses are hitless's.
    pub class: String,
    /// Watch one namespace; `None`: all.
    pub namespace: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    /// The base config file's text: listeners, admin, defaults, and routes of its own.
    pub base: String,
    /// The address clients reach hitless at (an IP or a host name), written into the status of
    /// each Ingress applied; `None`: status is not written.
    pub publish_address: Option<String>,
}

/// One kind's objects by `namespace/name`, replaced whole when a (re)list completes.
#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    listing: Option<BTreeMap<String, Value>>,
    synced: bool,
}

impl Store {
    /// Apply one watch event; whether the set changed.
    fn apply<K: serde::Serialize + kube::Resource>(&mut self, event: Event<K>) -> bool {
        let key = |k: &K| {
            let meta = k.meta();
            format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            )
        };
        match event {
            Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(k) => {
                let name = key(&k);
                if let (Some(listing), Ok(value)) =
                    (self.listing.as_mut(), serde_json::to_value(&k))
                {
                    listing.insert(name, value);
                }
                false
            }
            Event::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(k) => {
                let name = key(&k);
                match serde_json::to_value(&k) {
                    Ok(value) => self.objects.insert(name, value.clone()) != Some(value),
                    Err(_) => false,
                }
            }
            Event::Delete(k) => self.objects.remove(&key(&k)).is_some(),
        }
    }
}

impl Controller {
    /// Watch until `shutdown`; each new config goes to `configs`.
    pub async fn run(self, configs: mpsc::Sender<Config>, shutdown: CancellationToken) {
        let settings = KubernetesDiscovery {
            service: String::new(),
            namespace: self.namespace.clone(),
            port: None,
            kubeconfig: self.kubeconfig.clone(),
        };
        let client: Client = loop {
            match crate::discovery::kubernetes::client(&settings).await {
                Ok((client, _)) => break client,
                Err(e) => {
                    tracing::error!(error = %e, "ingress controller: no Kubernetes API configuration; retrying in 5s");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        };
        // Parsed once: every build starts from it. (`Config::load` validated the file.)
        let base: Value = match serde_saphyr::from_str(&self.base) {
            Ok(base) => base,
            Err(e) => {
                tracing::error!(error = %e, "ingress controller: the base config cannot be read");
                return;
            }
        };
        let status_client = client.clone();
        let (ingress_api, service_api): (Api<Ingress>, Api<Service>) = match &self.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        let mut ingress_events = watcher::watcher(ingress_api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut service_events = watcher::watcher(service_api, watcher::Config::default())
            .default_backoff()
            .boxed();
        tracing::info!(class = %self.class, namespace = self.namespace.as_deref().unwrap_or("(all)"), "ingress controller: watching Ingresses and Services");
        let mut ingresses = Store::default();
        let mut services = Store::default();
        let mut apply_at: Option<tokio::time::Instant> = None;
        let mut last: Option<String> = None;
        loop {
            let changed = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = ingress_events.next() => match event {
                    None => return,
                    Some(Ok(event)) => ingresses.apply(event),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "ingress controller: Ingress watch failed (retrying)");
                        false
                    }
                },
                event = service_events.next() => match event {
                    None => return,
                    Some(Ok(event)) => services.apply(event),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "ingress controller: Service watch failed (retrying)");
                        false
                    }
                },
                _ = sleep_until(apply_at) => {
                    apply_at = None;
                    if let Some((config, text, applied)) = self.build(&base, &ingresses, &services) {
                        // The same objects after a relist: nothing to swap.
                        if last.as_deref() != Some(text.as_str()) {
                            last = Some(text);
                            if configs.send(config).await.is_err() {
                                return;
                            }
                        }
                        self.publish(&status_client, &applied).await;
                    }
                    false
                }
            };
            if changed && ingresses.synced && services.synced {
                apply_at = Some(tokio::time::Instant::now() + SETTLE);
            }
        }
    }

    /// The config for the current objects: each Ingress checked alone first (a broken one is
    /// left out and reported), then all the good ones together.
    fn build(
        &self,
        base: &Value,
        ingresses: &Store,
        services: &Store,
    ) -> Option<(Config, String, Vec<Value>)> {
        let ours: Vec<Value> = ingresses
            .objects
            .values()
            .filter(|i| self.is_ours(i))
            .cloned()
            .collect();
        let services =
            crate::lint::objects_from_values("cluster", services.objects.values().cloned());
        let objects = |ingresses: &[Value]| {
            let mut objects =
                crate::lint::objects_from_values("cluster", ingresses.iter().cloned());
            objects.extend(services.iter().cloned());
            objects
        };
        // All together first: the usual case, one translation and one validation.
        let (good, built) = match self.config_for(base, objects(&ours)) {
            Ok(built) => (ours, Ok(built)),
            Err(_) => {
                // Some Ingress is broken: find it by checking each alone, apply the others.
                let mut good = Vec::new();
                for ingress in ours {
                    match self.config_for(base, objects(std::slice::from_ref(&ingress))) {
                        Ok(_) => good.push(ingress),
                        Err(e) => {
                            let id = format!(
                                "Ingress/{}/{}",
                                ingress
                                    .pointer("/metadata/namespace")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default(),
                                ingress
                                    .pointer("/metadata/name")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                            );
                            tracing::error!(object = %id, error = %e, "ingress controller: Ingress rejected (the others are applied)")
                        }
                    }
                }
                let built = self.config_for(base, objects(&good));
                (good, built)
            }
        };
        match built {
            Ok((config, text, notes)) => {
                for n in notes.iter().filter(|n| n.outcome != Outcome::Maps) {
                    tracing::warn!(object = %n.object, source = %n.source, outcome = n.outcome.as_str(), "{}", n.message);
                }
                Some((config, text, good))
            }
            Err(e) => {
                tracing::error!(error = %e, "ingress controller: the routes together are invalid; keeping the ones in use");
                None
            }
        }
    }

    /// Write `publish_address` into the status of each of `applied` that does not show it.
    async fn publish(&self, client: &Client, applied: &[Value]) {
        let Some(address) = &self.publish_address else {
            return;
        };
        let entry = if address.parse::<std::net::IpAddr>().is_ok() {
            serde_json::json!({ "ip": address })
        } else {
            serde_json::json!({ "hostname": address })
        };
        let wanted = serde_json::json!([entry]);
        for ingress in applied {
            if ingress.pointer("/status/loadBalancer/ingress") == Some(&wanted) {
                continue;
            }
            let (Some(namespace), Some(name)) = (
                ingress
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str),
                ingress.pointer("/metadata/name").and_then(Value::as_str),
            ) else {
                continue;
            };
            let api: Api<Ingress> = Api::namespaced(client.clone(), namespace);
            let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": wanted } } });
            if let Err(e) = api
                .patch_status(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                tracing::warn!(ingress = %format!("{namespace}/{name}"), error = %e, "ingress controller: cannot write the Ingress status");
            }
        }
    }

    fn is_ours(&self, ingress: &Value) -> bool {
        let class = ingress
            .pointer("/spec/ingressClassName")
            .and_then(Value::as_str)
            .or_else(|| {
                ingress
                    .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
                    .and_then(Value::as_str)
            });
        class == Some(self.class.as_str())
    }

    /// Translate `objects` (Ingresses, and the Services that resolve their ports) over the
    /// base config; the config, its text, and the report's notes.
    fn config_for(
        &self,
        base: &Value,
        objects: Vec<crate::lint::Object>,
    ) -> Result<(Config, String, Vec<Note>), String> {
        let mut notes = Vec::new();
        let imported = translate::config(&objects, &mut notes);
        let mut base = base.clone();
        let Some(root) = base.as_object_mut() else {
            return Err("the base config is not a mapping".into());
        };
        let mut backends = imported
            .get("backends")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(path) = &self.kubeconfig {
            // The controller's own API access, for the discovery of the backends it made.
            for backend in backends.values_mut() {
                if let Some(k) = backend
                    .pointer_mut("/discovery/kubernetes")
                    .and_then(Value::as_object_mut)
                {
                    k.insert(
                        "kubeconfig".into(),
                        Value::String(path.display().to_string()),
                    );
                }
            }
        }
        let own_backends = root
            .entry("backends")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(own) = own_backends.as_object_mut() {
            for (name, backend) in backends {
                own.entry(name).or_insert(backend);
            }
        }
        let mut routes: Vec<Value> = imported
            .get("routes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(own) = root.get("routes").and_then(Value::as_array) {
            // The file's own routes come after the cluster's: a fallback.
            routes.extend(own.iter().cloned());
        }
        root.insert("routes".into(), Value::Array(routes));
        let yaml = serde_saphyr::to_string(&base).map_err(|e| e.to_string())?;
        let config = Config::from_yaml(&yaml).map_err(|e| e.to_string())?;
        Ok((config, yaml, notes))
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
