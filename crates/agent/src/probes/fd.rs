//! `fd`: open file descriptors and sockets of the processes in the netns (`/proc/<pid>/fd`).
//! Each series is emitted once (KubeSkoop emitted `openfd` twice, which made `/metrics` 500).

use crate::probe::{MetricDesc, ProbeError};
use crate::registry::Samples;

use super::pids::PIDS;
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
        let (mut fds, mut sockets) = (0u64, 0u64);
        for pid in PIDS.pids(out.netns()) {
            // A process that exited since the scan has no fd dir any more: skip it.
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for entry in dir.flatten() {
                fds += 1;
                if std::fs::read_link(entry.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
                {
                    sockets += 1;
                }
            }
        }
        out.gauge(&FD[0], fds as f64);
        out.gauge(&FD[1], sockets as f64);
        Ok(())
    }
}
