//! `lab status`: a readable summary of a lab (also saved as `topology.txt`).

use std::fmt;

use crate::plan::LabState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabStatus {
    pub name: String,
    pub cni: String,
    pub nodes: Vec<NodeStatus>,
    pub pods: Vec<PodStatus>,
    pub services: Vec<ServiceStatus>,
    pub network_policies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
    pub netns: String,
    /// Whether the netns still exists (false after a crash or a manual `ip netns del`).
    pub present: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    pub key: String,
    pub node: String,
    pub ip: String,
    /// `None` for hostNetwork pods.
    pub netns: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub key: String,
    pub type_: String,
    pub cluster_ip: String,
    pub ports: Vec<String>,
    pub endpoints: Vec<String>,
}

impl LabStatus {
    pub fn of(state: &LabState) -> LabStatus {
        let slices = state.endpoint_slices();
        LabStatus {
            name: state.name.clone(),
            cni: state.cni.to_string(),
            nodes: state
                .nodes
                .iter()
                .map(|n| NodeStatus {
                    name: n.name.clone(),
                    ip: n.ip.to_string(),
                    pod_cidr: n.pod_cidr.to_string(),
                    netns: n.netns.clone(),
                    present: crate::sys::netns_path(&n.netns).exists(),
                })
                .collect(),
            pods: state
                .pods
                .iter()
                .map(|p| PodStatus {
                    key: p.key(),
                    node: p.node.clone(),
                    ip: p.ip.to_string(),
                    netns: p.netns.clone(),
                })
                .collect(),
            services: state
                .services
                .iter()
                .map(|s| {
                    let spec = s.spec.clone().unwrap_or_default();
                    let namespace = s.metadata.namespace.clone().unwrap_or_default();
                    let name = s.metadata.name.clone().unwrap_or_default();
                    let endpoints = slices
                        .iter()
                        .filter(|slice| {
                            slice.metadata.namespace.as_deref() == Some(namespace.as_str())
                                && slice
                                    .metadata
                                    .labels
                                    .as_ref()
                                    .and_then(|l| l.get("kubernetes.io/service-name"))
                                    == Some(&name)
                        })
                        .flat_map(|slice| slice.endpoints.iter().flat_map(|e| e.addresses.clone()))
                        .collect();
                    ServiceStatus {
                        key: format!("{namespace}/{name}"),
                        type_: spec.type_.unwrap_or_default(),
                        cluster_ip: spec.cluster_ip.unwrap_or_default(),
                        ports: spec
                            .ports
                            .iter()
                            .flatten()
                            .map(|p| {
                                let node_port =
                                    p.node_port.map(|n| format!(":{n}")).unwrap_or_default();
                                format!(
                                    "{}{node_port}/{}",
                                    p.port,
                                    p.protocol.as_deref().unwrap_or("TCP")
                                )
                            })
                            .collect(),
                        endpoints,
                    }
                })
                .collect(),
            network_policies: state
                .network_policies
                .iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or("default"),
                        p.metadata.name.as_deref().unwrap_or_default()
                    )
                })
                .collect(),
        }
    }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lab {} (cni {})", self.name, self.cni)?;
        writeln!(f, "nodes:")?;
        for n in &self.nodes {
            let missing = if n.present { "" } else { "  [netns MISSING]" };
            writeln!(
                f,
                "  {:<10} {:<15} podCIDR {:<16} netns {}{missing}",
                n.name, n.ip, n.pod_cidr, n.netns
            )?;
        }
        writeln!(f, "pods:")?;
        for p in &self.pods {
            let netns = p.netns.as_deref().unwrap_or("(hostNetwork)");
            writeln!(
                f,
                "  {:<28} {:<8} {:<15} netns {netns}",
                p.key, p.node, p.ip
            )?;
        }
        if !self.services.is_empty() {
            writeln!(f, "services:")?;
        }
        for s in &self.services {
            writeln!(
                f,
                "  {:<28} {:<9} {:<12} ports {}  endpoints [{}]",
                s.key,
                s.type_,
                s.cluster_ip,
                s.ports.join(","),
                s.endpoints.join(", ")
            )?;
        }
        if !self.network_policies.is_empty() {
            writeln!(f, "network policies: {}", self.network_policies.join(", "))?;
        }
        Ok(())
    }
}
