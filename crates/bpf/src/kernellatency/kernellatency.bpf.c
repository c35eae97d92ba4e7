/* kernellatency: receive-path latency inside the kernel, from net:netif_receive_skb to
 * (a) TCP socket processing (tcp:tcp_probe, fired by tcp_rcv_established) and
 * (b) the first copy to user space (skb:skb_copy_datagram_iovec, any protocol),
 * as log2 histograms per netns, with sampled events for slow packets. No tracepoint marks UDP
 * socket enqueue, so UDP is only covered by (b), which includes the time queued in the socket.
 * In-flight skbs sit in a bounded LRU keyed by address; the skb's data head is kept too, so a
 * recycled address (an skb freed on a path we do not see) is not mistaken for the old one. */
#include "latency.bpf.h"

enum ns_rx_stage {
	RX_TO_TCP = 0,
	RX_TO_USER_COPY = 1,
};

struct ns_rx_start {
	__u64 received_ns;
	__u64 head;
	struct ns_netns netns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ns_rx_start);
} rx_in_flight SEC(".maps");

DEFINE_HISTOGRAM_MAP(rx_latency, 16384);
DEFINE_THRESHOLD_MAP(rx_slow, 16384);

struct ns_rx_event {
	__u64 timestamp_ns;
	__u64 latency_ns;
	__u32 netns;
	__u32 stage;
	struct ns_tuple tuple;
};

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(on_netif_receive_skb, struct sk_buff *skb)
{
	__u64 key = (__u64)skb;
	struct ns_rx_start start = {
		.received_ns = bpf_ktime_get_ns(),
		.head = (__u64)skb->head,
		.netns = netns_of_dev(skb->dev),
	};
	bpf_map_update_elem(&rx_in_flight, &key, &start, BPF_ANY);
	return 0;
}

static __always_inline void record(const struct sk_buff *skb, __u32 stage, bool done)
{
	__u64 key = (__u64)skb;
	struct ns_rx_start *start = bpf_map_lookup_elem(&rx_in_flight, &key);
	if (!start)
		return;
	if (start->head != (__u64)skb->head) {
		bpf_map_delete_elem(&rx_in_flight, &key);
		return;
	}
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = now - start->received_ns;
	struct ns_netns netns = start->netns;
	if (done)
		bpf_map_delete_elem(&rx_in_flight, &key);
	if (!latency_record(&rx_latency, &rx_slow, netns.inum, netns.cookie, stage, latency) || !event_sampled())
		return;
	struct ns_rx_event event = {
		.timestamp_ns = now,
		.latency_ns = latency,
		.netns = netns.inum,
		.stage = stage,
	};
	const unsigned char *l3 = skb_network_header_or_null(skb);
	if (l3)
		tuple_from_l3(l3, bpf_ntohs(skb->protocol), &event.tuple);
	submit_event(&event, sizeof(event));
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	/* Keep the entry: the same skb may later be copied to user space. */
	record(skb, RX_TO_TCP, false);
	return 0;
}

SEC("tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(on_skb_copy_datagram_iovec, const struct sk_buff *skb, int len)
{
	record(skb, RX_TO_USER_COPY, true);
	return 0;
}
