//! What the controller knows of the cluster: the watched kinds, each kind's objects (replaced
//! whole when a relist completes), and what one build made of them. Shared by the controller
//! loop (`controller.rs`) and the status writer (`status.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::{gateway, Note};
use crate::config::Config;

/// The kinds watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Ingress,
    Service,
    Secret,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    /// Consent to references from other namespaces (`v1beta1`).
    ReferenceGrant,
    /// Their labels, for listeners that allow routes from namespaces by selector.
    Namespace,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Ingress,
        Kind::Service,
        Kind::Secret,
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
        Kind::Namespace,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Ingress => "networking.k8s.io/v1",
            Kind::Service | Kind::Secret | Kind::Namespace => "v1",
            Kind::ReferenceGrant => "gateway.networking.k8s.io/v1beta1",
            _ => "gateway.networking.k8s.io/v1",
        }
    }

    /// Without these, Ingresses cannot be served; the others may be missing (no Gateway API
    /// CRDs, no permission on Secrets) and are served when their watch succeeds.
    pub fn required(self) -> bool {
        matches!(self, Kind::Ingress | Kind::Service)
    }

    /// The Gateway API kinds, as dynamic objects (they are CRDs).
    pub(super) fn resource(self) -> Option<ApiResource> {
        let (plural, version) = match self {
            Kind::GatewayClass => ("gatewayclasses", "v1"),
            Kind::Gateway => ("gateways", "v1"),
            Kind::HttpRoute => ("httproutes", "v1"),
            Kind::GrpcRoute => ("grpcroutes", "v1"),
            // Served as v1beta1 by every standard-channel release.
            Kind::ReferenceGrant => ("referencegrants", "v1beta1"),
            _ => return None,
        };
        let gvk = GroupVersionKind::gvk(gateway::GROUP, version, self.name());
        Some(ApiResource::from_gvk_with_plural(&gvk, plural))
    }
}

/// One watch event, decoded to JSON.
pub enum Change {
    Init,
    Item(String, Value),
    InitDone,
    Apply(String, Value),
    Delete(String),
}

/// One kind's objects by `namespace/name`, replaced whole when a (re)list completes.
#[derive(Default)]
pub(super) struct Store {
    pub objects: BTreeMap<String, Value>,
    listing: Option<BTreeMap<String, Value>>,
    pub synced: bool,
    /// The watch failed before its first list completed (reported once).
    pub failed: bool,
}

impl Store {
    /// Apply one change; whether the set changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            Change::Item(key, value) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(key, value);
                }
                false
            }
            Change::InitDone => {
                self.objects = self.listing.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Change::Apply(key, value) => self.objects.insert(key, value.clone()) != Some(value),
            Change::Delete(key) => self.objects.remove(&key).is_some(),
        }
    }
}

/// The watched objects, by kind.
#[derive(Default)]
pub(super) struct Cluster {
    pub stores: BTreeMap<Kind, Store>,
}

impl Cluster {
    pub(super) fn of(&self, kind: Kind) -> impl Iterator<Item = &Value> {
        self.stores
            .get(&kind)
            .into_iter()
            .flat_map(|s| s.objects.values())
    }

    pub(super) fn get(&self, kind: Kind, key: &str) -> Option<&Value> {
        self.stores.get(&kind)?.objects.get(key)
    }

    /// Each namespace's labels by its name; `None` while they are not known (not listed yet,
    /// or not allowed to: the RBAC of `k8s/ingress` grants it).
    pub fn namespace_labels(&self) -> Option<BTreeMap<&str, &Value>> {
        let store = self.stores.get(&Kind::Namespace).filter(|s| s.synced)?;
        Some(
            store
                .objects
                .values()
                .filter_map(|n| {
                    let name = n.pointer("/metadata/name")?.as_str()?;
                    Some((name, n.pointer("/metadata/labels").unwrap_or(&Value::Null)))
                })
                .collect(),
        )
    }

    /// Every required kind listed, and every optional one listed or failing.
    pub fn ready(&self) -> bool {
        Kind::ALL.iter().all(|k| {
            let store = self.stores.get(k);
            store.is_some_and(|s| s.synced) || (!k.required() && store.is_some_and(|s| s.failed))
        })
    }
}

/// What one build applied.
pub(super) struct Built {
    pub config: Config,
    pub text: String,
    /// The objects in the config (Ingresses, routes), by `Kind/namespace/name`.
    pub applied: BTreeMap<String, Value>,
    /// Objects left out, and why.
    pub rejected: BTreeMap<String, (Value, String)>,
    pub notes: Vec<Note>,
    /// The certificate files the config names.
    pub files: BTreeSet<PathBuf>,
}

/// `Kind/namespace/name`, as the import report names objects.
pub(super) fn object_id(value: &Value) -> String {
    format!(
        "{}/{}",
        value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        gateway::key(value)
    )
}
