//! Per-netns procfs files kept open across scrapes, and the visit of one netns by a scrape
//! thread.
//!
//! A file under `/proc/thread-self/net/` or `/proc/sys/net/` stays bound to the netns of the
//! thread that opened it, and procfs regenerates its text when it is read again from offset 0.
//! So once a netns's files are open, a scrape re-reads them with pread(2): no setns(2), no path
//! lookup under `/proc` (with 110 pods those two were about a quarter of a scrape).
//!
//! The cache is keyed by netns inode, which the kernel hands to a new namespace as soon as the
//! old one is freed (creating and deleting netns in a loop gets the same inode every time). So
//! each entry holds the netns itself open: while the entry lives its namespace cannot be freed,
//! the inode cannot name another namespace, and a path found with that inode names the very
//! namespace the files were opened in. That hold must never outlive the pod: every visit goes by
//! the inode the netns path names now (a deleted netns is skipped, a re-created one starts
//! afresh), and every scrape closes the entries of each netns it did not visit (gone, unmapped,
//! cut by the pod limit).
//!
//! Must not know any probe or metric.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::sched::{setns, CloneFlags};

use crate::podmap::netns_inode;
use crate::probe::ProbeError;

/// The open files of every netns visited by the last scrape, keyed by netns inode.
#[derive(Default)]
pub struct NetnsFileCache {
    by_netns: Mutex<HashMap<u64, NetnsFiles>>,
}

impl NetnsFileCache {
    /// Take every netns's files out for one scrape (a concurrent scrape finds none and opens
    /// its own; whichever finishes last leaves its files here).
    pub(crate) fn take(&self) -> HashMap<u64, NetnsFiles> {
        std::mem::take(&mut *self.by_netns.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Keep the files of the netns a scrape visited; everything else was closed when the
    /// scrape dropped it.
    pub(crate) fn keep(&self, visited: HashMap<u64, NetnsFiles>) {
        *self.by_netns.lock().unwrap_or_else(|p| p.into_inner()) = visited;
    }

    /// Files held open now, over all netns, the netns themselves included (what a vanished pod
    /// must not leave behind).
    pub fn open_files(&self) -> usize {
        self.by_netns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|f| 1 + f.files.values().filter(|f| f.is_some()).count())
            .sum()
    }

    /// Netns whose files are held open now.
    pub fn netns_count(&self) -> usize {
        self.by_netns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// One netns, held open, and the files opened in it by path; `None`: the file does not exist
/// there (no IPv6, say), which does not change while the netns lives.
pub(crate) struct NetnsFiles {
    /// Keeps the namespace (and so its inode) from being freed while this entry lives; the fd
    /// setns(2) uses.
    netns: File,
    files: HashMap<&'static str, Option<File>>,
    /// The netns's cookie (`SO_NETNS_COOKIE`): `None` until asked, `Some(None)` when this
    /// kernel cannot say (before 5.14), so the netns is not entered again every scrape to ask.
    /// Held open, the netns keeps its cookie.
    cookie: Option<Option<u64>>,
}

impl NetnsFiles {
    /// Hold the netns at `path`, which must still be the one with this `inode`.
    pub(crate) fn open(path: &Path, inode: u64) -> io::Result<NetnsFiles> {
        let netns = File::open(path)?;
        // The path may have been re-bound since its inode was read: never attribute another
        // namespace's numbers to this entity.
        if netns.metadata()?.ino() != inode {
            return Err(io::Error::other(format!(
                "{} now names another network namespace",
                path.display()
            )));
        }
        Ok(NetnsFiles {
            netns,
            files: HashMap::new(),
            cookie: None,
        })
    }

    /// The netns's cookie, if [`NetnsVisit::learn_cookie`] learned it.
    pub(crate) fn cookie(&self) -> Option<u64> {
        self.cookie.flatten()
    }
}

/// The netns a scrape thread is in; starts as the one it was spawned in.
pub(crate) struct ThreadNetns {
    inode: u64,
}

impl ThreadNetns {
    pub(crate) fn current() -> io::Result<ThreadNetns> {
        Ok(ThreadNetns {
            inode: netns_inode(Path::new("/proc/thread-self/ns/net"))?,
        })
    }
}

/// One netns being visited by a scrape thread.
pub struct NetnsVisit<'a> {
    path: &'a Path,
    inode: u64,
    thread: &'a mut ThreadNetns,
    files: &'a mut NetnsFiles,
    /// Texts already read during this visit: `net/snmp` serves three probes.
    texts: HashMap<&'static str, Arc<str>>,
}

impl<'a> NetnsVisit<'a> {
    pub(crate) fn new(
        path: &'a Path,
        inode: u64,
        thread: &'a mut ThreadNetns,
        files: &'a mut NetnsFiles,
    ) -> NetnsVisit<'a> {
        NetnsVisit {
            path,
            inode,
            thread,
            files,
            texts: HashMap::new(),
        }
    }

    /// Move the scrape thread into this netns (nothing to do when it is there already: the
    /// thread's own netns is alive, so an equal inode is the same namespace).
    pub(crate) fn enter(&mut self) -> io::Result<()> {
        if self.thread.inode == self.inode {
            return Ok(());
        }
        setns(&self.files.netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        self.thread.inode = self.inode;
        Ok(())
    }

    /// Learns the netns's cookie (eBPF maps key a netns by inode and cookie) the first time the
    /// netns is visited: a socket made inside it says (entering it once). The first failure
    /// is returned, later visits answer `None` without entering.
    pub(crate) fn learn_cookie(&mut self) -> io::Result<Option<u64>> {
        if let Some(known) = self.files.cookie {
            return Ok(known);
        }
        self.enter()?;
        let cookie = bpf::NetnsCookie::of_current_thread().map(|c| c.0);
        self.files.cookie = Some(cookie.as_ref().ok().copied());
        cookie.map(Some)
    }
}

/// Where [`crate::registry::Samples::netns_file`] reads from during a netns visit.
pub(crate) trait NetnsFileReader {
    /// The text of `path` (absolute, resolved in this netns), read once per visit however
    /// many probes ask.
    fn read(&mut self, probe: &str, path: &'static str) -> Result<Arc<str>, ProbeError>;
}

impl NetnsFileReader for NetnsVisit<'_> {
    /// Opened on the first scrape that needs it (entering the netns), re-read after that.
    fn read(&mut self, probe: &str, path: &'static str) -> Result<Arc<str>, ProbeError> {
        if let Some(text) = self.texts.get(path) {
            return Ok(text.clone());
        }
        if !self.files.files.contains_key(path) {
            self.enter().map_err(|e| {
                ProbeError::read(
                    probe,
                    format!("{path} (entering {})", self.path.display()),
                    e,
                )
            })?;
            let opened = match File::open(path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(ProbeError::read(probe, path, e)),
            };
            self.files.files.insert(path, opened);
        }
        let Some(Some(file)) = self.files.files.get(path) else {
            return Err(ProbeError::read(
                probe,
                path,
                io::Error::from(io::ErrorKind::NotFound),
            ));
        };
        let text: Arc<str> = read_from_start(file)
            .map_err(|e| ProbeError::read(probe, path, e))?
            .into();
        self.texts.insert(path, text.clone());
        Ok(text)
    }
}

/// The whole text of an open procfs file, from offset 0 (procfs regenerates it).
fn read_from_start(file: &File) -> io::Result<String> {
    let mut bytes = vec![0u8; 8192];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            bytes.resize(len * 2, 0);
        }
        let n = file.read_at(&mut bytes[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    bytes.truncate(len);
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
