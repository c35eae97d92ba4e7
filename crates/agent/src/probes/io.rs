//! `io`: read/write syscalls and storage bytes of the processes in the netns, summed from
//! `/proc/<pid>/io` (one entry per process, so threads are not counted again as in KubeSkoop).
//! Counters: a process exiting lowers the sum, which Prometheus treats as a counter reset.

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::pids::sum_over_processes;
use super::procfs::ProcfsProbe;

pub static IO: [MetricDesc; 4] = [
    MetricDesc::counter("io", "readsyscall", "read(2)-family syscalls"),
    MetricDesc::counter("io", "writesyscall", "write(2)-family syscalls"),
    MetricDesc::counter("io", "readbytes", "Bytes read from storage"),
    MetricDesc::counter("io", "writebytes", "Bytes written to storage"),
];

const KEYS: [&str; 4] = ["syscr", "syscw", "read_bytes", "write_bytes"];

pub(crate) struct Io;

pub(crate) fn parse(text: &str) -> [u64; 4] {
    let mut out = [0u64; 4];
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(':') {
            if let Some(i) = KEYS.iter().position(|k| *k == key) {
                out[i] = value.trim().parse().unwrap_or(0);
            }
        }
    }
    out
}

impl ProcfsProbe for Io {
    const NAME: &'static str = "io";
    const METRICS: &'static [MetricDesc] = &IO;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let sums = sum_over_processes(out.netns(), |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/io"))
                .ok()
                .map(|text| parse(&text))
        });
        out.counters(&IO, sums);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_pid_io_fields() {
        let text = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 5\nwrite_bytes: 6\ncancelled_write_bytes: 0\n";
        assert_eq!(super::parse(text), [3, 4, 5, 6]);
    }
}
