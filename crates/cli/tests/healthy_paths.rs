//! Healthy paths against the real kernel (needs root): in every CNI mode, one healthy lab and
//! every kind of flow a cluster carries (`lab::testing::healthy_flows`, the flows the lab's own
//! tests probe). Real traffic (`Lab::probe`) must get through, and `netsleuth diagnose --lab` on
//! the same flow must agree: exit 0, verdict delivered, no error-level finding. A diagnosis that
//! blocks a flow the kernel delivers is a false alarm.
//!
//! Labs are named `thp<mode>…` and taken down by a Drop guard, also on failure.

mod common;

use diagnose::render::{render, Format};
use lab::testing::{healthy_flows, healthy_spec, unique_name, LabGuard, PROBE_TIMEOUT};
use lab::{EXTERNAL_TARGET, SUPPORTED_CNI};
use model::diagnosis::Verdict;
use model::CniMode;

fn healthy_paths(cni: CniMode, tag: &str) {
    let name = unique_name(&format!("hp{tag}"));
    let spec = healthy_spec(name.clone(), cni, common::listener()).expect("healthy spec");
    let lab = LabGuard::up(spec).unwrap_or_else(|e| panic!("{cni}: lab up: {e}"));
    let mut failures = Vec::new();
    for flow in healthy_flows(&lab).expect("healthy flows") {
        let mut probe = flow.request;
        let what = flow.what;
        let traffic = lab
            .probe(&probe, PROBE_TIMEOUT)
            .unwrap_or_else(|e| panic!("{cni}: {what}: probe: {e}"));
        assert!(traffic.reachable, "{cni}: {what}: real traffic: {traffic}");
        // diagnose resolves lab names itself, except the lab-only name of the outside host.
        if probe.dst == EXTERNAL_TARGET {
            probe.dst = lab
                .address_of(&probe.dst)
                .expect("external address")
                .to_string();
        }
        let diagnosis = common::diagnose_lab(&name, &probe);
        let delivered = diagnosis
            .report
            .as_ref()
            .is_some_and(|d| d.verdict == Verdict::Delivered);
        if diagnosis.status != Some(0) || !delivered || !diagnosis.error_codes().is_empty() {
            failures.push(format!(
                "{cni}: {what} ({} -> {}:{}/{}): traffic flows, diagnose exit {:?}, errors {:?}:\n{}",
                probe.src,
                probe.dst,
                probe.port,
                probe.protocol,
                diagnosis.status,
                diagnosis.error_codes(),
                diagnosis
                    .report
                    .as_ref()
                    .map_or(diagnosis.error.clone(), |d| render(d, Format::Text))
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_supported_mode_is_covered() {
    let covered = [
        CniMode::FlannelHostGw,
        CniMode::FlannelVxlan,
        CniMode::CalicoBgp,
        CniMode::CalicoVxlan,
        CniMode::CalicoCrosssubnet,
    ];
    assert!(SUPPORTED_CNI.iter().all(|m| covered.contains(m)));
}

#[test]
fn healthy_paths_flannel_host_gw() {
    healthy_paths(CniMode::FlannelHostGw, "fhg");
}

#[test]
fn healthy_paths_flannel_vxlan() {
    healthy_paths(CniMode::FlannelVxlan, "fvx");
}

#[test]
fn healthy_paths_calico_bgp() {
    healthy_paths(CniMode::CalicoBgp, "cbg");
}

#[test]
fn healthy_paths_calico_vxlan() {
    healthy_paths(CniMode::CalicoVxlan, "cvx");
}

#[test]
fn healthy_paths_calico_crosssubnet() {
    healthy_paths(CniMode::CalicoCrosssubnet, "ccs");
}
