//! Node health: a node whose Ready condition is not True (kubelet down, CNI not ready,
//! `NetworkUnavailable`) is one Kubernetes itself no longer trusts: its pods are being evicted
//! and its endpoints leave the Services, whatever its datapath still does.

use k8s_openapi::api::core::v1::Node;
use model::{Evidence, Finding, FindingCode, Level, Place, Snapshot};

/// Why `node` is not usable, if it is not: Ready not True, or NetworkUnavailable True.
fn unhealthy(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    let describe = |c: &k8s_openapi::api::core::v1::NodeCondition| {
        let mut s = format!("{}={}", c.type_, c.status);
        if let Some(reason) = &c.reason {
            s.push_str(&format!(" ({reason})"));
        }
        if let Some(message) = &c.message {
            s.push_str(&format!(": {message}"));
        }
        s
    };
    conditions
        .iter()
        .find(|c| {
            (c.type_ == "Ready" && c.status != "True")
                || (c.type_ == "NetworkUnavailable" && c.status == "True")
        })
        .map(describe)
}

/// One finding per node on the path (`nodes`, in path order) that is not Ready.
pub fn not_ready<'n>(
    snapshot: &Snapshot,
    nodes: impl IntoIterator<Item = &'n str>,
) -> Vec<Finding> {
    let mut seen: Vec<&str> = Vec::new();
    let mut findings = Vec::new();
    for name in nodes {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let Some(node) = snapshot
            .kubernetes
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
        else {
            continue;
        };
        let Some(condition) = unhealthy(node) else {
            continue;
        };
        findings.push(Finding {
            code: FindingCode::NodeNotReady,
            level: Level::Error,
            place: Place {
                node: Some(name.to_string()),
                netns: snapshot.host_netns(name).map(|r| r.id.clone()),
                device: None,
            },
            message: format!("node {name} on the path is not Ready ({condition}): its pods are evicted and its endpoints leave the Services"),
            evidence: vec![Evidence::Object {
                kind: "Node".into(),
                namespace: None,
                name: name.to_string(),
                detail: Some(condition),
            }],
            owner: None,
            hint: Some(format!("kubectl describe node {name}; on the node: systemctl status kubelet, and check the CNI agent's pod and /etc/cni/net.d")),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use model::{SnapshotSource, SourceKind};

    fn with_conditions(conditions: &[(&str, &str)]) -> Snapshot {
        let mut s = Snapshot::new(SnapshotSource {
            kind: SourceKind::Synthetic,
            name: "t".into(),
            collected_at: None,
        });
        s.kubernetes.nodes.push(Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("node-2".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, st)| NodeCondition {
                            type_: t.to_string(),
                            status: st.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        });
        s
    }

    #[test]
    fn ready_nodes_pass_and_others_are_named_once() {
        let healthy = with_conditions(&[("Ready", "True"), ("NetworkUnavailable", "False")]);
        assert!(not_ready(&healthy, ["node-2", "node-2"]).is_empty());
        // Unknown is what the node controller sets when the kubelet stops posting status.
        for conditions in [
            &[("Ready", "Unknown")][..],
            &[("Ready", "True"), ("NetworkUnavailable", "True")][..],
        ] {
            let found = not_ready(&with_conditions(conditions), ["node-2", "node-2"]);
            assert_eq!(found.len(), 1, "{conditions:?}");
            assert_eq!(found[0].code, FindingCode::NodeNotReady);
            assert_eq!(found[0].place.node.as_deref(), Some("node-2"));
        }
    }
}
