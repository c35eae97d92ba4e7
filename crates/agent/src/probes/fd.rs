//! `fd`: open file descriptors and sockets of the processes in the netns (`/proc/<pid>/fd`).
//! Each series is emitted once (KubeSkoop emitted `openfd` twice, which made `/metrics` 500).

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::pids::sum_over_processes;
use super::procfs::ProcfsProbe;

pub static FD: [MetricDesc; 2] = [
    MetricDesc::gauge(
        "fd",
        "openfd",
        "Open file descriptors of the processes in the netns",
    ),
    MetricDesc::gauge(
        "fd",
        "opensocket",
        "Open sockets of the processes in the netns",
    ),
];

pub(crate) struct Fd;

impl ProcfsProbe for Fd {
    const NAME: &'static str = "fd";
    const METRICS: &'static [MetricDesc] = &FD;

    fn collect(out: &mut Samples<'_>) -> Result<(), ProbeError> {
        let [fds, sockets] = sum_over_processes(out.netns(), |pid| {
            let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
            let mut counts = [0u64; 2];
            for entry in dir.flatten() {
                counts[0] += 1;
                if std::fs::read_link(entry.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
                {
                    counts[1] += 1;
                }
            }
            Some(counts)
        });
        out.gauge(&FD[0], fds as f64);
        out.gauge(&FD[1], sockets as f64);
        Ok(())
    }
}
