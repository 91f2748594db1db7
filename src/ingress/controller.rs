//! Controller mode (`hitless ingress`): the routes come from the cluster. Watched (kube-runtime's
//! watcher: list, then watch, relist after `410 Gone`, backoff after errors): Ingresses of
//! hitless's IngressClass; Gateway API GatewayClasses, Gateways, HTTPRoutes and GRPCRoutes
//! (`gateway.rs` says which are ours), and the ReferenceGrants that let them refer to other
//! namespaces (`grants.rs`); the Services they name; and `kubernetes.io/tls` Secrets.
//! After each change (and once the first lists are complete) the objects are translated as
//! `hitless import` does, merged with the base config file (listeners, admin, defaults, routes
//! of its own as a fallback), the Secrets they name added to the TLS listeners (`secrets.rs`),
//! validated, and sent to the running instance, which swaps routes, backends and certificates
//! at once through its reload path: requests in flight finish on what they had. An object the
//! config rejects is left out alone; the others keep working.
//!
//! What hitless did with each object is written back by the replica holding the Lease
//! (`leader.rs`), in `status.rs`: addresses and Gateway API conditions, and an Event per
//! setting that differs, is unsupported or refused. The Gateway API kinds are optional: without
//! their CRDs the controller serves Ingresses and retries those watches in the background.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::DynamicObject;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::cluster::{object_id, Built, Change, Cluster, Kind};
use super::gateway::{Ours, Port};
use super::grants::{self, Grants};
use super::status::Writer;
use super::{leader, secrets, translate, Note, Outcome};
use crate::config::discovery::KubernetesDiscovery;
use crate::config::Config;

/// Changes are applied once the objects have been quiet this long (a `kubectl apply` of a
/// folder is many events), and at the latest this long after the first (a cluster that never
/// stops changing still gets its routes).
const SETTLE: Duration = Duration::from_millis(200);
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

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
    /// each Ingress and Gateway applied; `None`: no address is written.
    pub publish_address: Option<String>,
    /// Where TLS Secrets are written as certificate files (the controller's own folder).
    pub secrets_dir: PathBuf,
    /// The Lease that elects the replica writing statuses and Events.
    pub lease: LeaseSettings,
}

/// Where the leader-election Lease lives and how long it lasts.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub duration: Duration,
}

type Changes = BoxStream<'static, (Kind, Result<Change, String>)>;

fn changes<K>(kind: Kind, api: Api<K>, config: watcher::Config) -> Changes
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Send + 'static,
{
    watcher::watcher(api, config)
        .default_backoff()
        .map(move |event| {
            let change = event.map(|e| decode(kind, e)).map_err(|e| e.to_string());
            (kind, change)
        })
        .boxed()
}

fn decode<K: Resource + serde::Serialize>(kind: Kind, event: Event<K>) -> Change {
    let value = |k: &K| {
        let mut value = serde_json::to_value(k).unwrap_or(Value::Null);
        if kind == Kind::Namespace {
            // Only the labels matter (Selector listeners): kept alone, an update that changes
            // something else (a resourceVersion, an annotation) is no change, and no rebuild.
            let metadata = &value["metadata"];
            return serde_json::json!({
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {"name": metadata["name"], "labels": metadata["labels"]},
            });
        }
        // Items of a list carry no kind (dynamic objects keep none): the watch says which.
        if let Some(map) = value.as_object_mut() {
            map.entry("kind").or_insert_with(|| kind.name().into());
            map.entry("apiVersion")
                .or_insert_with(|| kind.api_version().into());
        }
        value
    };
    let key = |k: &K| {
        let meta = k.meta();
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    };
    match event {
        Event::Init => Change::Init,
        Event::InitApply(k) => Change::Item(key(&k), value(&k)),
        Event::InitDone => Change::InitDone,
        Event::Apply(k) => Change::Apply(key(&k), value(&k)),
        Event::Delete(k) => Change::Delete(key(&k)),
    }
}

impl Controller {
    /// Watch until `shutdown`; each new config goes to `configs`.
    pub async fn run(self, configs: mpsc::Sender<Config>, shutdown: CancellationToken) {
        let Some(client) = self.client(&shutdown).await else {
            return;
        };
        // Parsed once: every build starts from it. (`Config::load` validated the file.)
        let base = match Base::parse(&self.base) {
            Ok(base) => base,
            Err(e) => {
                tracing::error!(error = %e, "ingress controller: the base config cannot be read");
                return;
            }
        };
        // What a Gateway listener's `port` can name (a base config written before public
        // ports existed has the bound ports here, and Gateways on 80/443 say PortUnavailable).
        let ports: Vec<String> = base.ports.iter().map(Port::to_string).collect();
        tracing::info!(ports = %ports.join(", "), "ingress controller: Gateway listeners are served on these public ports (listeners[].public_port)");
        let (leading_tx, mut leading) = watch::channel(false);
        let election = leader::Election {
            api: Api::namespaced(client.clone(), &self.lease.namespace),
            name: self.lease.name.clone(),
            identity: leader::identity(),
            duration: self.lease.duration,
        };
        tokio::spawn(election.run(leading_tx, shutdown.clone()));
        let mut writer = Writer::new(client.clone(), self.publish_address.clone());
        let mut events = futures_util::stream::select_all(self.watches(&client));
        tracing::info!(class = %self.class, namespace = self.namespace.as_deref().unwrap_or("(all)"), "ingress controller: watching Ingresses, Gateway API routes, Services, TLS Secrets and Namespaces' labels");
        let mut cluster = Cluster::default();
        let mut apply_at: Option<tokio::time::Instant> = None;
        let mut first_change: Option<tokio::time::Instant> = None;
        let mut last: Option<String> = None;
        let mut built: Option<Built> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.next() => {
                    let Some((kind, change)) = event else { return };
                    let store = cluster.stores.entry(kind).or_default();
                    let changed = match change {
                        Ok(change) => store.apply(change),
                        Err(e) => {
                            if !store.synced && !store.failed {
                                tracing::warn!(kind = kind.name(), error = %e, "ingress controller: cannot list {}s (retrying in the background; served when it succeeds)", kind.name());
                            }
                            // The first failure of an optional kind lets the others be served.
                            let first = !store.failed;
                            store.failed = true;
                            first && !kind.required()
                        }
                    };
                    if changed && cluster.ready() {
                        let now = tokio::time::Instant::now();
                        let first = *first_change.get_or_insert(now);
                        apply_at = Some((now + SETTLE).min(first + SETTLE_AT_MOST));
                    }
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new leader writes everything once.
                    if *leading.borrow() {
                        if let Some(built) = &built {
                            writer.write(&cluster, built).await;
                        }
                    } else {
                        writer.step_down();
                    }
                }
                _ = sleep_until(apply_at) => {
                    apply_at = None;
                    first_change = None;
                    let Some(fresh) = self.build(&base, &cluster) else { continue };
                    // The same objects after a relist: nothing to swap.
                    if last.as_deref() != Some(fresh.text.as_str()) {
                        last = Some(fresh.text.clone());
                        if configs.send(fresh.config.clone()).await.is_err() {
                            return;
                        }
                        secrets::remove_unused(&self.secrets_dir, &fresh.files);
                    }
                    if *leading.borrow() {
                        writer.write(&cluster, &fresh).await;
                    }
                    built = Some(fresh);
                }
            }
        }
    }

    async fn client(&self, shutdown: &CancellationToken) -> Option<Client> {
        let settings = KubernetesDiscovery {
            service: String::new(),
            namespace: self.namespace.clone(),
            port: None,
            kubeconfig: self.kubeconfig.clone(),
        };
        loop {
            match crate::discovery::kubernetes::client(&settings).await {
                Ok((client, _)) => return Some(client),
                Err(e) => {
                    tracing::error!(error = %e, "ingress controller: no Kubernetes API configuration; retrying in 5s");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        }
    }

    /// One watch per kind, in the namespace watched (GatewayClasses are cluster-wide).
    fn watches(&self, client: &Client) -> Vec<Changes> {
        let ns = self.namespace.as_deref();
        fn api<K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
            client: &Client,
            ns: Option<&str>,
        ) -> Api<K> {
            match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        let all = watcher::Config::default();
        // Only TLS Secrets: the controller never reads the others.
        let tls = watcher::Config::default().fields("type=kubernetes.io/tls");
        let mut watches = vec![
            changes(Kind::Ingress, api::<Ingress>(client, ns), all.clone()),
            changes(Kind::Service, api::<Service>(client, ns), all.clone()),
            changes(Kind::Secret, api::<Secret>(client, ns), tls),
            // Cluster-wide, for `allowedRoutes.namespaces.from: Selector` (labels only matter).
            changes(
                Kind::Namespace,
                Api::<Namespace>::all(client.clone()),
                all.clone(),
            ),
        ];
        for kind in [
            Kind::GatewayClass,
            Kind::Gateway,
            Kind::HttpRoute,
            Kind::GrpcRoute,
            Kind::ReferenceGrant,
        ] {
            let Some(resource) = kind.resource() else {
                continue;
            };
            let api: Api<DynamicObject> = match ns {
                Some(ns) if kind != Kind::GatewayClass => {
                    Api::namespaced_with(client.clone(), ns, &resource)
                }
                _ => Api::all_with(client.clone(), &resource),
            };
            watches.push(changes(kind, api, all.clone()));
        }
        watches
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

    /// The config for the current objects: all together first (the usual case: one
    /// translation, one validation); when that fails, each alone, and the good ones together.
    fn build(&self, base: &Base, cluster: &Cluster) -> Option<Built> {
        let ours = Ours::new(
            cluster.of(Kind::GatewayClass),
            cluster.of(Kind::Gateway),
            cluster.namespace_labels(),
            base.ports.clone(),
        );
        let mut candidates: Vec<Value> = cluster
            .of(Kind::Ingress)
            .filter(|i| self.is_ours(i))
            .cloned()
            .collect();
        // Routes are served for the hostnames they share with the listeners that take them,
        // on those listeners' ports.
        let mut placements: translate::Placements = BTreeMap::new();
        for route in cluster
            .of(Kind::HttpRoute)
            .chain(cluster.of(Kind::GrpcRoute))
        {
            if let Some(placement) = ours.placement(route) {
                placements.insert(object_id(route), placement);
                candidates.push(route.clone());
            }
        }
        let gateways: Vec<Value> = ours.gateways.iter().map(|g| (*g).clone()).collect();
        // What the routes' references resolve against: Services, and the ReferenceGrants that
        // open another namespace's to them.
        let services: Vec<crate::lint::Object> = crate::lint::objects_from_values(
            "cluster",
            cluster
                .of(Kind::Service)
                .chain(cluster.of(Kind::ReferenceGrant))
                .cloned(),
        );
        let objects = |values: &[Value]| {
            let mut objects = crate::lint::objects_from_values("cluster", values.iter().cloned());
            objects.extend(services.iter().cloned());
            objects
        };
        let mut rejected = BTreeMap::new();
        let mut notes = Vec::new();
        let mut good = candidates;
        let mut tls = self.certificates(cluster, &good, &ours, &mut notes);
        let built = match self.config_for(base, objects(&good), &placements, &tls) {
            Ok(built) => Ok(built),
            Err(_) => {
                // Some object breaks the config, alone or with others (two routes of the same
                // name, say): keep each only if the objects kept so far and it still make a
                // valid config.
                let mut kept: Vec<Value> = Vec::new();
                for value in std::mem::take(&mut good) {
                    kept.push(value);
                    if let Err(e) = self.config_for(base, objects(&kept), &placements, &[]) {
                        if let Some(value) = kept.pop() {
                            let id = object_id(&value);
                            tracing::error!(object = %id, error = %e, "ingress controller: object rejected (the others are applied)");
                            rejected.insert(id, (value, e));
                        }
                    }
                }
                good = kept;
                notes.clear();
                tls = self.certificates(cluster, &good, &ours, &mut notes);
                self.config_for(base, objects(&good), &placements, &tls)
            }
        };
        let (config, text, translated) = match built {
            Ok(built) => built,
            Err(e) => {
                tracing::error!(error = %e, "ingress controller: the routes together are invalid; keeping the ones in use");
                return None;
            }
        };
        // Objects the translation itself rejects (an HTTPRoute whose backendRequest timeout
        // exceeds its request timeout) added nothing to the config: listed as rejected.
        good.retain(|value| {
            let id = object_id(value);
            match translated
                .iter()
                .find(|n| n.object == id && n.outcome == Outcome::Rejected)
            {
                Some(n) => {
                    let why = format!("{}: {}", n.source, n.message);
                    rejected.insert(id, (value.clone(), why));
                    false
                }
                None => true,
            }
        });
        notes.extend(translated);
        for n in notes.iter().filter(|n| n.outcome != Outcome::Maps) {
            tracing::warn!(object = %n.object, source = %n.source, outcome = n.outcome.as_str(), "{}", n.message);
        }
        for (id, (_, n)) in &rejected {
            if !notes.iter().any(|x| &x.object == id) {
                tracing::error!(object = %id, "ingress controller: rejected: {n}");
            }
        }
        let files = tls
            .iter()
            .flat_map(|t| [t.files.cert.clone(), t.files.key.clone()])
            .collect();
        let mut applied: BTreeMap<String, Value> =
            good.into_iter().map(|v| (object_id(&v), v)).collect();
        applied.extend(gateways.into_iter().map(|g| (object_id(&g), g)));
        Some(Built {
            config,
            text,
            applied,
            rejected,
            notes,
            files,
        })
    }

    /// The certificates the Ingresses' `spec.tls` (for every TLS listener) and our Gateways'
    /// listeners (for the TLS listener on their port) name, written as files; a Secret that is
    /// missing or unusable is reported and left out.
    fn certificates(
        &self,
        cluster: &Cluster,
        objects: &[Value],
        ours: &Ours<'_>,
        notes: &mut Vec<Note>,
    ) -> Vec<Certificate> {
        let mut wanted: Vec<Wanted<'_>> = Vec::new();
        let grants = Grants::new(cluster.of(Kind::ReferenceGrant));
        for object in objects.iter().filter(|o| o["kind"] == "Ingress") {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let entries = object.pointer("/spec/tls").and_then(Value::as_array);
            for entry in entries.into_iter().flatten() {
                let Some(secret) = entry.get("secretName").and_then(Value::as_str) else {
                    continue;
                };
                let mut hosts = strings(entry.get("hosts"));
                if hosts.is_empty() {
                    // No hosts: the Ingress's own.
                    let rules = object.pointer("/spec/rules").and_then(Value::as_array);
                    hosts = rules
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.get("host").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect();
                }
                wanted.push(Wanted {
                    object: object_id(object),
                    namespace,
                    name: secret.to_string(),
                    hosts,
                    port: None,
                });
            }
        }
        for gateway in ours.gateways.iter().copied() {
            let namespace = gateway
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let listeners = gateway.pointer("/spec/listeners").and_then(Value::as_array);
            // A listener hitless cannot serve loads nothing (its status says why).
            for listener in listeners
                .into_iter()
                .flatten()
                .filter(|l| ours.fit(l).is_ok())
            {
                let port = listener
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok());
                let refs = listener
                    .pointer("/tls/certificateRefs")
                    .and_then(Value::as_array);
                let hosts: Vec<String> = listener
                    .get("hostname")
                    .and_then(Value::as_str)
                    .map(|h| vec![h.to_string()])
                    .unwrap_or_default();
                for r in refs.into_iter().flatten() {
                    let Some(name) = r.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    // Another namespace's Secret: only with a ReferenceGrant there.
                    let ns = r
                        .get("namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(namespace);
                    let from = grants::From {
                        kind: "Gateway",
                        namespace,
                    };
                    let to = grants::To {
                        kind: "Secret",
                        namespace: ns,
                        name,
                    };
                    if grants.permit(from, to) {
                        wanted.push(Wanted {
                            object: object_id(gateway),
                            namespace: ns,
                            name: name.to_string(),
                            hosts: hosts.clone(),
                            port,
                        });
                    } else {
                        notes.push(Note {
                            object: object_id(gateway),
                            source: format!("Secret/{ns}/{name}"),
                            outcome: Outcome::Unsupported,
                            message: "a Secret in another namespace needs a ReferenceGrant \
                                      there for this Gateway (none found): refused"
                                .into(),
                        });
                    }
                }
            }
        }
        let mut out: Vec<Certificate> = Vec::new();
        for Wanted {
            object,
            namespace,
            name,
            hosts,
            port,
        } in wanted
        {
            let mut problem = |message: String| {
                notes.push(Note {
                    object: object.clone(),
                    source: format!("Secret/{namespace}/{name}"),
                    outcome: Outcome::Unsupported,
                    message: format!(
                        "{message}: those hosts get the listener's default certificate"
                    ),
                })
            };
            let Some(secret) = cluster.get(Kind::Secret, &format!("{namespace}/{name}")) else {
                problem("no such TLS Secret".into());
                continue;
            };
            let files = match secrets::write(&self.secrets_dir, secret) {
                Ok(files) => files,
                Err(e) => {
                    problem(e);
                    continue;
                }
            };
            // No host names given: the certificate's own (it would otherwise only answer names
            // nothing else serves, and a self-signed default takes those).
            let hosts = if hosts.is_empty() {
                secrets::dns_names(&files.cert)
            } else {
                hosts
            };
            let check = crate::config::tls::build(
                vec![crate::config::tls::CertificateFiles {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                    server_names: hosts.clone(),
                }],
                false,
            );
            if let Err(errors) = check {
                let why = errors
                    .into_iter()
                    .map(|(_, _, m)| m)
                    .collect::<Vec<_>>()
                    .join("; ");
                problem(format!("unusable certificate: {why}"));
                continue;
            }
            match out.iter_mut().find(|c| c.files == files && c.port == port) {
                Some(c) => c.hosts.extend(hosts),
                None => out.push(Certificate { files, hosts, port }),
            }
        }
        out
    }

    /// Translate `objects` (Ingresses, routes served where `placements` say, and the Services
    /// that resolve their ports) over the base config, with `certificates` added to its TLS
    /// listeners; the config, its text, and the report's notes.
    fn config_for(
        &self,
        base: &Base,
        objects: Vec<crate::lint::Object>,
        placements: &translate::Placements,
        certificates: &[Certificate],
    ) -> Result<(Config, String, Vec<Note>), String> {
        let https = base.ports.iter().any(|p| p.tls);
        let mut value = base.value.clone();
        let Some(root) = value.as_object_mut() else {
            return Err("the base config is not a mapping".into());
        };
        let mut notes = Vec::new();
        let serving = translate::Serving {
            tls: translate::Tls::Secrets(https),
            placements,
        };
        let imported = translate::config(&objects, &serving, &mut notes);
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
        add_certificates(root, &base.ports, certificates);
        let yaml = serde_saphyr::to_string(&value).map_err(|e| e.to_string())?;
        let config = Config::from_yaml(&yaml).map_err(|e| e.to_string())?;
        Ok((config, yaml, notes))
    }
}

/// The base config file: as a value each build starts from, and its listeners.
struct Base {
    value: Value,
    ports: Vec<Port>,
}

impl Base {
    fn parse(text: &str) -> Result<Base, String> {
        let value: Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let config = Config::from_yaml(text).map_err(|e| e.to_string())?;
        Ok(Base {
            value,
            ports: Port::of(&config),
        })
    }
}

/// A Secret a certificate is wanted from: for which object, hosts and port.
struct Wanted<'a> {
    object: String,
    namespace: &'a str,
    name: String,
    hosts: Vec<String>,
    /// A Gateway listener's port: for the TLS listener there only; `None`: every one.
    port: Option<u16>,
}

/// One Secret's files and the host names it serves, on the TLS listener of public port
/// `port` (`None`: on every TLS listener).
pub(super) struct Certificate {
    files: secrets::Written,
    hosts: Vec<String>,
    port: Option<u16>,
}

/// Append `certificates` to the TLS listeners of the base config (`ports`: their public
/// ports, in order), after their own (the first stays the default for clients whose SNI names
/// no host).
fn add_certificates(
    root: &mut serde_json::Map<String, Value>,
    ports: &[Port],
    certificates: &[Certificate],
) {
    let Some(listeners) = root.get_mut("listeners").and_then(Value::as_array_mut) else {
        return;
    };
    if !certificates.is_empty() && !listeners.iter().any(|l| l.get("tls").is_some()) {
        tracing::warn!("ingress controller: TLS Secrets are named, but the base config has no TLS listener (listeners[].tls): HTTPS is not served");
    }
    for (i, listener) in listeners.iter_mut().enumerate() {
        let public = ports.get(i).map(|p| p.port);
        let Some(tls) = listener.get_mut("tls").and_then(Value::as_object_mut) else {
            continue;
        };
        // `tls: {self_signed: true}` has no list yet.
        let list = tls
            .entry("certificates")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Some(list) = list.as_array_mut() else {
            continue;
        };
        for c in certificates
            .iter()
            .filter(|c| c.port.is_none() || c.port == public)
        {
            list.push(serde_json::json!({
                "cert": c.files.cert.display().to_string(),
                "key": c.files.key.display().to_string(),
                "server_names": c.hosts,
            }));
        }
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
