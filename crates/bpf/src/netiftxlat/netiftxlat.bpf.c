/* netiftxlat: transmit latency per device netns, split where tracepoints allow: time in the
 * qdisc (net:net_dev_queue -> net:net_dev_start_xmit) and in the driver (net_dev_start_xmit ->
 * net_dev_xmit), as log2 histograms, with sampled events for slow packets.
 * In-flight skbs sit in a bounded LRU keyed by address. net_dev_queue overwrites the entry
 * and net_dev_xmit deletes it, so a recycled skb address cannot inherit an old timestamp
 * (KubeSkoop's map was never cleaned and produced false 100 ms events). */
#include "latency.bpf.h"

enum ns_tx_stage {
	STAGE_QDISC = 0,
	STAGE_DRIVER = 1,
};

struct ns_tx_times {
	__u64 queued_ns;
	__u64 started_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ns_tx_times);
} tx_in_flight SEC(".maps");

DEFINE_HISTOGRAM_MAP(tx_latency, 16384);
DEFINE_THRESHOLD_MAP(tx_slow, 16384);

struct ns_tx_event {
	__u64 timestamp_ns;
	__u64 latency_ns;
	__u32 netns;
	__u32 ifindex;
	__u32 stage;
	__u32 pad;
	struct ns_tuple tuple;
};

static __always_inline void record(const struct sk_buff *skb, const struct net_device *dev, __u32 stage,
				   __u64 latency, __u64 now)
{
	struct ns_netns netns = netns_of_dev(dev);
	if (!latency_record(&tx_latency, &tx_slow, netns.inum, netns.cookie, stage, latency) || !event_sampled())
		return;
	struct ns_tx_event event = {
		.timestamp_ns = now,
		.latency_ns = latency,
		.netns = netns.inum,
		.ifindex = dev ? dev->ifindex : 0,
		.stage = stage,
	};
	/* skb is NULL after the driver took it (it may be freed): no tuple then. */
	const unsigned char *l3 = skb ? skb_network_header_or_null(skb) : NULL;
	if (l3)
		tuple_from_l3(l3, bpf_ntohs(skb->protocol), &event.tuple);
	submit_event(&event, sizeof(event));
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(on_net_dev_queue, struct sk_buff *skb)
{
	__u64 key = (__u64)skb;
	struct ns_tx_times times = { .queued_ns = bpf_ktime_get_ns() };
	bpf_map_update_elem(&tx_in_flight, &key, &times, BPF_ANY);
	return 0;
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(on_net_dev_start_xmit, const struct sk_buff *skb, const struct net_device *dev)
{
	__u64 key = (__u64)skb;
	struct ns_tx_times *times = bpf_map_lookup_elem(&tx_in_flight, &key);
	if (!times)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (times->queued_ns && !times->started_ns)
		record(skb, dev, STAGE_QDISC, now - times->queued_ns, now);
	times->started_ns = now;
	return 0;
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(on_net_dev_xmit, struct sk_buff *skb, int rc, struct net_device *dev, unsigned int len)
{
	__u64 key = (__u64)skb;
	struct ns_tx_times *times = bpf_map_lookup_elem(&tx_in_flight, &key);
	if (!times)
		return 0;
	__u64 started = times->started_ns;
	bpf_map_delete_elem(&tx_in_flight, &key);
	if (started) {
		__u64 now = bpf_ktime_get_ns();
		record(NULL, dev, STAGE_DRIVER, now - started, now);
	}
	return 0;
}
