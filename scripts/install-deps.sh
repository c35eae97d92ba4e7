#!/usr/bin/env bash
# Installs the system packages netsleuth's build and tests use, where missing. A fresh machine
# starts bare; this is idempotent and quick when everything is there.
set -euo pipefail

# command-or-file to check → Debian package that provides it
declare -A NEED=(
  [ip]=iproute2
  [iptables]=iptables
  [nft]=nftables
  [ipset]=ipset
  [conntrack]=conntrack
  [clang]=clang
  [llvm-strip]=llvm
  [/usr/include/bpf/bpf_helpers.h]=libbpf-dev
  [bpftool]=bpftool
  [bpftrace]=bpftrace
  [tcpdump]=tcpdump
  [tshark]=tshark
  [prometheus]=prometheus
  [promtool]=prometheus
  [prometheus-node-exporter]=prometheus-node-exporter
  [ping]=iputils-ping
  [python3]=python3-minimal
  [rsvg-convert]=librsvg2-bin
  # the agent's CRI client (k8s-cri compiles the CRI protos) and its test against a real runtime
  [protoc]=protobuf-compiler
  [containerd]=containerd
  [runc]=runc
  [/usr/lib/cni/bridge]=containernetworking-plugins
)

missing=()
for what in "${!NEED[@]}"; do
  if [[ $what == /* ]]; then [[ -e $what ]] && continue
  else command -v "$what" >/dev/null 2>&1 && continue
  fi
  missing+=("${NEED[$what]}")
done

if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "install-deps: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tracefs for tracepoint probes (tp_btf/raw_tp need none, classic tracepoints do).
if [[ ! -e /sys/kernel/tracing/events ]] && [[ $(id -u) -eq 0 ]]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
