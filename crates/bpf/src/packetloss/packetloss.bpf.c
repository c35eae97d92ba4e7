/* packetloss: every skb freed as a drop (skb:kfree_skb, which since 5.17 carries the drop
 * reason) is counted per {netns (inode and cookie), reason, L3 protocol, L4 protocol} in a
 * per-CPU hash; a token-bucket sample of drops is pushed as events (netns inode only) with the
 * 5-tuple and, optionally, the kernel stack. Reason names are resolved in user space from the
 * running kernel's BTF. */
#include "common.bpf.h"

#define MAX_STACK_DEPTH 16

const volatile __u64 capture_stack = 0;

struct ns_drop_key {
	struct ns_netns netns;
	__u32 reason;
	__u16 l3_protocol;
	__u8 l4_protocol;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ns_drop_key);
	__type(value, __u64);
} drop_counts SEC(".maps");

struct ns_drop_event {
	__u64 timestamp_ns;
	__u64 location;
	__u32 netns;
	__u32 reason;
	__u32 ifindex;
	__u16 l3_protocol;
	__u16 stack_depth;
	struct ns_tuple tuple;
	__u64 stack[MAX_STACK_DEPTH];
};

/* The L4 protocol costs one small read of the IP header: byte 0 (version), 6 (v6 next
 * header) and 9 (v4 protocol). */
static __always_inline __u8 l4_protocol_of(const unsigned char *l3, __u16 l3_protocol)
{
	__u8 head[10];
	if (!l3 || bpf_probe_read_kernel(head, sizeof(head), l3))
		return 0;
	if (l3_protocol == ETH_P_IP && (head[0] >> 4) == 4)
		return head[9];
	if (l3_protocol == ETH_P_IPV6 && (head[0] >> 4) == 6)
		return head[6];
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	const unsigned char *l3 = skb_network_header_or_null(skb);
	struct ns_drop_key key = {
		.netns = netns_of_skb(skb),
		.reason = reason,
		.l3_protocol = bpf_ntohs(skb->protocol),
	};
	key.l4_protocol = l4_protocol_of(l3, key.l3_protocol);
	counter_add(&drop_counts, &key, 1);

	if (!event_sampled())
		return 0;
	struct ns_drop_event event = {
		.timestamp_ns = bpf_ktime_get_ns(),
		.location = (__u64)location,
		.netns = key.netns.inum,
		.reason = reason,
		.l3_protocol = key.l3_protocol,
	};
	struct net_device *dev = skb->dev;
	if (dev)
		event.ifindex = dev->ifindex;
	if (l3)
		tuple_from_l3(l3, key.l3_protocol, &event.tuple);
	if (capture_stack) {
		long bytes = bpf_get_stack(ctx, event.stack, sizeof(event.stack), 0);
		if (bytes > 0)
			event.stack_depth = bytes / sizeof(__u64);
	}
	submit_event(&event, sizeof(event));
	return 0;
}
