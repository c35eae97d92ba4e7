/* tcpreset: TCP resets sent (tcp:tcp_send_reset, with or without a socket: no socket means
 * nothing listened) and received (tcp:tcp_receive_reset), counted per {netns, direction, socket
 * state}, with sampled events carrying the connection's tuple seen from this host (src = local
 * end) and, for sent resets, the kernel's reset reason (enum sk_rst_reason, 6.10+). */
#include "common.bpf.h"

enum ns_reset_kind {
	RESET_SENT_NO_SOCKET = 0,
	RESET_SENT = 1,
	RESET_RECEIVED = 2,
};

struct ns_reset_key {
	struct ns_netns netns;
	__u16 kind;
	__u16 state;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ns_reset_key);
	__type(value, __u64);
} reset_counts SEC(".maps");

struct ns_reset_event {
	__u64 timestamp_ns;
	__u32 netns;
	__u16 kind;
	__u16 state;
	__u32 reason;
	__u32 pad;
	struct ns_tuple tuple;
};

static __always_inline void record(const struct sock *sk, const struct sk_buff *skb, __u16 kind, __u32 reason)
{
	struct ns_reset_key key = { .kind = kind };
	if (sk) {
		key.netns = netns_of_sock(sk);
		key.state = sk->__sk_common.skc_state;
	} else if (skb) {
		key.netns = netns_of_skb(skb);
	}
	counter_add(&reset_counts, &key, 1);
	if (!event_sampled())
		return;
	struct ns_reset_event event = {
		.timestamp_ns = bpf_ktime_get_ns(),
		.netns = key.netns.inum,
		.kind = kind,
		.state = key.state,
		.reason = reason,
	};
	if (sk) {
		tuple_from_sock(sk, &event.tuple);
	} else if (skb) {
		/* The skb is the segment that hit no socket: its destination is the local end. */
		const unsigned char *l3 = skb_network_header_or_null(skb);
		if (l3) {
			tuple_from_l3(l3, bpf_ntohs(skb->protocol), &event.tuple);
			tuple_swap(&event.tuple);
		}
	}
	event.tuple.protocol = IPPROTO_TCP;
	submit_event(&event, sizeof(event));
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_tcp_send_reset, const struct sock *sk, const struct sk_buff *skb, enum sk_rst_reason reason)
{
	record(sk, skb, sk ? RESET_SENT : RESET_SENT_NO_SOCKET, reason);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_tcp_receive_reset, struct sock *sk)
{
	record(sk, NULL, RESET_RECEIVED, 0);
	return 0;
}
