//! The Linux datapath as data and as a simulator.
//!
//! This crate owns two things:
//! - [`state`]: the per-network-namespace state that a collector gathers (links, addresses, routes,
//!   rules, neighbours, FDB, sysctls, raw iptables-save / nft / ipset / IPVS text, conntrack,
//!   listening sockets). It is the netns half of the snapshot format.
//! - the simulator: given that state and a [`packet::Packet`], decide what the kernel would do —
//!   netfilter ([`iptables`], [`nft`]), routing ([`fib`]), connection tracking ([`conntrack`]) and
//!   IPVS ([`ipvs`]).
//!
//! It must not do I/O and must not know about Kubernetes: names of pods, Services or CNIs never
//! appear here. Everything is deterministic: the same state and packet give the same answer.

pub mod conntrack;
pub mod fib;
pub mod ipset;
pub mod iptables;
pub mod ipvs;
pub mod netfilter;
pub mod nft;
pub mod packet;
pub mod state;
