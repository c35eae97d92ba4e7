//! `file` sink: one JSON event per line, rotated by size: when the file would pass
//! `maxSizeBytes`, `path.N-1` → `path.N` … `path` → `path.1` (at most `maxBackups` kept) and a
//! fresh `path` is started. Mode 0640: events carry addresses.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::SinkError;
use crate::config::FileSinkArgs;
use crate::events::Event;
use crate::health::AgentMetrics;

/// A size-rotated append-only file.
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_backups: u32,
    file: BufWriter<File>,
    size: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

fn backup(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingFile {
    pub fn open(args: &FileSinkArgs) -> Result<RotatingFile, SinkError> {
        let setup = |e: std::io::Error| SinkError::Setup {
            sink: "file",
            message: format!("{}: {e}", args.path.display()),
        };
        if let Some(parent) = args.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(setup)?;
        }
        let file = open_append(&args.path).map_err(setup)?;
        let size = file.metadata().map_err(setup)?.len();
        Ok(RotatingFile {
            path: args.path.clone(),
            max_size: args.max_size_bytes.max(1),
            max_backups: args.max_backups,
            file: BufWriter::new(file),
            size,
        })
    }

    /// Append one line (a newline is added), rotating first if it would not fit.
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    /// Write out what is buffered (the run loop does when its queue is empty).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        if self.max_backups == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.max_backups).rev() {
                let from = backup(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, backup(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, backup(&self.path, 1))?;
        }
        self.file = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

pub async fn run(
    mut file: RotatingFile,
    mut events: mpsc::Receiver<Arc<Event>>,
    metrics: Arc<AgentMetrics>,
) {
    // Lines written to the buffer but not yet flushed: delivered only once they reach the file.
    let mut pending = 0u64;
    while let Some(event) = events.recv().await {
        let line = serde_json::to_string(&*event).unwrap_or_default();
        // Small buffered appends, flushed whenever the queue runs dry: cheaper than a
        // blocking-pool hop or a syscall per event.
        match file.write_line(&line) {
            Ok(()) => pending += 1,
            Err(e) => {
                tracing::warn!("file sink {}: {e}", file.path.display());
                metrics.sink_failed("file", 1);
            }
        }
        if events.is_empty() {
            match file.flush() {
                Ok(()) => metrics.sink_delivered("file", pending),
                Err(e) => {
                    tracing::warn!("file sink {}: {e}", file.path.display());
                    metrics.sink_failed("file", pending);
                }
            }
            pending = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut f = RotatingFile::open(&FileSinkArgs {
            path: path.clone(),
            max_size_bytes: 20,
            max_backups: 2,
        })
        .unwrap();
        for i in 0..7 {
            f.write_line(&format!("event-number-{i}")).unwrap(); // 15 bytes + newline
        }
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "event-number-6\n");
        assert_eq!(
            std::fs::read_to_string(backup(&path, 1)).unwrap(),
            "event-number-5\n"
        );
        assert_eq!(
            std::fs::read_to_string(backup(&path, 2)).unwrap(),
            "event-number-4\n"
        );
        assert!(!backup(&path, 3).exists());
    }
}
