/* socketlatency: how long received data waits in a socket before the application reads it,
 * from sock:sk_data_ready (data became readable; the first unread arrival is kept) to
 * sock:sock_recv_length (a read returned data), as log2 histograms per {netns, protocol},
 * with sampled events for slow readers naming the socket's tuple and the reading task.
 * Entries are keyed by socket address in a bounded LRU and dropped when a TCP socket closes
 * (sock:inet_sock_set_state), so a reused address does not inherit a stale timestamp. */
#include "latency.bpf.h"

#define MSG_PEEK 2
#define TCP_CLOSE 7

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} unread_since SEC(".maps");

DEFINE_HISTOGRAM_MAP(read_latency, 16384);
DEFINE_THRESHOLD_MAP(read_slow, 16384);

struct ns_sock_event {
	__u64 timestamp_ns;
	__u64 latency_ns;
	__u32 netns;
	__u32 tgid;
	char comm[16];
	struct ns_tuple tuple;
};

SEC("tp_btf/sk_data_ready")
int BPF_PROG(on_sk_data_ready, const struct sock *sk)
{
	__u64 key = (__u64)sk;
	__u64 now = bpf_ktime_get_ns();
	/* NOEXIST: older unread data keeps its (earlier) timestamp. */
	bpf_map_update_elem(&unread_since, &key, &now, BPF_NOEXIST);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(on_sock_recv_length, struct sock *sk, int ret, int flags)
{
	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	__u64 key = (__u64)sk;
	__u64 *since = bpf_map_lookup_elem(&unread_since, &key);
	if (!since)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = now - *since;
	bpf_map_delete_elem(&unread_since, &key);
	struct ns_netns netns = netns_of_sock(sk);
	if (!latency_record(&read_latency, &read_slow, netns.inum, netns.cookie, sk->sk_protocol, latency) || !event_sampled())
		return 0;
	struct ns_sock_event event = {
		.timestamp_ns = now,
		.latency_ns = latency,
		.netns = netns.inum,
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};
	bpf_get_current_comm(event.comm, sizeof(event.comm));
	tuple_from_sock(sk, &event.tuple);
	submit_event(&event, sizeof(event));
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (newstate == TCP_CLOSE) {
		__u64 key = (__u64)sk;
		bpf_map_delete_elem(&unread_since, &key);
	}
	return 0;
}
