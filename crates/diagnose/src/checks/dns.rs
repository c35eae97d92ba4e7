//! Cluster DNS: when the flow asked about is a lookup to CoreDNS (the `kube-system/kube-dns`
//! Service, or port 53 on its ClusterIP) and it does not get through, every name lookup from
//! the source fails. That is reported on top of the root cause, which the walk found.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use model::{Evidence, Finding, FindingCode, Level, Place, Snapshot};

fn is_cluster_dns(service: &Service) -> bool {
    let meta = &service.metadata;
    meta.namespace.as_deref() == Some("kube-system")
        && (meta.name.as_deref() == Some("kube-dns")
            || meta
                .labels
                .as_ref()
                .and_then(|l| l.get("k8s-app"))
                .is_some_and(|v| v == "kube-dns"))
}

/// The cluster DNS Service the destination addresses, if it does.
fn dns_service<'s>(
    snapshot: &'s Snapshot,
    dst: &str,
    dst_ip: IpAddr,
    dport: u16,
) -> Option<&'s Service> {
    snapshot
        .kubernetes
        .services
        .iter()
        .filter(|s| is_cluster_dns(s))
        .find(|s| {
            let name = format!(
                "service/{}/{}",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default()
            );
            let cluster_ip = s.spec.as_ref().and_then(|spec| spec.cluster_ip.as_deref());
            dst == name || (dport == 53 && cluster_ip == Some(dst_ip.to_string().as_str()))
        })
}

/// `dns.unreachable` when the flow is a cluster DNS lookup and it is blocked.
pub fn unreachable(
    snapshot: &Snapshot,
    src: &str,
    src_node: &str,
    dst: &str,
    dst_ip: IpAddr,
    dport: u16,
    blocked: bool,
) -> Option<Finding> {
    if !blocked {
        return None;
    }
    let service = dns_service(snapshot, dst, dst_ip, dport)?;
    let name = service.metadata.name.clone().unwrap_or_default();
    Some(Finding {
        code: FindingCode::DnsUnreachable,
        level: Level::Error,
        place: Place {
            node: Some(src_node.to_string()),
            ..Place::default()
        },
        message: format!(
            "cluster DNS (kube-system/{name} at {dst_ip}:{dport}) is unreachable from {src}: every name lookup there fails (timeouts, SERVFAIL)"
        ),
        evidence: vec![Evidence::Object {
            kind: "Service".into(),
            namespace: Some("kube-system".into()),
            name,
            detail: Some(format!("ClusterIP {dst_ip}")),
        }],
        owner: None,
        hint: Some(
            "Fix the finding that stops the path (listed first); DNS recovers with it.".into(),
        ),
    })
}
