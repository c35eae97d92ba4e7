/* Shared by every probe: kernel types, the event ring buffer with its in-kernel token-bucket
 * sampler and loss counters, netns/tuple readers and log2 histogram slots.
 * Must not hold probe-specific logic: each probe's .bpf.c includes this once. */
#ifndef NETSLEUTH_COMMON_BPF_H
#define NETSLEUTH_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define NSEC_PER_SEC 1000000000ULL
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define HIST_SLOTS 64

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader before load (aya override_global). */
const volatile __u64 events_per_sec = 100;
const volatile __u64 events_burst = 200;

/* Sized by the loader (map_max_entries); must be a power-of-two multiple of the page size. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* One bucket per CPU: no lock, no cross-CPU cache line bouncing during a storm. */
struct ns_token_bucket {
	__u64 nano_tokens;
	__u64 last_refill_ns;
	__u64 last_refill_jiffies;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ns_token_bucket);
} token_buckets SEC(".maps");

/* Index into probe_stats; mirrored by ProbeStats in Rust (src/stats.rs). */
enum ns_probe_stat {
	NS_STAT_EVENTS_EMITTED = 0,
	NS_STAT_EVENTS_RATE_LIMITED = 1,
	NS_STAT_EVENTS_RINGBUF_FULL = 2,
	NS_STAT_MAP_FULL = 3,
	NS_STAT_COUNT = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NS_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} probe_stats SEC(".maps");

static __always_inline void count_stat(__u32 stat)
{
	__u64 *value = bpf_map_lookup_elem(&probe_stats, &stat);
	if (value)
		*value += 1;
}

/* Token bucket refilled at events_per_sec per CPU, holding at most events_burst tokens;
 * tokens are kept in billionths so the refill needs no division. The refill reads the clock
 * only when the jiffy has moved on: in a drop storm, where every drop asks, that is one clock
 * read per tick instead of one per drop (bpf_ktime_get_coarse_ns is not allowed here). */
static __always_inline bool take_event_token(void)
{
	__u32 zero = 0;
	struct ns_token_bucket *bucket = bpf_map_lookup_elem(&token_buckets, &zero);
	if (!bucket || events_per_sec == 0)
		return false;
	__u64 jiffies = bpf_jiffies64();
	if (jiffies != bucket->last_refill_jiffies) {
		__u64 now = bpf_ktime_get_ns();
		__u64 capacity = events_burst * NSEC_PER_SEC;
		__u64 elapsed = now - bucket->last_refill_ns;
		__u64 tokens = bucket->nano_tokens;
		if (elapsed >= NSEC_PER_SEC)
			tokens = capacity;
		else
			tokens += elapsed * events_per_sec;
		bucket->nano_tokens = tokens > capacity ? capacity : tokens;
		bucket->last_refill_ns = now;
		bucket->last_refill_jiffies = jiffies;
	}
	if (bucket->nano_tokens < NSEC_PER_SEC)
		return false;
	bucket->nano_tokens -= NSEC_PER_SEC;
	return true;
}

/* Sampling decision first, so a rate-limited event costs no header parsing or stack walk.
 * Every outcome is counted so user space can report what it never saw. */
static __always_inline bool event_sampled(void)
{
	if (take_event_token())
		return true;
	count_stat(NS_STAT_EVENTS_RATE_LIMITED);
	return false;
}

static __always_inline void submit_event(void *event, __u64 size)
{
	if (bpf_ringbuf_output(&events, event, size, 0))
		count_stat(NS_STAT_EVENTS_RINGBUF_FULL);
	else
		count_stat(NS_STAT_EVENTS_EMITTED);
}

/* Addresses are v4 in the first 4 bytes or a full v6 address; ports are host order. */
struct ns_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 protocol;
	__u8 pad;
};

/* A network namespace as the maps key it: its inode (what `ls -Li /proc/PID/ns/net` shows) and
 * its cookie. The kernel hands a freed netns's inode to the next netns created, so the inode alone
 * would add a dead pod's counts to the pod that inherits it; the cookie (SO_NETNS_COOKIE, 5.12+)
 * is never reused, and user space keeps only the entries whose cookie is the live one.
 * Mirrored by RawNetns in Rust (src/net.rs). */
struct ns_netns {
	__u64 cookie;
	__u32 inum;
	__u32 pad;
};

/* Every program in this crate is tp_btf, so typed pointers are dereferenced directly: the
 * verifier turns these into fault-safe loads (a NULL pointer reads as 0), far cheaper than
 * bpf_probe_read_kernel, and vmlinux.h's preserve_access_index makes them CO-RE relocatable.
 * A NULL net (an skb with neither device nor socket) gives {0, 0}. The cookie is one more load
 * from the struct net the inode came from; 0 on kernels without net_cookie. */
static __always_inline struct ns_netns netns_of_net(const struct net *net)
{
	struct ns_netns netns = {};
	if (!net)
		return netns;
	netns.inum = net->ns.inum;
	if (bpf_core_field_exists(net->net_cookie))
		netns.cookie = net->net_cookie;
	return netns;
}

static __always_inline const struct net *net_of_dev(const struct net_device *dev)
{
	if (!dev)
		return NULL;
	return dev->nd_net.net;
}

static __always_inline const struct net *net_of_sock(const struct sock *sk)
{
	if (!sk)
		return NULL;
	return sk->__sk_common.skc_net.net;
}

static __always_inline struct ns_netns netns_of_dev(const struct net_device *dev)
{
	return netns_of_net(net_of_dev(dev));
}

static __always_inline struct ns_netns netns_of_sock(const struct sock *sk)
{
	return netns_of_net(net_of_sock(sk));
}

/* The device's netns, else the owning socket's: locally generated skbs may not have a device yet
 * and skbs queued to a socket have lost theirs. */
static __always_inline struct ns_netns netns_of_skb(const struct sk_buff *skb)
{
	const struct net *net = net_of_dev(skb->dev);
	if (!net)
		net = net_of_sock(skb->sk);
	return netns_of_net(net);
}

static __always_inline void tuple_from_sock(const struct sock *sk, struct ns_tuple *t)
{
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->protocol = (__u8)BPF_CORE_READ(sk, sk_protocol);
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (t->family == AF_INET) {
		__builtin_memset(t->saddr, 0, sizeof(t->saddr));
		__builtin_memset(t->daddr, 0, sizeof(t->daddr));
		BPF_CORE_READ_INTO((__u32 *)t->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)t->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline void tuple_swap(struct ns_tuple *t)
{
	__u8 addr[16];
	__builtin_memcpy(addr, t->saddr, 16);
	__builtin_memcpy(t->saddr, t->daddr, 16);
	__builtin_memcpy(t->daddr, addr, 16);
	__u16 port = t->sport;
	t->sport = t->dport;
	t->dport = port;
}

/* Parses IPv4/IPv6 + TCP/UDP ports from a header at `l3`. Returns the L3 total length in bytes
 * (0 when the header is not IP). IPv6 extension headers are not walked: ports stay 0 then. */
static __always_inline __u32 tuple_from_l3(const unsigned char *l3, __u16 eth_proto, struct ns_tuple *t)
{
	__u8 l4proto = 0;
	__u32 l4off = 0, l3len = 0;
	__builtin_memset(t, 0, sizeof(*t));
	if (eth_proto == ETH_P_IP) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3))
			return 0;
		if (ip.version != 4)
			return 0;
		t->family = AF_INET;
		__builtin_memcpy(t->saddr, &ip.saddr, 4);
		__builtin_memcpy(t->daddr, &ip.daddr, 4);
		l4proto = ip.protocol;
		l4off = ip.ihl * 4;
		l3len = bpf_ntohs(ip.tot_len);
		/* Only the first fragment carries ports. */
		if (ip.frag_off & bpf_htons(0x1fff))
			l4off = 0;
	} else if (eth_proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l3))
			return 0;
		t->family = AF_INET6;
		__builtin_memcpy(t->saddr, &ip6.saddr, 16);
		__builtin_memcpy(t->daddr, &ip6.daddr, 16);
		l4proto = ip6.nexthdr;
		l4off = sizeof(ip6);
		l3len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
	} else {
		return 0;
	}
	t->protocol = l4proto;
	if (l4off && (l4proto == IPPROTO_TCP || l4proto == IPPROTO_UDP)) {
		__be16 ports[2];
		if (!bpf_probe_read_kernel(ports, sizeof(ports), l3 + l4off)) {
			t->sport = bpf_ntohs(ports[0]);
			t->dport = bpf_ntohs(ports[1]);
		}
	}
	return l3len;
}

/* The skb's network header as set by the stack; ~0 means not set yet. */
static __always_inline const unsigned char *skb_network_header_or_null(const struct sk_buff *skb)
{
	__u16 off = skb->network_header;
	if (off == (__u16)~0U)
		return NULL;
	return skb->head + off;
}

static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 slot = 0;
	if (v == 0)
		return 0;
	/* Branch-free-ish binary search: at most six steps, no loop for the verifier. */
	if (v >> 32) { v >>= 32; slot += 32; }
	if (v >> 16) { v >>= 16; slot += 16; }
	if (v >> 8) { v >>= 8; slot += 8; }
	if (v >> 4) { v >>= 4; slot += 4; }
	if (v >> 2) { v >>= 2; slot += 2; }
	if (v >> 1) { slot += 1; }
	return slot;
}

/* Latency histograms: key {scope, kind, log2(ns) slot}. The scope is a netns (inode in `scope`,
 * cookie in `scope_cookie`, see struct ns_netns) or another id (device, softirq vector) with
 * scope_cookie 0. */
struct ns_hist_key {
	__u64 scope_cookie;
	__u32 scope;
	__u16 kind;
	__u16 slot;
};

struct ns_hist_value {
	__u64 count;
	__u64 sum_ns;
};

/* A per-CPU hash aggregation map; the loader resizes it to Options::max_entries. */
#define DEFINE_PERCPU_HASH_MAP(name, entries, key_type, value_type) \
	struct {                                                    \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);             \
		__uint(max_entries, entries);                       \
		__type(key, key_type);                              \
		__type(value, value_type);                          \
	} name SEC(".maps")

#define DEFINE_HISTOGRAM_MAP(name, entries) \
	DEFINE_PERCPU_HASH_MAP(name, entries, struct ns_hist_key, struct ns_hist_value)

/* Adds to a per-CPU hash counter whose value starts with `n` u64 counters; inserts the key when
 * missing. A concurrent insert of the same key on another CPU is retried once; a full map is
 * counted in NS_STAT_MAP_FULL so the loss is visible. */
static __always_inline void counter_add(void *map, const void *key, __u64 delta)
{
	__u64 *value = bpf_map_lookup_elem(map, key);
	if (value) {
		*value += delta;
		return;
	}
	if (!bpf_map_update_elem(map, key, &delta, BPF_NOEXIST))
		return;
	value = bpf_map_lookup_elem(map, key);
	if (value)
		*value += delta;
	else
		count_stat(NS_STAT_MAP_FULL);
}

static __always_inline void hist_record(void *map, __u32 scope, __u64 scope_cookie, __u16 kind, __u64 ns)
{
	struct ns_hist_key key = {
		.scope_cookie = scope_cookie,
		.scope = scope,
		.kind = kind,
		.slot = (__u16)log2_slot(ns),
	};
	struct ns_hist_value *value = bpf_map_lookup_elem(map, &key);
	if (value) {
		value->count += 1;
		value->sum_ns += ns;
		return;
	}
	struct ns_hist_value init = { .count = 1, .sum_ns = ns };
	if (!bpf_map_update_elem(map, &key, &init, BPF_NOEXIST))
		return;
	value = bpf_map_lookup_elem(map, &key);
	if (value) {
		value->count += 1;
		value->sum_ns += ns;
	} else {
		count_stat(NS_STAT_MAP_FULL);
	}
}

#endif
