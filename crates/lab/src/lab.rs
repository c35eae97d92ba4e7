//! A running lab: bring it up, apply objects, probe, exec, inspect, tear down.
//!
//! State lives in `<state root>/<name>/` (default root `/run/netsleuth/labs`, overridable with
//! `NETSLEUTH_LAB_DIR`): `lab.json` (the whole [`LabState`]), `inventory.json` (the collector's
//! input), `iptables/<node>.rules` (what was applied) and `topology.txt`. Everything on the host
//! lives in netns named `nsl-<lab>-…`, so `down` (or `down --all`) removes it all.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use model::snapshot::CniMode;

use crate::objects::LabObject;
use crate::plan::{self, LabState, NodePlan, PodPlan};
use crate::probe::{ProbeOutcome, ProbeRequest};
use crate::{datapath, kube_proxy, policy, sys, LabError};

/// Default lab name for the CLI.
pub const DEFAULT_NAME: &str = "demo";

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub name: String,
    pub cni: CniMode,
    pub nodes: u8,
    pub pods_per_node: usize,
    /// Applied after the default pods.
    pub objects: Vec<LabObject>,
    /// Program (and leading args) that runs a pod listener; ports are appended. The CLI uses
    /// `netsleuth lab serve`, this crate's tests the `nsl-lab-serve` binary.
    pub listener: Vec<String>,
}

impl LabSpec {
    /// 3 nodes, flannel-vxlan, no default pods, listener from [`default_listener`].
    pub fn new(name: impl Into<String>) -> LabSpec {
        LabSpec {
            name: name.into(),
            cni: CniMode::FlannelVxlan,
            nodes: 3,
            pods_per_node: 0,
            objects: Vec::new(),
            listener: default_listener(),
        }
    }
}

/// The pod listener command, for any caller (the CLI, this crate's tests, other crates' tests):
/// `$NETSLEUTH_LAB_LISTENER` (program and args, space-separated) if set; this executable's
/// `lab serve` if it is `netsleuth`; else an `nsl-lab-serve` or `netsleuth` binary next to this
/// executable or one directory up (a test binary in `target/debug/deps` finds
/// `target/debug/nsl-lab-serve` after `cargo build -p lab --bins`).
pub fn default_listener() -> Vec<String> {
    if let Ok(command) = std::env::var("NETSLEUTH_LAB_LISTENER") {
        return command.split_whitespace().map(String::from).collect();
    }
    let netsleuth = |path: &Path| vec![path.display().to_string(), "lab".into(), "serve".into()];
    let Ok(exe) = std::env::current_exe() else {
        return vec!["netsleuth".into(), "lab".into(), "serve".into()];
    };
    if exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("netsleuth"))
    {
        return netsleuth(&exe);
    }
    for dir in exe.ancestors().skip(1).take(2) {
        let standalone = dir.join("nsl-lab-serve");
        if standalone.is_file() {
            return vec![standalone.display().to_string()];
        }
        let cli = dir.join("netsleuth");
        if cli.is_file() {
            return netsleuth(&cli);
        }
    }
    netsleuth(&exe)
}

/// CNI modes the lab can build here (IPIP needs the ipip module; generic has no datapath).
pub const SUPPORTED_CNI: [CniMode; 5] = [
    CniMode::FlannelHostGw,
    CniMode::FlannelVxlan,
    CniMode::CalicoBgp,
    CniMode::CalicoVxlan,
    CniMode::CalicoCrosssubnet,
];

/// Root of all labs' state dirs.
pub fn state_root() -> PathBuf {
    std::env::var_os("NETSLEUTH_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/netsleuth/labs"))
}

/// A lab that exists on this host.
#[derive(Debug, Clone)]
pub struct Lab {
    state: LabState,
    dir: PathBuf,
}

impl Lab {
    /// Builds the lab. On any failure, whatever was created is removed again.
    pub fn up(spec: LabSpec) -> Result<Lab, LabError> {
        validate_name(&spec.name)?;
        if !SUPPORTED_CNI.contains(&spec.cni) {
            return Err(LabError::Invalid(format!(
                "CNI mode {} cannot be emulated here; use one of {}",
                spec.cni,
                SUPPORTED_CNI.map(|m| m.as_str()).join(", ")
            )));
        }
        if !(1..=50).contains(&spec.nodes) {
            return Err(LabError::Invalid(format!(
                "--nodes {} is outside 1..=50",
                spec.nodes
            )));
        }
        let dir = state_root().join(&spec.name);
        if dir.exists() || !sys::netns_with_prefix(&plan::netns_prefix(&spec.name)).is_empty() {
            return Err(LabError::AlreadyExists(spec.name));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        let mut lab = Lab {
            state: LabState {
                name: spec.name.clone(),
                cni: spec.cni,
                nodes: plan::plan_nodes(&spec.name, spec.cni, spec.nodes),
                pods: Vec::new(),
                services: Vec::new(),
                network_policies: Vec::new(),
                listener: spec.listener.clone(),
            },
            dir,
        };
        let built = lab.build(&spec);
        if let Err(err) = built {
            // Leave nothing behind; the build error is the one worth reporting.
            let _ = Lab::down(&spec.name);
            return Err(err);
        }
        Ok(lab)
    }

    fn build(&mut self, spec: &LabSpec) -> Result<(), LabError> {
        let state = &self.state;
        let mut netns = vec![state.underlay_netns(), state.external_netns()];
        netns.extend(state.nodes.iter().map(|n| n.netns.clone()));
        sys::ip_batch(
            None,
            &netns
                .iter()
                .map(|n| format!("netns add {n}"))
                .collect::<Vec<_>>(),
        )?;
        sys::ip_batch(
            Some(&state.underlay_netns()),
            &datapath::underlay_commands(state),
        )?;
        sys::write_sysctls(&state.underlay_netns(), &datapath::underlay_sysctls(state))?;
        let (underlay_ports, external) = datapath::external_commands(state);
        sys::ip_batch(Some(&state.underlay_netns()), &underlay_ports)?;
        sys::ip_batch(Some(&state.external_netns()), &external)?;
        self.start_external_listener()?;
        for node in &state.nodes {
            sys::write_sysctls(&node.netns, &datapath::node_sysctls())?;
            let batches = datapath::node_commands(state, node);
            sys::ip_batch(Some(&node.netns), &batches.ip)?;
            sys::bridge_batch(&node.netns, &batches.bridge)?;
        }
        let mut objects: Vec<LabObject> = state
            .nodes
            .iter()
            .flat_map(|node| {
                (1..=spec.pods_per_node)
                    .map(move |k| LabObject::Pod(Box::new(plan::default_pod(node, k))))
            })
            .collect();
        objects.extend(spec.objects.iter().cloned());
        self.apply(objects)
    }

    /// Opens an existing lab by name.
    pub fn open(name: &str) -> Result<Lab, LabError> {
        validate_name(name)?;
        let dir = state_root().join(name);
        let path = dir.join("lab.json");
        let bytes = std::fs::read(&path).map_err(|_| LabError::NotFound {
            name: name.into(),
            dir: dir.clone(),
        })?;
        let state: LabState = serde_json::from_slice(&bytes).map_err(|e| LabError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Lab { state, dir })
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }
    pub fn name(&self) -> &str {
        &self.state.name
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn inventory_path(&self) -> PathBuf {
        self.dir.join("inventory.json")
    }

    /// Applies pods, services and policies: new pods get a netns, a veth and a listener; existing
    /// pods only take new labels; Services and policies are replaced by name; kube-proxy and policy
    /// rules are re-rendered on every node.
    pub fn apply(&mut self, objects: Vec<LabObject>) -> Result<(), LabError> {
        let mut new_pods = Vec::new();
        for object in objects {
            match object {
                LabObject::Pod(pod) => {
                    let namespace = pod
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if let Some(existing) = self
                        .state
                        .pods
                        .iter_mut()
                        .find(|p| p.namespace() == namespace && p.name() == name)
                    {
                        existing.pod.metadata.labels = pod.metadata.labels.clone();
                    } else {
                        let planned = self.place_pod(*pod)?;
                        self.state.pods.push(planned.clone());
                        new_pods.push(planned);
                    }
                }
                LabObject::Service(service) => {
                    let service = self.assign_service_addresses(*service)?;
                    let key = object_key(&service.metadata);
                    self.state
                        .services
                        .retain(|s| object_key(&s.metadata) != key);
                    self.state.services.push(service);
                }
                LabObject::NetworkPolicy(mut policy) => {
                    policy
                        .metadata
                        .namespace
                        .get_or_insert_with(|| "default".into());
                    let key = object_key(&policy.metadata);
                    self.state
                        .network_policies
                        .retain(|p| object_key(&p.metadata) != key);
                    self.state.network_policies.push(*policy);
                }
            }
        }
        self.save()?;
        self.create_pods(&new_pods)?;
        self.sync_rules()?;
        self.start_listeners(&new_pods)
    }

    fn place_pod(&self, pod: k8s_openapi::api::core::v1::Pod) -> Result<PodPlan, LabError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let key = object_key(&pod.metadata);
        let node = match &spec.node_name {
            Some(wanted) => self.state.node(wanted).ok_or_else(|| {
                LabError::Invalid(format!(
                    "pod {key}: spec.nodeName {wanted:?} is not a node of this lab"
                ))
            })?,
            // Spread like a scheduler with nothing else to go on: the least loaded node first.
            None => self
                .state
                .nodes
                .iter()
                .min_by_key(|n| self.state.pods.iter().filter(|p| p.node == n.name).count())
                .ok_or_else(|| LabError::Invalid("the lab has no nodes".into()))?,
        };
        let host_network = spec.host_network.unwrap_or(false);
        let ip = if host_network {
            node.ip
        } else {
            self.free_pod_ip(node, &key)?
        };
        let (namespace, name) = key.split_once('/').unwrap_or(("default", &key));
        let (netns, host_veth) = if host_network {
            (None, None)
        } else {
            (
                Some(format!(
                    "{}p-{}",
                    plan::netns_prefix(&self.state.name),
                    plan::host_veth_name(self.state.cni, namespace, name)
                )),
                Some(plan::host_veth_name(self.state.cni, namespace, name)),
            )
        };
        Ok(PodPlan {
            pod: plan::complete_pod(pod, node, ip),
            node: node.name.clone(),
            ip,
            netns,
            host_veth,
        })
    }

    fn free_pod_ip(&self, node: &NodePlan, key: &str) -> Result<Ipv4Addr, LabError> {
        node.pod_cidr
            .hosts()
            .skip(1) // .1 is flannel's bridge; calico leaves it unused too
            .find(|ip| !self.state.pods.iter().any(|p| p.ip == *ip))
            .ok_or_else(|| {
                LabError::Invalid(format!(
                    "pod {key}: podCIDR {} of {} is full",
                    node.pod_cidr, node.name
                ))
            })
    }

    fn assign_service_addresses(&self, mut service: Service) -> Result<Service, LabError> {
        service
            .metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        let key = object_key(&service.metadata);
        let previous = self
            .state
            .services
            .iter()
            .find(|s| object_key(&s.metadata) == key);
        let taken_ips: Vec<&str> = self
            .state
            .services
            .iter()
            .filter(|s| object_key(&s.metadata) != key)
            .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref())
            .collect();
        let mut taken_ports: Vec<i32> = self
            .state
            .services
            .iter()
            .filter(|s| object_key(&s.metadata) != key)
            .flat_map(|s| s.spec.iter().flat_map(|spec| spec.ports.iter().flatten()))
            .filter_map(|p| p.node_port)
            .collect();
        let spec = service.spec.get_or_insert_with(Default::default);
        spec.type_.get_or_insert_with(|| "ClusterIP".into());
        let wanted = spec
            .cluster_ip
            .clone()
            .or_else(|| previous.and_then(|p| p.spec.as_ref()?.cluster_ip.clone()));
        let cluster_ip = match wanted {
            Some(ip) if ip == "None" => ip,
            Some(ip) => {
                let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                    LabError::Invalid(format!(
                        "service {key}: spec.clusterIP {ip:?} is not an IPv4 address"
                    ))
                })?;
                if !plan::SERVICE_CIDR.contains(&parsed) || taken_ips.contains(&ip.as_str()) {
                    return Err(LabError::Invalid(format!(
                        "service {key}: spec.clusterIP {ip} is outside {} or already taken",
                        plan::SERVICE_CIDR
                    )));
                }
                ip
            }
            None => plan::SERVICE_CIDR
                .hosts()
                .filter(|ip| *ip >= plan::FIRST_CLUSTER_IP)
                .map(|ip| ip.to_string())
                .find(|ip| !taken_ips.contains(&ip.as_str()))
                .ok_or_else(|| {
                    LabError::Invalid(format!(
                        "service {key}: no free ClusterIP in {}",
                        plan::SERVICE_CIDR
                    ))
                })?,
        };
        spec.cluster_ips = Some(vec![cluster_ip.clone()]);
        spec.cluster_ip = Some(cluster_ip);
        let wants_node_port = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        for port in spec.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".into());
            if wants_node_port && port.node_port.is_none() {
                let free = plan::NODE_PORT_RANGE
                    .clone()
                    .find(|p| !taken_ports.contains(p))
                    .ok_or_else(|| LabError::Invalid(format!("service {key}: no free NodePort")))?;
                port.node_port = Some(free);
            }
            taken_ports.extend(port.node_port);
        }
        Ok(service)
    }

    fn create_pods(&self, pods: &[PodPlan]) -> Result<(), LabError> {
        let netns: Vec<String> = pods
            .iter()
            .filter_map(|p| p.netns.as_ref())
            .map(|n| format!("netns add {n}"))
            .collect();
        sys::ip_batch(None, &netns)?;
        for node in &self.state.nodes {
            let local: Vec<&PodPlan> = pods.iter().filter(|p| p.node == node.name).collect();
            let commands: Vec<String> = local
                .iter()
                .flat_map(|p| datapath::pod_host_commands(self.state.cni, p))
                .collect();
            sys::ip_batch(Some(&node.netns), &commands)?;
            let sysctls: Vec<sys::Sysctl> = local
                .iter()
                .flat_map(|p| datapath::pod_host_sysctls(self.state.cni, p))
                .collect();
            if !sysctls.is_empty() {
                sys::write_sysctls(&node.netns, &sysctls)?;
            }
        }
        // Pods are independent: configure them concurrently (process start-up dominates).
        std::thread::scope(|scope| {
            let workers: Vec<_> = pods
                .iter()
                .filter_map(|pod| {
                    let netns = pod.netns.as_ref()?;
                    let node = self.state.node(&pod.node)?;
                    let commands = datapath::pod_commands(self.state.cni, node, pod);
                    Some(scope.spawn(move || sys::ip_batch(Some(netns), &commands)))
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(LabError::Invalid("pod setup thread panicked".into())))
            })
        })
    }

    fn listener_program(&self) -> Result<(&String, &[String]), LabError> {
        self.state
            .listener
            .split_first()
            .ok_or_else(|| LabError::Invalid("no listener program configured".into()))
    }

    /// The host outside the cluster echoes on the pods' default port, TCP and UDP.
    fn start_external_listener(&self) -> Result<(), LabError> {
        let (program, leading) = self.listener_program()?;
        let mut args = leading.to_vec();
        args.extend(
            [crate::Transport::Tcp, crate::Transport::Udp].map(|transport| {
                crate::ListenPort {
                    port: plan::DEFAULT_POD_PORT as u16,
                    transport,
                }
                .to_string()
            }),
        );
        let mut child =
            sys::spawn_detached(&self.state.external_netns(), Path::new(program), &args)?;
        sys::wait_ready(&mut child, "listener of the external host")
    }

    fn start_listeners(&self, pods: &[PodPlan]) -> Result<(), LabError> {
        let (program, leading) = self.listener_program()?;
        let mut started = Vec::new();
        for pod in pods {
            let ports = pod.listen_ports();
            if ports.is_empty() {
                continue;
            }
            let netns = pod.netns.clone().unwrap_or_else(|| {
                self.state
                    .node(&pod.node)
                    .map(|n| n.netns.clone())
                    .unwrap_or_default()
            });
            let mut args = leading.to_vec();
            args.extend(ports.iter().map(|p| p.to_string()));
            started.push((
                pod.key(),
                sys::spawn_detached(&netns, Path::new(program), &args)?,
            ));
        }
        for (key, child) in &mut started {
            sys::wait_ready(child, &format!("listener of pod {key}"))?;
        }
        Ok(())
    }

    /// Renders and applies kube-proxy's and the policy rules on every node (`iptables-restore`
    /// replaces the filter and nat tables, so hand-added rules vanish as they would when
    /// kube-proxy resyncs).
    pub fn sync_rules(&self) -> Result<(), LabError> {
        let slices = self.state.endpoint_slices();
        self.apply_kube_proxy(&slices)
    }

    /// Applies kube-proxy rules rendered from `slices` (which faults may make disagree with the
    /// EndpointSlices the lab publishes) plus the policy rules.
    pub(crate) fn apply_kube_proxy(
        &self,
        slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
    ) -> Result<(), LabError> {
        let rules_dir = self.dir.join("iptables");
        std::fs::create_dir_all(&rules_dir)
            .map_err(|e| LabError::io(format!("creating {}", rules_dir.display()), e))?;
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .state
                .nodes
                .iter()
                .map(|node| {
                    let rules_dir = &rules_dir;
                    scope.spawn(move || {
                        let input = kube_proxy::KubeProxyInput {
                            node_name: node.name.clone(),
                            cluster_cidr: Some(plan::CLUSTER_CIDR),
                            services: self.state.services.clone(),
                            endpoint_slices: slices.to_vec(),
                        };
                        let proxy_rules = kube_proxy::render_kube_proxy_iptables(&input);
                        let policy_rules = policy::render_policy_iptables(&self.state, &node.name);
                        let path = rules_dir.join(format!("{}.rules", node.name));
                        std::fs::write(&path, format!("{proxy_rules}{policy_rules}"))
                            .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
                        sys::iptables_restore(&node.netns, &proxy_rules, false)?;
                        sys::iptables_restore(&node.netns, &policy_rules, true)
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(LabError::Invalid("rule sync thread panicked".into())))
            })
        })
    }

    fn save(&self) -> Result<(), LabError> {
        let write = |name: &str, bytes: Vec<u8>| {
            let path = self.dir.join(name);
            std::fs::write(&path, bytes)
                .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
        };
        let state_error = |e: serde_json::Error| LabError::State {
            path: self.dir.clone(),
            message: e.to_string(),
        };
        write(
            "lab.json",
            serde_json::to_vec_pretty(&self.state).map_err(state_error)?,
        )?;
        write(
            "inventory.json",
            serde_json::to_vec_pretty(&self.state.inventory()).map_err(state_error)?,
        )?;
        write("topology.txt", self.status().to_string().into_bytes())
    }

    /// Removes the lab `name`: kills its processes, deletes its netns (and with them every device),
    /// deletes its state dir. Succeeds when there is nothing left to remove.
    pub fn down(name: &str) -> Result<(), LabError> {
        validate_name(name)?;
        sys::delete_netns(&sys::netns_with_prefix(&plan::netns_prefix(name)))?;
        let dir = state_root().join(name);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LabError::io(format!("removing {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Removes every lab, including what crashed runs left (any `nsl-` netns, any state dir).
    pub fn down_all() -> Result<Vec<String>, LabError> {
        let netns = sys::netns_with_prefix(crate::NETNS_PREFIX);
        sys::delete_netns(&netns)?;
        let root = state_root();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(netns)
    }

    /// The netns of `NODE`, `node/NODE` or `NAMESPACE/POD` (hostNetwork pods: their node's).
    pub fn netns_of(&self, target: &str) -> Result<String, LabError> {
        if target == EXTERNAL_TARGET || target.parse() == Ok(plan::EXTERNAL_ADDRESS) {
            return Ok(self.state.external_netns());
        }
        let target_name = target.strip_prefix("node/").unwrap_or(target);
        if let Some(node) = self.state.node(target_name) {
            return Ok(node.netns.clone());
        }
        if let Some((namespace, name)) = target.split_once('/') {
            if let Some(pod) = self.state.pod(namespace, name) {
                return self.pod_netns(pod);
            }
        }
        if let Ok(ip) = target.parse::<Ipv4Addr>() {
            if let Some(node) = self.state.nodes.iter().find(|n| n.ip == ip) {
                return Ok(node.netns.clone());
            }
            if let Some(pod) = self
                .state
                .pods
                .iter()
                .find(|p| p.ip == ip && p.netns.is_some())
            {
                return self.pod_netns(pod);
            }
        }
        Err(LabError::UnknownEndpoint(target.into()))
    }

    fn pod_netns(&self, pod: &PodPlan) -> Result<String, LabError> {
        match &pod.netns {
            Some(netns) => Ok(netns.clone()),
            None => self.netns_of(&pod.node),
        }
    }

    /// The address traffic to `target` goes to: an IP, a pod's IP, a node's IP, a ClusterIP.
    pub fn address_of(&self, target: &str) -> Result<Ipv4Addr, LabError> {
        if target == EXTERNAL_TARGET {
            return Ok(plan::EXTERNAL_ADDRESS);
        }
        if let Ok(ip) = target.parse() {
            return Ok(ip);
        }
        if let Some(rest) = target.strip_prefix("service/") {
            let (namespace, name) = rest
                .split_once('/')
                .ok_or_else(|| LabError::UnknownEndpoint(target.into()))?;
            return self
                .state
                .service(namespace, name)
                .and_then(|s| s.spec.as_ref()?.cluster_ip.as_ref()?.parse().ok())
                .ok_or_else(|| LabError::UnknownEndpoint(target.into()));
        }
        let node_name = target.strip_prefix("node/").unwrap_or(target);
        if let Some(node) = self.state.node(node_name) {
            return Ok(node.ip);
        }
        let (namespace, name) = target
            .split_once('/')
            .ok_or_else(|| LabError::UnknownEndpoint(target.into()))?;
        self.state
            .pod(namespace, name)
            .map(|p| p.ip)
            .ok_or_else(|| LabError::UnknownEndpoint(target.into()))
    }

    /// Sends real traffic per `request` and reports what the kernel did.
    pub fn probe(
        &self,
        request: &ProbeRequest,
        timeout: Duration,
    ) -> Result<ProbeOutcome, LabError> {
        let src_netns = self.netns_of(&request.src)?;
        let dst_ip = self.address_of(&request.dst)?;
        let (reachable, detail) = crate::probe::send_probe(&src_netns, dst_ip, request, timeout)?;
        Ok(ProbeOutcome {
            reachable,
            detail,
            src_netns,
            dst_ip,
        })
    }

    /// Runs `command` inside `target`'s netns with the caller's stdio; returns its exit code.
    pub fn exec(&self, target: &str, command: &[String]) -> Result<i32, LabError> {
        let netns = self.netns_of(target)?;
        let (program, args) = command
            .split_first()
            .ok_or_else(|| LabError::Invalid("no command given".into()))?;
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(program)
            .args(args)
            .status()
            .map_err(|e| LabError::io(format!("running {program} in {netns}"), e))?;
        // A signal-killed command has no code; report it as the shell does (128 + signal).
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// What the lab consists of.
    pub fn status(&self) -> crate::status::LabStatus {
        crate::status::LabStatus::of(&self.state)
    }
}

/// `netsleuth lab` names become netns and directory names: keep them short and plain.
/// Probe / exec target naming the host outside the cluster.
pub const EXTERNAL_TARGET: &str = "external";

pub fn validate_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "lab name {name:?} must be 1-24 characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}
