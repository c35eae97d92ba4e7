/* biolatency: block request latency from issue to the driver until completion
 * (block:block_rq_issue -> block:block_rq_complete) per device and operation, as log2
 * histograms, with sampled events for slow requests naming the issuing task. */
#include "latency.bpf.h"

#define REQ_OP_MASK 0xff
#define REQ_OP_READ 0
#define REQ_OP_WRITE 1

enum ns_bio_op {
	BIO_READ = 0,
	BIO_WRITE = 1,
	BIO_OTHER = 2,
};

struct ns_bio_start {
	__u64 issued_ns;
	__u32 tgid;
	__u32 pad;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ns_bio_start);
} bio_in_flight SEC(".maps");

DEFINE_HISTOGRAM_MAP(bio_latency, 16384);
DEFINE_THRESHOLD_MAP(bio_slow, 16384);

struct ns_bio_event {
	__u64 timestamp_ns;
	__u64 latency_ns;
	__u32 major;
	__u32 minor;
	__u32 op;
	__u32 bytes;
	__u32 tgid;
	__s32 error;
	char comm[16];
};

SEC("tp_btf/block_rq_issue")
int BPF_PROG(on_block_rq_issue, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct ns_bio_start start = {
		.issued_ns = bpf_ktime_get_ns(),
		.tgid = bpf_get_current_pid_tgid() >> 32,
	};
	bpf_get_current_comm(start.comm, sizeof(start.comm));
	bpf_map_update_elem(&bio_in_flight, &key, &start, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(on_block_rq_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	struct ns_bio_start *start = bpf_map_lookup_elem(&bio_in_flight, &key);
	if (!start)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 latency = now - start->issued_ns;
	struct gendisk *disk = rq->q->disk;
	__u32 major = disk ? disk->major : 0;
	__u32 minor = disk ? disk->first_minor : 0;
	__u32 op = rq->cmd_flags & REQ_OP_MASK;
	__u16 kind = op == REQ_OP_READ ? BIO_READ : op == REQ_OP_WRITE ? BIO_WRITE : BIO_OTHER;
	/* Scope = major:minor packed like the kernel's dev_t (12:20 bits). */
	if (latency_record(&bio_latency, &bio_slow, (major << 20) | minor, 0, kind, latency) && event_sampled()) {
		struct ns_bio_event event = {
			.timestamp_ns = now,
			.latency_ns = latency,
			.major = major,
			.minor = minor,
			.op = kind,
			.bytes = nr_bytes,
			.tgid = start->tgid,
			.error = error,
		};
		__builtin_memcpy(event.comm, start->comm, sizeof(event.comm));
		submit_event(&event, sizeof(event));
	}
	bpf_map_delete_elem(&bio_in_flight, &key);
	return 0;
}
