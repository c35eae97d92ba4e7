//! Reads network namespace state (netlink, procfs, iptables-save, nft) and Kubernetes objects
//! into a snapshot, deciding nothing. Not built yet (issue #3): `netsleuth collect` and
//! `diagnose --lab` say so.
