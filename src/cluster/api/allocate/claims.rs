//! One store key per allocated address, claimed with a create-if-absent txn before the
//! object that holds the address is written (Kubernetes' IPAddress model, KEP-1880), so two
//! API servers on one etcd never hand out the same ClusterIP, NodePort or pod CIDR: each
//! server's lock in [`super::Allocations`] serializes only its own writers.
//!
//! A claim names its holder (`Kind/namespace/name`). A delete, an update or a batch that
//! drops an address releases its claim (`super::release`); the repair pass ([`repair`], run
//! by the leader) deletes any other claim whose holder does not hold the address (a write
//! that failed after claiming, a server killed in between) once it has been seen stale on
//! two passes; a stored
//! address without a claim gets one, and two objects holding one address are reported.

use std::collections::{HashMap, HashSet};

use super::{Network, Taken, owner};
use crate::cluster::api::status::ApiError;
use crate::cluster::api::storage::Storage;
use crate::cluster::store::{Compare, ListOptions, Op, OpResult, Txn};

/// Every claim key starts with this (outside `/registry`: claims are no API objects).
pub const PREFIX: &str = "/claims/";

/// The claim key of each address `taken` holds.
pub(super) fn keys(network: &Network, taken: &Taken) -> Vec<String> {
    let mut keys: Vec<String> = taken
        .cluster_ips
        .keys()
        .map(|ip| format!("{PREFIX}clusterips/{ip}"))
        .chain(
            taken
                .node_ports
                .keys()
                .map(|p| format!("{PREFIX}nodeports/{p}")),
        )
        .chain(taken.pod_cidrs.keys().map(|offset| {
            let ip = network.cluster_cidr.nth(*offset);
            format!("{PREFIX}podcidrs/{ip}")
        }))
        .collect();
    keys.sort();
    keys
}

/// Records the address a claim key names as held by `who`.
pub(super) fn mark(network: &Network, taken: &mut Taken, key: &str, who: &str) {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return;
    };
    let who = who.to_string();
    match rest.split_once('/') {
        Some(("clusterips", ip)) => {
            if let Ok(ip) = ip.parse() {
                taken.cluster_ips.insert(ip, who);
            }
        }
        Some(("nodeports", port)) => {
            if let Ok(port) = port.parse() {
                taken.node_ports.insert(port, who);
            }
        }
        Some(("podcidrs", ip)) => {
            if let Ok(ip) = ip.parse() {
                taken
                    .pod_cidrs
                    .insert(network.cluster_cidr.offset_of(ip), who);
            }
        }
        _ => {}
    }
}

/// The holder name of a claim.
pub(super) fn holder(kind: &str, object: &serde_json::Value) -> String {
    format!("{kind}/{}", owner(object))
}

/// Claims `keys` for `who` in one txn. Keys `who` already holds count as claimed. Returns the
/// keys another holder has (nothing was claimed then), with their holders.
pub(super) async fn claim(
    storage: &Storage,
    who: &str,
    keys: &[String],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut wanted: Vec<String> = keys.to_vec();
    // Twice at most: once for all, once more for the ones found missing after a race.
    for _ in 0..3 {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let txn = Txn::new()
            .when(wanted.iter().map(|k| Compare::absent(k.clone())))
            .then(wanted.iter().map(|k| Op::put(k.clone(), who.as_bytes())))
            .otherwise(wanted.iter().map(|k| Op::get(k.clone())));
        let result = storage.store.txn(txn).await?;
        if result.succeeded {
            return Ok(Vec::new());
        }
        let mut others = Vec::new();
        let mut missing = Vec::new();
        for (key, outcome) in wanted.iter().zip(result.results) {
            match outcome {
                OpResult::Get { kv: Some(kv) } if kv.value != who.as_bytes() => {
                    others.push((key.clone(), String::from_utf8_lossy(&kv.value).into_owned()));
                }
                OpResult::Get { kv: None } => missing.push(key.clone()),
                _ => {}
            }
        }
        if !others.is_empty() {
            return Ok(others);
        }
        wanted = missing;
    }
    Err(ApiError::Internal(
        "address claims kept changing; retry".into(),
    ))
}

/// Deletes `key` if `who` holds it.
pub(super) async fn release(storage: &Storage, who: &str, key: &str) -> Result<(), ApiError> {
    if let Some(kv) = storage.store.get(key).await?
        && kv.value == who.as_bytes()
    {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, kv.mod_revision)])
            .then([Op::delete(key)]);
        storage.store.txn(txn).await?;
    }
    Ok(())
}

/// What one [`repair`] pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Stale claims deleted.
    pub released: usize,
    /// Claims written for stored addresses that had none.
    pub claimed: usize,
    /// Addresses two objects hold, with both holders.
    pub duplicates: Vec<String>,
}

/// One repair pass over the claims and the stored Services and Nodes. `suspects` carries
/// the stale claims of the previous pass (key → revision seen): only a claim stale on two
/// passes in a row, unchanged in between, is deleted, so a claim made for a write still in
/// flight is left alone.
pub async fn repair(
    storage: &Storage,
    network: &Network,
    suspects: &mut HashMap<String, i64>,
) -> Result<Repaired, ApiError> {
    let mut out = Repaired::default();
    let mut held: HashMap<String, String> = HashMap::new();
    for kind in ["Service", "Node"] {
        let r = crate::cluster::api::resources::by_kind("v1", kind).expect("served");
        let page = storage.list(r, None, 0, None, None).await?;
        for stored in page.items {
            let object = stored.decode()?;
            let mut taken = Taken::default();
            taken.record(network, kind, &object);
            let who = holder(kind, &object);
            for key in keys(network, &taken) {
                if let Some(other) = held.insert(key.clone(), who.clone())
                    && other != who
                {
                    out.duplicates.push(format!("{key}: {other} and {who}"));
                }
            }
        }
    }
    let claims = storage
        .store
        .list(PREFIX, ListOptions::default())
        .await?
        .items;
    let mut claimed = HashSet::new();
    let mut stale = HashMap::new();
    for kv in claims {
        claimed.insert(kv.key.clone());
        let who = String::from_utf8_lossy(&kv.value);
        if held.get(&kv.key).is_some_and(|h| *h == who) {
            continue;
        }
        if suspects.get(&kv.key) == Some(&kv.mod_revision) {
            let txn = Txn::new()
                .when([Compare::mod_revision(kv.key.clone(), kv.mod_revision)])
                .then([Op::delete(kv.key.clone())]);
            if storage.store.txn(txn).await?.succeeded {
                out.released += 1;
            }
        } else {
            stale.insert(kv.key.clone(), kv.mod_revision);
        }
    }
    *suspects = stale;
    for (key, who) in held {
        if claimed.contains(&key) {
            continue;
        }
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .then([Op::put(key, who.into_bytes())]);
        if storage.store.txn(txn).await?.succeeded {
            out.claimed += 1;
        }
    }
    out.duplicates.sort();
    Ok(out)
}
