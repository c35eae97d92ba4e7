//! Running a piece of work inside a network namespace, on a thread of its own.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling thread only. The thread is spawned
//! for the job and ends with it, so no other work (and no pooled runtime) ever runs in a
//! namespace it did not ask for.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc::Sender;

use nix::sched::{setns, CloneFlags};

use crate::CollectError;

/// Starts `work` on a new thread that first enters the network namespace `netns` (opened from
/// `path`, which is only used in messages). The result — also a panic, as an error — is sent on
/// `done` tagged with `tag`, so a caller can wait for whichever thread finishes first.
pub(crate) fn spawn_in_netns<T, F>(
    netns: File,
    path: PathBuf,
    tag: usize,
    done: Sender<(usize, Result<T, CollectError>)>,
    work: F,
) -> Result<(), CollectError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, CollectError> + Send + 'static,
{
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name("nsl-collect".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    CollectError::EnterNetns {
                        path: thread_path.clone(),
                        source,
                    }
                })?;
                drop(netns);
                work()
            }))
            .unwrap_or_else(|_| {
                Err(CollectError::ThreadPanicked {
                    path: thread_path.clone(),
                })
            });
            // The receiver only goes away when the caller gave up; nothing left to tell then.
            let _ = done.send((tag, result));
        })
        .map(drop)
        .map_err(|source| CollectError::Thread { path, source })
}
