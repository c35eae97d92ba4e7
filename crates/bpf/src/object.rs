//! Loading one probe's eBPF object and reading it back: the privilege and BTF checks that give
//! clear errors, aya loading with the shared globals and map sizes, tp_btf attachment, and the
//! readers every probe shares (per-CPU hashes, histograms, threshold counters, probe stats, the
//! event ring buffer, map fill). Probe-specific decoding stays in each probe's module.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf};
use aya::programs::{BtfTracePoint, ProgramError};
use aya::{Btf, Ebpf, EbpfLoader, Endianness, Pod};

use crate::error::Error;
use crate::net::{Netns, RawNetns};
use crate::options::Options;
use crate::stats::{Log2Histogram, ProbeStats, SlowCounts};

/// A program of the object and the tracepoint it attaches to.
pub(crate) struct Attachment {
    pub program: &'static str,
    pub tracepoint: &'static str,
}

/// What a probe module hands to [`ProbeObject::load`].
pub(crate) struct ObjectSpec<'a> {
    pub probe: &'static str,
    pub bytes: &'static [u8],
    pub attachments: &'static [Attachment],
    /// `const volatile __u64` globals of the .bpf.c, beyond the shared event-sampler ones.
    pub globals: &'a [(&'static str, u64)],
    /// The probe's aggregation maps: each is sized by `Options::max_entries` and reported by
    /// `map_fills`. One list, so no map is sized but unreported or reported but left unsized.
    pub maps: &'static [&'static str],
}

/// The `slow_threshold_ns` global of latency.bpf.h, for a latency probe's `ObjectSpec::globals`.
pub(crate) fn slow_threshold_global(options: &Options) -> (&'static str, u64) {
    (
        "slow_threshold_ns",
        u64::try_from(options.slow_threshold.as_nanos()).unwrap_or(u64::MAX),
    )
}

/// Run statistics of one program of a probe. Counted by the kernel only while
/// [`enable_runtime_stats`]'s guard (or `kernel.bpf_stats_enabled=1`) is in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramRuntime {
    pub program: &'static str,
    pub run_count: u64,
    pub run_time: std::time::Duration,
}

/// Keeps the kernel's per-program run-time accounting on (BPF_ENABLE_STATS) until dropped.
/// Accounting adds two clock reads per program run, so it is for benchmarks and diagnosis.
pub struct RuntimeStatsGuard {
    _fd: std::os::fd::OwnedFd,
}

pub fn enable_runtime_stats() -> std::io::Result<RuntimeStatsGuard> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map(|fd| RuntimeStatsGuard { _fd: fd })
        .map_err(|e| e.io_error)
}

/// How full a bounded map is, for `/status` and self-metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u32,
    pub capacity: u32,
}

pub(crate) struct ProbeObject {
    probe: &'static str,
    attachments: &'static [Attachment],
    maps: &'static [&'static str],
    ebpf: Ebpf,
    events: RingBuf<MapData>,
}

/// Mirror of `struct ns_hist_key` (common.bpf.h, `index` = log2 slot) and of
/// `struct ns_threshold_key` (latency.bpf.h, `index` = threshold): the same layout.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ScopedKey {
    scope_cookie: u64,
    scope: u32,
    kind: u16,
    index: u16,
}

impl ScopedKey {
    fn scope(&self) -> Scope {
        Scope {
            id: self.scope,
            cookie: self.scope_cookie,
        }
    }

    /// The scope read as a network namespace (the netns-scoped latency probes).
    fn netns(&self) -> Netns {
        self.scope().netns()
    }
}

/// What a histogram or threshold entry is scoped to: a network namespace (`id` its inode,
/// `cookie` its cookie) or, for node-wide probes, another id (device, softirq vector; cookie 0).
#[derive(Clone, Copy)]
pub(crate) struct Scope {
    pub id: u32,
    pub cookie: u64,
}

impl Scope {
    pub(crate) fn netns(self) -> Netns {
        RawNetns {
            cookie: self.cookie,
            inum: self.id,
            pad: 0,
        }
        .decode()
    }
}
/// Mirror of `struct ns_hist_value` (common.bpf.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct HistValue {
    count: u64,
    sum_ns: u64,
}
// SAFETY: integer-only #[repr(C)] structs without implicit padding.
unsafe impl Pod for ScopedKey {}
// SAFETY: as above.
unsafe impl Pod for HistValue {}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

impl ProbeObject {
    pub(crate) fn load(spec: ObjectSpec<'_>, options: &Options) -> Result<Self, Error> {
        let probe = spec.probe;
        check_privileges(probe)?;
        validate(probe, options)?;
        let btf = load_btf(probe, &options.btf_path)?;

        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            .override_global("events_per_sec", &options.events_per_second, true)
            .override_global("events_burst", &options.event_burst, true)
            .map_max_entries("events", options.ring_buffer_bytes);
        for (name, value) in spec.globals {
            loader.override_global(name, value, true);
        }
        for map in spec.maps {
            loader.map_max_entries(map, options.max_entries);
        }
        let mut ebpf = loader.load(spec.bytes).map_err(|source| Error::Object {
            probe,
            source: Box::new(source),
        })?;

        for attachment in spec.attachments {
            attach(probe, &mut ebpf, attachment, &btf, &options.btf_path)?;
        }
        let events_map = ebpf.take_map("events").ok_or(Error::MapMissing {
            probe,
            map: "events",
        })?;
        let events = RingBuf::try_from(events_map).map_err(|source| Error::Map {
            probe,
            map: "events",
            source,
        })?;
        Ok(Self {
            probe,
            attachments: spec.attachments,
            maps: spec.maps,
            ebpf,
            events,
        })
    }

    fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.ebpf.map(name).ok_or(Error::MapMissing {
            probe: self.probe,
            map: name,
        })
    }

    fn map_error(&self, map: &'static str) -> impl Fn(aya::maps::MapError) -> Error + '_ {
        move |source| Error::Map {
            probe: self.probe,
            map,
            source,
        }
    }

    /// All entries of a per-CPU hash map, values per CPU.
    pub(crate) fn per_cpu_entries<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<Vec<(K, PerCpuValues<V>)>, Error> {
        let map =
            PerCpuHashMap::<_, K, V>::try_from(self.map(name)?).map_err(self.map_error(name))?;
        map.iter()
            .map(|entry| entry.map_err(self.map_error(name)))
            .collect()
    }

    /// A per-CPU hash of u64 counters, summed over CPUs.
    pub(crate) fn counters<K: Pod + Eq + std::hash::Hash>(
        &self,
        name: &'static str,
    ) -> Result<HashMap<K, u64>, Error> {
        let mut sums = HashMap::new();
        for (key, values) in self.per_cpu_entries::<K, u64>(name)? {
            *sums.entry(key).or_insert(0) += values.iter().sum::<u64>();
        }
        Ok(sums)
    }

    /// Deletes the entries of a per-CPU hash map whose key `is_dead` picks; returns how many
    /// went. Keys are listed first and deleted after, so the walk never skips a key.
    pub(crate) fn forget<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
        is_dead: impl Fn(&K) -> bool,
    ) -> Result<usize, Error> {
        let probe = self.probe;
        let map_error = |source| Error::Map {
            probe,
            map: name,
            source,
        };
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(Error::MapMissing { probe, map: name })?;
        let mut map = PerCpuHashMap::<_, K, V>::try_from(map).map_err(map_error)?;
        let dead: Vec<K> = map
            .keys()
            .filter_map(|key| {
                key.map_err(map_error)
                    .map(|key| is_dead(&key).then_some(key))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        for key in &dead {
            match map.remove(key) {
                // Gone already: an LRU map evicted it meanwhile.
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(map_error(source)),
            }
        }
        Ok(dead.len())
    }

    /// Deletes the entries of a netns-scoped histogram map and its threshold map whose
    /// network namespace `is_dead` picks; returns how many went.
    pub(crate) fn forget_latency_netns(
        &mut self,
        histogram: &'static str,
        thresholds: &'static str,
        is_dead: impl Fn(Netns) -> bool,
    ) -> Result<usize, Error> {
        let dead = |key: &ScopedKey| is_dead(key.netns());
        Ok(self.forget::<ScopedKey, HistValue>(histogram, dead)?
            + self.forget::<ScopedKey, u64>(thresholds, dead)?)
    }

    /// A histogram map (`DEFINE_HISTOGRAM_MAP`), summed over CPUs, keyed by what `key` makes
    /// of the kernel's (scope, kind); entries it has no key for are skipped.
    pub(crate) fn histograms<K: Eq + std::hash::Hash>(
        &self,
        name: &'static str,
        key: impl Fn(Scope, u16) -> Option<K>,
    ) -> Result<HashMap<K, Log2Histogram>, Error> {
        let mut histograms: HashMap<K, Log2Histogram> = HashMap::new();
        for (raw, values) in self.per_cpu_entries::<ScopedKey, HistValue>(name)? {
            let Some(key) = key(raw.scope(), raw.kind) else {
                continue;
            };
            let histogram = histograms.entry(key).or_default();
            for value in values.iter() {
                histogram.add(raw.index, value.count, value.sum_ns);
            }
        }
        Ok(histograms)
    }

    /// A threshold map (`DEFINE_THRESHOLD_MAP`), summed over CPUs, keyed like
    /// [`Self::histograms`].
    pub(crate) fn slow_counts<K: Eq + std::hash::Hash>(
        &self,
        name: &'static str,
        key: impl Fn(Scope, u16) -> Option<K>,
    ) -> Result<HashMap<K, SlowCounts>, Error> {
        let mut counts: HashMap<K, SlowCounts> = HashMap::new();
        for (raw, count) in self.counters::<ScopedKey>(name)? {
            if let Some(key) = key(raw.scope(), raw.kind) {
                counts.entry(key).or_default().add(raw.index, count);
            }
        }
        Ok(counts)
    }

    pub(crate) fn stats(&self) -> Result<ProbeStats, Error> {
        let name = "probe_stats";
        let array =
            PerCpuArray::<_, u64>::try_from(self.map(name)?).map_err(self.map_error(name))?;
        let mut slots = [0u64; 4];
        for (index, slot) in slots.iter_mut().enumerate() {
            *slot = array
                .get(&(index as u32), 0)
                .map_err(self.map_error(name))?
                .iter()
                .sum();
        }
        Ok(ProbeStats::from_slots(slots))
    }

    /// Hands every event waiting in the ring buffer to `handle`, without blocking. Records
    /// shorter than `T` (a build mismatch) are skipped.
    pub(crate) fn drain_events<T: Pod>(&mut self, mut handle: impl FnMut(T)) {
        while let Some(record) = self.events.next() {
            if record.len() >= size_of::<T>() {
                // SAFETY: T is Pod (any bit pattern valid) and the record holds at least
                // size_of::<T>() bytes; read_unaligned copes with the ring buffer's 8-byte alignment.
                handle(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<T>()) });
            }
        }
    }

    pub(crate) fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    pub(crate) fn program_runtimes(&self) -> Result<Vec<ProgramRuntime>, Error> {
        self.attachments
            .iter()
            .map(|attachment| {
                let program =
                    self.ebpf
                        .program(attachment.program)
                        .ok_or(Error::ProgramMissing {
                            probe: self.probe,
                            program: attachment.program,
                        })?;
                let info = program.info().map_err(|source| Error::Attach {
                    probe: self.probe,
                    program: attachment.program,
                    tracepoint: attachment.tracepoint,
                    source: Box::new(source),
                })?;
                Ok(ProgramRuntime {
                    program: attachment.program,
                    run_count: info.run_count(),
                    run_time: info.run_time(),
                })
            })
            .collect()
    }

    /// Entries against capacity of every map in `ObjectSpec::maps`.
    pub(crate) fn map_fills(&self) -> Result<Vec<MapFill>, Error> {
        self.maps.iter().map(|map| self.map_fill(map)).collect()
    }

    /// Entries in a hash map against its capacity, walking keys with BPF_MAP_GET_NEXT_KEY.
    fn map_fill(&self, name: &'static str) -> Result<MapFill, Error> {
        let data = match self.map(name)? {
            Map::HashMap(data)
            | Map::LruHashMap(data)
            | Map::PerCpuHashMap(data)
            | Map::PerCpuLruHashMap(data) => data,
            _ => {
                return Err(Error::MapMissing {
                    probe: self.probe,
                    map: name,
                });
            }
        };
        let info = data.info().map_err(self.map_error(name))?;
        let entries = count_keys(data.fd().as_fd().as_raw_fd(), info.key_size() as usize);
        Ok(MapFill {
            map: name,
            entries,
            capacity: info.max_entries(),
        })
    }
}

fn count_keys(fd: i32, key_size: usize) -> u32 {
    #[repr(C)]
    struct GetNextKey {
        map_fd: u32,
        pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    let mut current = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0u32;
    let mut first = true;
    loop {
        let attr = GetNextKey {
            map_fd: fd as u32,
            pad: 0,
            key: if first { 0 } else { current.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: BPF_MAP_GET_NEXT_KEY reads `key_size` bytes at `key` and writes as many at
        // `next_key`; both buffers are that long and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                4, /* BPF_MAP_GET_NEXT_KEY */
                &attr as *const GetNextKey,
                size_of::<GetNextKey>() as u32,
            )
        };
        if rc != 0 {
            return count;
        }
        count += 1;
        first = false;
        std::mem::swap(&mut current, &mut next);
    }
}

fn check_privileges(probe: &'static str) -> Result<(), Error> {
    let capabilities = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| capabilities & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    Err(Error::NotPermitted {
        probe,
        uid,
        capabilities,
    })
}

fn validate(probe: &'static str, options: &Options) -> Result<(), Error> {
    let ring = options.ring_buffer_bytes;
    if !ring.is_power_of_two() || ring < 4096 {
        return Err(Error::InvalidOption {
            probe,
            option: "ring_buffer_bytes",
            value: ring.to_string(),
            reason: "must be a power of two of at least 4096",
        });
    }
    if options.max_entries == 0 {
        return Err(Error::InvalidOption {
            probe,
            option: "max_entries",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    Ok(())
}

fn load_btf(probe: &'static str, path: &Path) -> Result<Btf, Error> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(Error::BtfMissing {
            probe,
            path: path.to_owned(),
            source,
        });
    }
    Btf::parse_file(path, Endianness::default()).map_err(|error| Error::BtfRejected {
        probe,
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

fn attach(
    probe: &'static str,
    ebpf: &mut Ebpf,
    attachment: &Attachment,
    btf: &Btf,
    btf_path: &Path,
) -> Result<(), Error> {
    let Attachment {
        program,
        tracepoint,
    } = *attachment;
    let attach_error = |source| Error::Attach {
        probe,
        program,
        tracepoint,
        source: Box::new(source),
    };
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or(Error::ProgramMissing { probe, program })?
        .try_into()
        .map_err(attach_error)?;
    match prog.load(tracepoint, btf) {
        Ok(()) => {}
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => {
            return Err(Error::VerifierRejected {
                probe,
                program,
                source: io_error,
                log: verifier_log.to_string(),
            });
        }
        Err(ProgramError::Btf(aya::BtfError::UnknownBtfTypeName { .. })) => {
            return Err(Error::TracepointMissing {
                probe,
                tracepoint,
                btf_path: btf_path.to_owned(),
            });
        }
        Err(source) => return Err(attach_error(source)),
    }
    prog.attach().map_err(attach_error)?;
    Ok(())
}

/// The accessors every probe exposes the same way: sampler stats, the ring buffer's fd for
/// readiness polling, and the fill of its bounded maps.
macro_rules! impl_probe_common {
    ($probe:ty) => {
        impl $probe {
            /// Run counts and time of each of the probe's programs.
            pub fn program_runtimes(&self) -> Result<Vec<$crate::ProgramRuntime>, $crate::Error> {
                self.object.program_runtimes()
            }

            /// Event sampling and map-full accounting since load.
            pub fn stats(&self) -> Result<$crate::ProbeStats, $crate::Error> {
                self.object.stats()
            }

            /// Readable when events are waiting (for epoll/tokio `AsyncFd`).
            pub fn events_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.object.events_fd()
            }

            /// Entries against capacity of the probe's bounded maps.
            pub fn map_fills(&self) -> Result<Vec<$crate::MapFill>, $crate::Error> {
                self.object.map_fills()
            }
        }
    };
}
pub(crate) use impl_probe_common;

#[cfg(test)]
mod tests {
    //! The error paths a host can hit, on the real kernel (root): a tracepoint the kernel lacks
    //! and a program the verifier refuses, both from the packetloss object.
    use super::*;

    const PACKETLOSS: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/packetloss.bpf.o"));

    /// Loads the packetloss object and attaches its `on_kfree_skb` program to `tracepoint`,
    /// which the tests pick so that attaching fails.
    fn attach_on_kfree_skb_fails(tracepoint: &'static str) -> Error {
        let vmlinux = Path::new("/sys/kernel/btf/vmlinux");
        let btf = load_btf("test", vmlinux).unwrap();
        let mut ebpf = EbpfLoader::new().btf(Some(&btf)).load(PACKETLOSS).unwrap();
        let attachment = Attachment {
            program: "on_kfree_skb",
            tracepoint,
        };
        attach("test", &mut ebpf, &attachment, &btf, vmlinux).unwrap_err()
    }

    #[test]
    fn missing_tracepoint_is_named() {
        let err = attach_on_kfree_skb_fails("kfree_skb_from_the_future");
        assert_eq!(
            err.to_string(),
            "tracepoint kfree_skb_from_the_future does not exist on this kernel \
             (no btf_trace_kfree_skb_from_the_future type in /sys/kernel/btf/vmlinux)"
        );
        assert!(err.is_unsupported_here());
    }

    #[test]
    fn verifier_rejection_carries_the_log() {
        // softirq_entry passes one integer; the program reads three arguments and derefs an skb.
        let err = attach_on_kfree_skb_fails("softirq_entry");
        let Error::VerifierRejected { program, log, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*program, "on_kfree_skb");
        assert!(
            log.contains("invalid bpf_context access") || log.contains("func 'softirq_entry'"),
            "{log}"
        );
        assert!(
            err.to_string()
                .starts_with("the verifier rejected program on_kfree_skb"),
            "{err}"
        );
    }
}
