/* netsoftirq: how long NET_RX / NET_TX softirqs wait between being raised and starting
 * (irq:softirq_raise -> irq:softirq_entry) and how long they run (softirq_entry ->
 * softirq_exit), as per-vector log2 histograms, with sampled events above a threshold.
 * A softirq is raised and run on the same CPU, so per-CPU timestamps need no keys or locks. */
#include "latency.bpf.h"

#define NET_TX_SOFTIRQ 2
#define NET_RX_SOFTIRQ 3

enum ns_softirq_phase {
	PHASE_WAIT = 0,
	PHASE_RUN = 1,
};

struct ns_softirq_vector_times {
	__u64 raised_ns;
	__u64 entered_ns;
};

struct ns_softirq_times {
	struct ns_softirq_vector_times net_tx;
	struct ns_softirq_vector_times net_rx;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ns_softirq_times);
} softirq_times SEC(".maps");

/* 2 vectors x 2 phases x 64 slots (x 3 thresholds). */
DEFINE_HISTOGRAM_MAP(softirq_latency, 256);
DEFINE_THRESHOLD_MAP(softirq_slow, 256);

struct ns_softirq_event {
	__u64 timestamp_ns;
	__u64 latency_ns;
	__u32 cpu;
	__u16 vector;
	__u16 phase;
};

/* This CPU's timestamps for a networking vector, NULL for the other vectors. Branches, not an
 * index, so the verifier sees the bounds. */
static __always_inline struct ns_softirq_vector_times *times_for(unsigned int vec)
{
	__u32 zero = 0;
	if (vec != NET_TX_SOFTIRQ && vec != NET_RX_SOFTIRQ)
		return NULL;
	struct ns_softirq_times *times = bpf_map_lookup_elem(&softirq_times, &zero);
	if (!times)
		return NULL;
	return vec == NET_RX_SOFTIRQ ? &times->net_rx : &times->net_tx;
}

static __always_inline void record(unsigned int vec, __u16 phase, __u64 latency, __u64 now)
{
	if (!latency_record(&softirq_latency, &softirq_slow, vec, 0, phase, latency) || !event_sampled())
		return;
	struct ns_softirq_event event = {
		.timestamp_ns = now,
		.latency_ns = latency,
		.cpu = bpf_get_smp_processor_id(),
		.vector = vec,
		.phase = phase,
	};
	submit_event(&event, sizeof(event));
}

SEC("tp_btf/softirq_raise")
int BPF_PROG(on_softirq_raise, unsigned int vec)
{
	struct ns_softirq_vector_times *times = times_for(vec);
	/* Only the first raise counts: later raises join the same pending run. */
	if (times && !times->raised_ns)
		times->raised_ns = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(on_softirq_entry, unsigned int vec)
{
	struct ns_softirq_vector_times *times = times_for(vec);
	if (!times)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 raised = times->raised_ns;
	times->raised_ns = 0;
	times->entered_ns = now;
	if (raised)
		record(vec, PHASE_WAIT, now - raised, now);
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(on_softirq_exit, unsigned int vec)
{
	struct ns_softirq_vector_times *times = times_for(vec);
	if (!times)
		return 0;
	__u64 entered = times->entered_ns;
	times->entered_ns = 0;
	if (entered) {
		__u64 now = bpf_ktime_get_ns();
		record(vec, PHASE_RUN, now - entered, now);
	}
	return 0;
}
