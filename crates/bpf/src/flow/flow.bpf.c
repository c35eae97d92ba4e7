/* flow: bytes and packets per {netns, direction, 5-tuple} at the device layer
 * (net:net_dev_queue for egress, net:netif_receive_skb for ingress), in a bounded per-CPU LRU
 * hash: the least recently seen flows are evicted when it is full. Bytes are IP bytes (L3
 * header + payload) so egress and ingress of the same packet agree; a GSO skb counts as its
 * segment count. The host netns is skipped unless asked (pods are the point). */
#include "common.bpf.h"

enum ns_flow_direction {
	FLOW_EGRESS = 0,
	FLOW_INGRESS = 1,
};

/* 0 = count every netns. */
const volatile __u64 skip_netns = 0;

struct ns_flow_key {
	struct ns_tuple tuple;
	struct ns_netns netns;
	__u32 direction;
	__u32 pad;
};

struct ns_flow_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ns_flow_key);
	__type(value, struct ns_flow_value);
} flows SEC(".maps");

static __always_inline void count(const struct sk_buff *skb, const unsigned char *l3, __u32 direction)
{
	struct ns_flow_key key = { .direction = direction, .netns = netns_of_dev(skb->dev) };
	if (!l3 || (skip_netns && key.netns.inum == skip_netns))
		return;
	__u32 bytes = tuple_from_l3(l3, bpf_ntohs(skb->protocol), &key.tuple);
	if (!bytes)
		return;
	__u64 packets = 1;
	struct skb_shared_info *shinfo = (struct skb_shared_info *)(skb->head + skb->end);
	__u16 gso_segs = 0;
	if (!bpf_probe_read_kernel(&gso_segs, sizeof(gso_segs), &shinfo->gso_segs) && gso_segs > 1)
		packets = gso_segs;
	struct ns_flow_value *value = bpf_map_lookup_elem(&flows, &key);
	if (value) {
		value->packets += packets;
		value->bytes += bytes;
		return;
	}
	/* The LRU evicts to make room, so an insert only fails under memory pressure. */
	struct ns_flow_value init = { .packets = packets, .bytes = bytes };
	if (bpf_map_update_elem(&flows, &key, &init, BPF_ANY))
		count_stat(NS_STAT_MAP_FULL);
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(on_net_dev_queue, struct sk_buff *skb)
{
	count(skb, skb_network_header_or_null(skb), FLOW_EGRESS);
	return 0;
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(on_netif_receive_skb, struct sk_buff *skb)
{
	/* eth_type_trans has pulled the link header: data is the network header; the stack
	 * sets network_header only after this tracepoint. */
	count(skb, skb->data, FLOW_INGRESS);
	return 0;
}
