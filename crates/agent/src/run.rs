//! Running the agent as a service: the HTTP listener, reload on SIGHUP and on config file
//! change, and pod-map refresh when a lab inventory changes (inotify on the directories, never
//! a hot poll). Used by `netsleuth agent`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::net::{TcpListener, UnixListener};

use crate::agent::Agent;
use crate::config::ListenAddress;

/// Why the agent could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Bind the configured address.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub async fn bind(address: &ListenAddress) -> Result<Listener, ServeError> {
        let err = |source| ServeError::Listen {
            address: address.to_string(),
            source,
        };
        match address {
            ListenAddress::Tcp(addr) => {
                Ok(Listener::Tcp(TcpListener::bind(addr).await.map_err(err)?))
            }
            ListenAddress::Unix(path) => {
                // A socket left by a previous run would make bind fail.
                if std::fs::metadata(path).is_ok() {
                    std::fs::remove_file(path).map_err(err)?;
                }
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(err)?;
                }
                Ok(Listener::Unix(UnixListener::bind(path).map_err(err)?))
            }
        }
    }

    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default(),
        }
    }
}

/// Serve HTTP until the process ends.
pub async fn serve(agent: Agent, listener: Listener) -> Result<(), ServeError> {
    let app = crate::http::router(agent);
    match listener {
        Listener::Tcp(l) => axum::serve(l, app).await.map_err(ServeError::Serve),
        Listener::Unix(l) => axum::serve(l, app).await.map_err(ServeError::Serve),
    }
}

/// Reload on SIGHUP.
pub fn reload_on_sighup(agent: Agent) -> std::io::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            reload_logged(&agent);
        }
    });
    Ok(())
}

fn reload_logged(agent: &Agent) {
    match agent.reload() {
        Ok(()) => tracing::info!("config reloaded"),
        Err(e) => tracing::error!("config refused, keeping the running one: {e}"),
    }
}

/// Watch `dirs` (non-recursively) and call `on_change` after changes settle (300 ms), on a
/// thread of its own. Watching the directory, not the file, survives the symlink swap a
/// Kubernetes ConfigMap update does (KubeSkoop's file watch fired once).
fn watch_dirs(
    name: &str,
    dirs: impl Fn() -> Vec<PathBuf> + Send + 'static,
    interesting: impl Fn(Option<&OsString>) -> bool + Send + 'static,
    on_change: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?;
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM;
    let add_all = move |inotify: &Inotify| {
        for dir in dirs() {
            // A directory that does not exist yet is added once its parent reports it.
            let _ = inotify.add_watch(&dir, flags);
        }
    };
    add_all(&inotify);
    std::thread::Builder::new()
        .name(format!("watch-{name}"))
        .spawn(move || loop {
            let Ok(events) = inotify.read_events() else {
                return;
            };
            if !events.iter().any(|e| interesting(e.name.as_ref())) {
                continue;
            }
            // Let a burst of writes finish (editors, `kubectl apply`, lab up).
            std::thread::sleep(Duration::from_millis(300));
            add_all(&inotify);
            on_change();
        })?;
    Ok(())
}

/// Reload when the config file (or the ConfigMap's `..data` link beside it) changes.
pub fn reload_on_file_change(agent: Agent, config: &Path) -> std::io::Result<()> {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let file = config.file_name().map(OsString::from);
    let runtime = tokio::runtime::Handle::current();
    let last = std::sync::Mutex::new(std::fs::read(config).ok());
    let config = config.to_path_buf();
    watch_dirs(
        "config",
        move || vec![dir.clone()],
        move |name| name.is_some_and(|n| Some(n) == file.as_ref() || n == "..data"),
        move || {
            // Unchanged content (touch, metadata) is not a reload.
            let now = std::fs::read(&config).ok();
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return;
            }
            *last = now;
            let agent = agent.clone();
            runtime.spawn_blocking(move || reload_logged(&agent));
        },
    )
}

/// Refresh the pod map when an inventory or the kubelet's pod log directory changes, when an
/// unknown netns shows up, and on the pod map's slow timer.
pub fn refresh_pods_on_change(agent: Agent) -> std::io::Result<()> {
    agent
        .podmap()
        .spawn_refresher(crate::podmap::SLOW_REFRESH)?;
    if agent.podmap().watched_dirs().is_empty() {
        return Ok(());
    }
    let podmap = agent.podmap().clone();
    let watched = podmap.clone();
    watch_dirs(
        "pods",
        move || watched.watched_dirs(),
        |_| true,
        move || podmap.refresh(),
    )
}
