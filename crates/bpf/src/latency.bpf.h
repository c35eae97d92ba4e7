/* Shared by the latency probes (kernellatency, netiftxlat, socketlatency, netsoftirq,
 * biolatency): the slow threshold set by the loader and the exact threshold counters that sit
 * beside each log2 histogram. Log2 bucket bounds are powers of two, so "more than 1 ms / the
 * slow threshold / 100 ms" cannot be read off the histogram; these counters are KubeSkoop's
 * read1ms, rxslow, *slow100ms ... counted exactly, in the kernel, whether or not events are on.
 * Must not hold probe-specific logic. Includes common.bpf.h; a probe includes this instead. */
#ifndef NETSLEUTH_LATENCY_BPF_H
#define NETSLEUTH_LATENCY_BPF_H

#include "common.bpf.h"

#define NSEC_PER_MSEC 1000000ULL

/* Set by the loader (Options::slow_threshold): slower samples become events and count as slow. */
const volatile __u64 slow_threshold_ns = 10000000;

/* Index of a threshold in struct ns_threshold_key; mirrored by SlowCounts (src/stats.rs). */
enum ns_latency_threshold {
	NS_OVER_1MS = 0,
	NS_OVER_SLOW_THRESHOLD = 1,
	NS_OVER_100MS = 2,
};

/* Keyed like the histograms ({scope, scope_cookie, kind}) plus which threshold was passed. */
struct ns_threshold_key {
	__u64 scope_cookie;
	__u32 scope;
	__u16 kind;
	__u16 threshold;
};

#define DEFINE_THRESHOLD_MAP(name, entries) \
	DEFINE_PERCPU_HASH_MAP(name, entries, struct ns_threshold_key, __u64)

/* Strictly slower, as KubeSkoop compares (latency > threshold). */
static __always_inline bool is_slow(__u64 ns)
{
	return ns > slow_threshold_ns;
}

static __always_inline void count_over(void *thresholds, __u32 scope, __u64 scope_cookie, __u16 kind,
				       __u16 threshold)
{
	struct ns_threshold_key key = {
		.scope_cookie = scope_cookie,
		.scope = scope,
		.kind = kind,
		.threshold = threshold,
	};
	counter_add(thresholds, &key, 1);
}

/* Records one sample in the histogram and in every threshold it passes (the counts are
 * cumulative: a 200 ms sample counts over 1 ms, over the slow threshold and over 100 ms).
 * Returns whether the sample is slow, i.e. a candidate event. */
static __always_inline bool latency_record(void *histogram, void *thresholds, __u32 scope, __u64 scope_cookie,
					   __u16 kind, __u64 ns)
{
	hist_record(histogram, scope, scope_cookie, kind, ns);
	if (ns > NSEC_PER_MSEC)
		count_over(thresholds, scope, scope_cookie, kind, NS_OVER_1MS);
	if (ns > 100 * NSEC_PER_MSEC)
		count_over(thresholds, scope, scope_cookie, kind, NS_OVER_100MS);
	if (!is_slow(ns))
		return false;
	count_over(thresholds, scope, scope_cookie, kind, NS_OVER_SLOW_THRESHOLD);
	return true;
}

#endif
