//! Lab inventories (`<inventory dir>/*/inventory.json`, written by `netsleuth lab`): each listed
//! netns becomes its pod (or, for an emulated node's netns, that node), with the pod's labels.
//!
//! Reads only the inventory files and stats the netns paths they list.

use std::collections::BTreeMap;
use std::path::Path;

use model::snapshot::NetnsOwner;
use model::Inventory;

use super::{netns_inode, Entity, Owner, Source};

pub fn read_inventories(dir: &Path, found: &mut Vec<Entity>, problems: &mut Vec<String>) {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        // No labs: nothing to map, not a problem.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for lab in read.flatten() {
        let file = lab.path().join("inventory.json");
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                problems.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        let inventory: Inventory = match serde_json::from_slice(&bytes) {
            Ok(inv) => inv,
            Err(e) => {
                problems.push(format!("{}: {e}", file.display()));
                continue;
            }
        };
        entities_of(&inventory, found, problems);
    }
}

fn entities_of(inventory: &Inventory, found: &mut Vec<Entity>, problems: &mut Vec<String>) {
    for location in &inventory.netns {
        let owner = match &location.owner {
            NetnsOwner::Host => Owner::Node,
            NetnsOwner::Pod { namespace, name } => Owner::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            // Underlay routers are the lab's plumbing, not Kubernetes.
            NetnsOwner::Infrastructure { .. } => continue,
        };
        let netns = match netns_inode(&location.path) {
            Ok(inode) => inode,
            Err(e) => {
                problems.push(format!("{}: {e}", location.path.display()));
                continue;
            }
        };
        let labels = match &owner {
            Owner::Pod { namespace, name } => inventory
                .kubernetes
                .pods
                .iter()
                .find(|p| {
                    p.metadata.name.as_deref() == Some(name)
                        && p.metadata.namespace.as_deref().unwrap_or("default") == namespace
                })
                .and_then(|p| p.metadata.labels.clone())
                .unwrap_or_default(),
            Owner::Node => BTreeMap::new(),
        };
        found.push(Entity {
            netns,
            path: location.path.clone(),
            node: location.node.clone(),
            owner,
            labels,
            source: Source::Inventory,
        });
    }
}
