/* tcpretrans: every retransmitted TCP segment (tcp:tcp_retransmit_skb) counted per {netns,
 * socket state}, with sampled events carrying the connection tuple (src = local end). The
 * socket comes typed from BTF, so no hand-written tracepoint layout can drift (KubeSkoop's did
 * when 5.6 added `family`). */
#include "common.bpf.h"

struct ns_retrans_key {
	struct ns_netns netns;
	__u32 state;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ns_retrans_key);
	__type(value, __u64);
} retrans_counts SEC(".maps");

struct ns_retrans_event {
	__u64 timestamp_ns;
	__u32 netns;
	__u32 state;
	struct ns_tuple tuple;
};

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_tcp_retransmit_skb, const struct sock *sk, const struct sk_buff *skb)
{
	struct ns_retrans_key key = {
		.netns = netns_of_sock(sk),
		.state = sk->__sk_common.skc_state,
	};
	counter_add(&retrans_counts, &key, 1);
	if (!event_sampled())
		return 0;
	struct ns_retrans_event event = {
		.timestamp_ns = bpf_ktime_get_ns(),
		.netns = key.netns.inum,
		.state = key.state,
	};
	tuple_from_sock(sk, &event.tuple);
	submit_event(&event, sizeof(event));
	return 0;
}
