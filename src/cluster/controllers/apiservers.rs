//! Every master in the `default/kubernetes` Endpoints, as kube-apiserver's lease endpoint
//! reconciler keeps them: each master renews a `coordination.k8s.io/v1` Lease of its own in
//! `kube-system` (labelled `apiserver.kubernetes.io/identity: kube-apiserver`, its address in
//! an annotation) and writes the Endpoints as the addresses of the live Leases. Every master
//! runs this, leader or not: the Endpoints are how agents find the masters, and must not wait
//! for an election.
//!
//! A Lease is live while its resourceVersion keeps changing: one that has not changed for
//! the lease duration, measured on this master's monotonic clock from when it was first seen,
//! belongs to a dead master, and whoever sees that first deletes it (with a resourceVersion
//! precondition, so a master that renewed meanwhile stays). Clocks need not agree, as in the
//! controllers' election (`super::leader`). A master that shuts down deletes its own Lease and
//! leaves the Endpoints at once. The Lease also names the Secret encryption keys the master
//! holds, which a key rotation waits on (`crate::daemons::server`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::client::{LocalApi, path, resource};
use crate::cluster::api::leadership::LEASE_NAMESPACE;

/// The label every master's Lease carries (kube-apiserver's identity leases carry the same).
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
const IDENTITY_VALUE: &str = "kube-apiserver";
/// The annotation that holds a master's `IP:port`.
pub const ADDRESS_ANNOTATION: &str = "berth.dev/apiserver-address";
/// The ids of the Secret encryption keys a master opens with (comma-separated), and the one
/// it seals with: how a key rotation knows every master can read the new key before any
/// master seals with it.
pub const KEYS_ANNOTATION: &str = "berth.dev/encryption-keys";
pub const CURRENT_KEY_ANNOTATION: &str = "berth.dev/encryption-key-current";

/// How a master keeps its place in the Endpoints.
#[derive(Debug, Clone, Copy)]
pub struct ApiServerLeases {
    /// A Lease unchanged this long belongs to a dead master (kube-apiserver: 15 s).
    pub lease_duration: Duration,
    /// How often a master renews its own Lease.
    pub renew_interval: Duration,
    /// How often a master looks at the others' Leases and the Endpoints.
    pub check_interval: Duration,
}

impl Default for ApiServerLeases {
    fn default() -> Self {
        ApiServerLeases {
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            check_interval: Duration::from_secs(1),
        }
    }
}

/// The Lease name of the master at `address`: one per address, so a master restarted on the
/// same address takes its old Lease back.
pub fn lease_name(address: SocketAddr) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(address.to_string().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("berth-apiserver-{hex}")
}

/// The Endpoints `subsets` for these master addresses: one subset per port (masters on one
/// machine differ by port), addresses sorted so every master writes the same value.
pub fn subsets(addresses: &[SocketAddr]) -> Value {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for a in addresses {
        by_port
            .entry(a.port())
            .or_default()
            .push(a.ip().to_string());
    }
    let subsets: Vec<Value> = by_port
        .into_iter()
        .map(|(port, mut ips)| {
            ips.sort();
            ips.dedup();
            json!({
                "addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            })
        })
        .collect();
    Value::Array(subsets)
}

fn micro_time() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// One master's reconciler and its memory of the other Leases.
struct Reconciler {
    api: LocalApi,
    address: SocketAddr,
    identity: String,
    options: ApiServerLeases,
    /// Each other Lease's resourceVersion as last seen, and when it was first seen.
    seen: HashMap<String, (String, Instant)>,
}

impl Reconciler {
    fn lease_path(name: Option<&str>) -> String {
        path(
            resource("coordination.k8s.io/v1", "Lease"),
            Some(LEASE_NAMESPACE),
            name,
            None,
        )
    }

    fn endpoints_path() -> String {
        path(
            resource("v1", "Endpoints"),
            Some("default"),
            Some("kubernetes"),
            None,
        )
    }

    /// What this master's Lease says of it besides the renewal: its address and its keys.
    fn annotations(&self) -> Value {
        let mut annotations = json!({ADDRESS_ANNOTATION: self.address.to_string()});
        if let Some((ids, current)) = self.api.state().storage.key_ids() {
            annotations[KEYS_ANNOTATION] = json!(ids.join(","));
            annotations[CURRENT_KEY_ANNOTATION] = json!(current);
        }
        annotations
    }

    /// Creates or renews this master's Lease.
    async fn renew(&self) -> Result<(), String> {
        let name = lease_name(self.address);
        let spec = json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.options.lease_duration.as_secs().max(1),
            "renewTime": micro_time(),
        });
        let path = Self::lease_path(Some(&name));
        match self.api.get(&path).await {
            Ok(mut lease) => {
                lease["spec"] = spec;
                lease["metadata"]["labels"][IDENTITY_LABEL] = json!(IDENTITY_VALUE);
                for (k, v) in self.annotations().as_object().into_iter().flatten() {
                    lease["metadata"]["annotations"][k] = v.clone();
                }
                self.api.replace(&path, &lease).await.map(drop)
            }
            Err(e) if e.is_not_found() => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                        "labels": {IDENTITY_LABEL: IDENTITY_VALUE},
                        "annotations": self.annotations()},
                    "spec": spec,
                });
                self.api
                    .create(&Self::lease_path(None), &lease)
                    .await
                    .map(drop)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| e.to_string())
    }

    /// The addresses of the live masters (this one always among them, unless `leaving`);
    /// dead masters' Leases are deleted. Returns when the next look is due at the latest: the
    /// earliest instant another Lease could turn dead.
    async fn live(&mut self, leaving: bool) -> Result<(Vec<SocketAddr>, Option<Instant>), String> {
        let list = self
            .api
            .get(&format!(
                "{}?labelSelector={IDENTITY_LABEL}%3D{IDENTITY_VALUE}",
                Self::lease_path(None)
            ))
            .await
            .map_err(|e| e.to_string())?;
        let own = lease_name(self.address);
        let now = Instant::now();
        let mut addresses = Vec::new();
        let mut next: Option<Instant> = None;
        let mut present = Vec::new();
        for lease in list["items"].as_array().into_iter().flatten() {
            let name = lease["metadata"]["name"].as_str().unwrap_or_default();
            let version = lease["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            let address = lease["metadata"]["annotations"][ADDRESS_ANNOTATION]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if name == own {
                continue;
            }
            present.push(name.to_string());
            let first_seen = match self.seen.get(name) {
                Some((v, at)) if v == version => *at,
                _ => {
                    self.seen.insert(name.into(), (version.into(), now));
                    now
                }
            };
            let dies = first_seen + self.options.lease_duration;
            if now >= dies {
                tracing::info!(lease = name, address = ?address, "a master's lease expired: it leaves the kubernetes Endpoints");
                let path = Self::lease_path(Some(name));
                if let Err(e) = self.api.delete_version(&path, version).await {
                    tracing::debug!(error = %e, "could not delete an expired master lease");
                }
                continue;
            }
            next = Some(next.map_or(dies, |n| n.min(dies)));
            match address {
                Some(a) => addresses.push(a),
                None => tracing::debug!(lease = name, "a master lease without an address"),
            }
        }
        self.seen.retain(|name, _| present.contains(name));
        if !leaving {
            addresses.push(self.address);
        }
        Ok((addresses, next))
    }

    /// Writes the Endpoints when they differ from `addresses` (a compare-and-swap: a
    /// conflict means another master wrote meanwhile, and the next look settles it).
    async fn write_endpoints(&self, addresses: &[SocketAddr]) -> Result<(), String> {
        let subsets = subsets(addresses);
        let path = Self::endpoints_path();
        match self.api.get(&path).await {
            Ok(live) if live.get("subsets") == Some(&subsets) => Ok(()),
            Ok(mut live) => {
                live["subsets"] = subsets;
                self.api.replace(&path, &live).await.map(drop)
            }
            Err(e) if e.is_not_found() => {
                let object = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                    "subsets": subsets});
                let collection = path.trim_end_matches("/kubernetes");
                self.api.create(collection, &object).await.map(drop)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| e.to_string())
    }

    /// Leaves: deletes this master's Lease and writes the Endpoints without it.
    async fn leave(&mut self) {
        let path = Self::lease_path(Some(&lease_name(self.address)));
        if let Err(e) = self.api.delete(&path, "Background").await {
            tracing::debug!(error = %e, "could not delete this master's lease");
        }
        match self.live(true).await {
            Ok((addresses, _)) if !addresses.is_empty() => {
                if let Err(e) = self.write_endpoints(&addresses).await {
                    tracing::debug!(error = %e, "could not leave the kubernetes Endpoints");
                }
            }
            // The last master leaves its own address: there is no better one to give.
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not leave the kubernetes Endpoints"),
        }
    }
}

/// Keeps this master (at `address`) in the `default/kubernetes` Endpoints with the other live
/// masters until `stop` turns true, then takes it out. `api` must be unfenced: every master
/// writes here, leader or not.
pub async fn run(
    api: LocalApi,
    address: SocketAddr,
    identity: String,
    options: ApiServerLeases,
    mut stop: watch::Receiver<bool>,
) {
    let mut reconciler = Reconciler {
        api,
        address,
        identity,
        options,
        seen: HashMap::new(),
    };
    let mut renewed: Option<(Instant, Value)> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        // Renewed on time, and at once when what the Lease says changed (new keys taken).
        let says = reconciler.annotations();
        if renewed
            .as_ref()
            .is_none_or(|(at, said)| at.elapsed() >= options.renew_interval || *said != says)
        {
            match reconciler.renew().await {
                Ok(()) => renewed = Some((Instant::now(), says)),
                Err(e) => tracing::warn!(error = %e, "cannot renew this master's lease"),
            }
        }
        let mut pause = options.check_interval;
        match reconciler.live(false).await {
            Ok((addresses, next)) => {
                if let Err(e) = reconciler.write_endpoints(&addresses).await {
                    tracing::debug!(error = %e, "cannot write the kubernetes Endpoints");
                }
                if let Some(next) = next {
                    pause = pause.min(next.saturating_duration_since(Instant::now()));
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list the masters' leases"),
        }
        tokio::select! {
            () = tokio::time::sleep(pause.max(Duration::from_millis(50))) => {}
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
    reconciler.leave().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_on_one_port_share_a_subset_and_others_get_their_own() {
        let a: SocketAddr = "10.0.0.2:6443".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:6443".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:7443".parse().unwrap();
        assert_eq!(
            subsets(&[a, c, b, a]),
            json!([
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                 "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
                {"addresses": [{"ip": "127.0.0.1"}],
                 "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]},
            ])
        );
    }

    #[test]
    fn a_lease_name_is_a_dns_name_per_address() {
        let a = lease_name("10.0.0.1:6443".parse().unwrap());
        let b = lease_name("[::1]:6443".parse().unwrap());
        assert_ne!(a, b);
        assert_eq!(a, lease_name("10.0.0.1:6443".parse().unwrap()));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
