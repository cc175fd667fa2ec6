//! The configuration file: read, parsed and validated whole; re-read when it changes or on
//! demand (SIGHUP).
//!
//! Changes are found by polling the file's metadata once a second rather than with inotify:
//! Kubernetes updates a mounted ConfigMap by swapping a symlink, which inotify on the file
//! misses, while `stat` through the link sees it. One `stat` a second costs nothing.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use gatehouse_config::{Config, ConfigErrors};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::whole_file(&name, format!("cannot read the file: {e}")))?;
    gatehouse_config::parse(&text, &name)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
        device: m.dev(),
    })
}

/// Watches a configuration file, and the certificate and key files it names, and publishes
/// each new version of the whole configuration, valid or not.
pub struct FileWatcher {
    path: PathBuf,
    interval: Duration,
    reload_now: Arc<Notify>,
    /// The configuration file, then the files it references.
    watched: Vec<PathBuf>,
    seen: Vec<Option<Stamp>>,
    last_text: Option<Vec<u8>>,
}

fn referenced(path: &Path, text: Option<&[u8]>) -> Vec<PathBuf> {
    let name = path.display().to_string();
    let parsed = text
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| gatehouse_config::parse(t, &name).ok());
    std::iter::once(path.to_path_buf())
        .chain(parsed.map(|c| c.referenced_files()).unwrap_or_default())
        .collect()
}

impl FileWatcher {
    /// Watches `path`, checking it once a second. The files as they are now count as already
    /// published: create the watcher *before* loading the file, so a change made between
    /// the two is published rather than missed.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let last_text = std::fs::read(&path).ok();
        let watched = referenced(&path, last_text.as_deref());
        FileWatcher {
            seen: watched.iter().map(|p| stamp(p)).collect(),
            watched,
            last_text,
            path,
            interval: Duration::from_secs(1),
            reload_now: Arc::new(Notify::new()),
        }
    }

    /// Checks the files this often instead.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A handle that forces a reload (wire SIGHUP to it).
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload_now.clone()
    }

    fn stamps(&self) -> Vec<Option<Stamp>> {
        self.watched.iter().map(|p| stamp(p)).collect()
    }

    /// Publishes every version that differs from the one seen at [`FileWatcher::new`],
    /// until `stop` fires. A changed certificate or key reloads the whole configuration, so
    /// it is validated like any other change.
    pub fn spawn(
        mut self,
        stop: CancellationToken,
    ) -> mpsc::Receiver<Result<Config, ConfigErrors>> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let forced = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => false,
                    _ = self.reload_now.notified() => true,
                };
                let now = self.stamps();
                if !forced && now == self.seen {
                    continue;
                }
                // A file being written settles within a moment (and cert-manager writes the
                // certificate and the key one after the other); read once it has.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let settled = self.stamps();
                if !forced && settled != now {
                    continue;
                }
                let others_changed = settled[1..] != self.seen[1..];
                self.seen = settled;
                let text = std::fs::read(&self.path).ok();
                if !forced && !others_changed && text.is_some() && text == self.last_text {
                    continue;
                }
                if text.is_some() {
                    self.last_text = text;
                }
                tracing::info!(file = %self.path.display(), forced, "configuration or certificate changed; reloading");
                let loaded = load_file(&self.path);
                if let Ok(config) = &loaded {
                    let watched: Vec<PathBuf> = std::iter::once(self.path.clone())
                        .chain(config.referenced_files())
                        .collect();
                    if watched != self.watched {
                        self.watched = watched;
                        self.seen = self.stamps();
                    }
                }
                if tx.send(loaded).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}
