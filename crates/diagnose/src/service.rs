//! Kubernetes intent for a Service destination: the port exists, and there are ready endpoints
//! for it. What kube-proxy really does with the packet is the walk's business (it reads
//! kube-proxy's rules); these checks say why, in Kubernetes terms.

use model::{Evidence, Finding, FindingCode, Level, Owner, Place};
use netstack::packet::Protocol;

use crate::Query;

pub fn check_service(
    snapshot: &model::Snapshot,
    namespace: &str,
    name: &str,
    query: &Query,
    findings: &mut Vec<Finding>,
) {
    let k8s = &snapshot.kubernetes;
    let Some(svc) = k8s.services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(namespace)
            && s.metadata.name.as_deref() == Some(name)
    }) else {
        return;
    };
    let object = |detail: String| Evidence::Object {
        kind: "Service".into(),
        namespace: Some(namespace.into()),
        name: name.into(),
        detail: Some(detail),
    };
    let owner = Some(Owner::Service {
        namespace: namespace.into(),
        name: name.into(),
    });
    let proto = match query.protocol {
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        _ => "TCP",
    };
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let port = ports.iter().find(|p| {
        p.port == i32::from(query.dport) && p.protocol.as_deref().unwrap_or("TCP") == proto
    });
    if query.protocol != Protocol::Icmp && port.is_none() {
        let have: Vec<String> = ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")))
            .collect();
        findings.push(Finding {
            code: FindingCode::ServicePortMissing,
            level: Level::Error,
            place: Place::default(),
            message: format!(
                "Service {namespace}/{name} has no port {}/{proto}; it exposes {}",
                query.dport,
                if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                }
            ),
            evidence: vec![object(format!("ports: {}", have.join(", ")))],
            owner: owner.clone(),
            hint: Some("Use one of the Service's ports, or add the port to the Service.".into()),
        });
    }
    let port_name = port.and_then(|p| p.name.clone());
    let mut ready = 0;
    let mut total = 0;
    for slice in &k8s.endpoint_slices {
        let belongs = slice.metadata.namespace.as_deref() == Some(namespace)
            && slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .map(String::as_str)
                == Some(name);
        if !belongs {
            continue;
        }
        let serves_port = slice
            .ports
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.name == port_name));
        if !serves_port {
            continue;
        }
        for ep in &slice.endpoints {
            total += 1;
            if ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
                ready += 1;
            }
        }
    }
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let has_selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if ready == 0 && !headless {
        findings.push(Finding {
            code: FindingCode::ServiceNoEndpoints,
            level: Level::Error,
            place: Place::default(),
            message: if total == 0 {
                format!("Service {namespace}/{name} has no endpoints{}", if has_selector { ": no ready pod matches its selector" } else { " and no selector" })
            } else {
                format!("Service {namespace}/{name} has {total} endpoints, none ready")
            },
            evidence: vec![object(format!("{ready} ready of {total} endpoints"))],
            owner,
            hint: Some("Check the selector against the pods' labels and why the pods are not Ready (kubectl describe pod).".into()),
        });
    }
}
