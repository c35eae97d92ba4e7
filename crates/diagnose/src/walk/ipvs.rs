//! IPVS as kube-proxy's ipvs mode uses it: a packet for a local address (the ClusterIP bound
//! to `kube-ipvs0`) that passed `filter INPUT` meets IPVS at LOCAL_IN, which schedules it to a
//! real server (every real server with a positive weight is a branch, weighted by the
//! scheduler), rewrites the destination (masquerade forwarding) and sends it on through routing
//! and POSTROUTING. The NAT is remembered at egress, so the reply is un-NATed here like a DNAT.
//!
//! Only packets arriving from another netns are scheduled (pod → ClusterIP through the node);
//! IPVS for sockets of the node itself (LOCAL_OUT) is not modelled. Reads `/proc/net/ip_vs` text
//! through `netstack::ipvs`; never touches the iptables evaluation.

use model::{Evidence, FindingCode, Level, Owner};
use netstack::ipvs::{ForwardMethod, IpvsTable};
use netstack::packet::Packet;

use super::{finding, Ended, Flight, Visit, Walker};
use crate::endpoint::describe;

impl Walker<'_> {
    /// Where IPVS sends a locally delivered packet, or `None` when no virtual service takes it.
    pub(super) fn ipvs_schedule(
        &mut self,
        id: &str,
        flight: &Flight,
        before: &Packet,
        steps: &[String],
    ) -> Option<Vec<Visit>> {
        let record = self.sims.get(id)?.record;
        let text = record.state.ipvs.as_deref()?;
        // IPVS stops the packet here: the hop ends at finding `idx`.
        let stopped = |walker: &mut Self, idx: usize| {
            Some(vec![Visit::End(Ended::hop_stopped(
                flight.clone(),
                id,
                before.clone(),
                steps.to_vec(),
                idx,
                walker,
            ))])
        };
        let table = match IpvsTable::parse(text) {
            Ok(table) => table,
            Err(e) => {
                // Whether IPVS takes this local packet cannot be known.
                self.incomplete = true;
                let idx = self.push(finding(
                    FindingCode::StateIncomplete,
                    Level::Error,
                    record,
                    None,
                    format!("the IPVS table of {} cannot be read ({e}), so whether IPVS takes {} is unknown", describe(record), flight.packet),
                    vec![Evidence::Text { text: e.to_string() }],
                    None,
                    Some("Collect /proc/net/ip_vs again."),
                ));
                return stopped(self, idx);
            }
        };
        let service = table.service_for(&flight.packet)?;
        let schedule = service.schedule();
        if schedule.is_empty() {
            let idx = self.push(finding(
                FindingCode::ServiceNoEndpoints,
                Level::Error,
                record,
                None,
                format!(
                    "IPVS virtual service {} in {} has no real server that takes new connections ({} quiesced), so the kernel drops {}",
                    service.key,
                    describe(record),
                    schedule.quiesced.len(),
                    flight.packet
                ),
                vec![Evidence::Text {
                    text: format!("/proc/net/ip_vs line {}: {} {}", service.line, service.key, service.scheduler),
                }],
                Some(Owner::KubeProxy),
                Some("Check the Service's endpoints (kubectl get endpointslices) and kube-proxy's logs on this node."),
            ));
            return stopped(self, idx);
        }
        let mut visits = Vec::new();
        for branch in schedule.branches {
            let server = &branch.server;
            let mut steps = steps.to_vec();
            steps.push(format!(
                "IPVS {} ({}): to {}:{} ({:.0}% of new connections){}",
                service.key,
                service.scheduler,
                server.address,
                server.port,
                branch.probability * 100.0,
                if server.forward == ForwardMethod::Masq {
                    ""
                } else {
                    " (non-masquerade forwarding simulated as masquerade)"
                }
            ));
            let mut f = flight.clone();
            f.probability *= branch.probability;
            f.packet.dst = server.address;
            f.packet.dport = server.port;
            f.packet.oif = None;
            f.packet.iif = None;
            visits.extend(self.reroute_after_output_dnat(f, before.clone(), steps));
        }
        Some(visits)
    }
}
