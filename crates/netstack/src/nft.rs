//! nftables (`nft -j list ruleset`) evaluation with the same verdict and trace shapes as
//! [`crate::iptables`]. Not built yet (issue #2): until it is, rulesets that exist only in nft
//! form are not evaluated, and `state.nftables` is carried in snapshots unread.
