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

/// Watches a configuration file and publishes each new version, valid or not.
pub struct FileWatcher {
    path: PathBuf,
    interval: Duration,
    reload_now: Arc<Notify>,
    seen: Option<Stamp>,
    last_text: Option<Vec<u8>>,
}

impl FileWatcher {
    /// Watches `path`, checking it once a second. The file as it is now counts as already
    /// published: create the watcher *before* loading the file, so a change made between
    /// the two is published rather than missed.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        FileWatcher {
            seen: stamp(&path),
            last_text: std::fs::read(&path).ok(),
            path,
            interval: Duration::from_secs(1),
            reload_now: Arc::new(Notify::new()),
        }
    }

    /// Checks the file this often instead.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A handle that forces a reload (wire SIGHUP to it).
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload_now.clone()
    }

    /// Publishes every version of the file that differs from the one seen at
    /// [`FileWatcher::new`], until `stop` fires.
    pub fn spawn(self, stop: CancellationToken) -> mpsc::Receiver<Result<Config, ConfigErrors>> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut seen = self.seen;
            let mut last_text = self.last_text;
            loop {
                let forced = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => false,
                    _ = self.reload_now.notified() => true,
                };
                let now = stamp(&self.path);
                if !forced && now == seen {
                    continue;
                }
                // A file being written in place settles within a moment; read it once it has.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let settled = stamp(&self.path);
                if !forced && settled != now {
                    continue;
                }
                seen = settled;
                let text = std::fs::read(&self.path).ok();
                if !forced && text.is_some() && text == last_text {
                    continue;
                }
                if text.is_some() {
                    last_text = text;
                }
                tracing::info!(file = %self.path.display(), forced, "configuration file changed; reloading");
                if tx.send(load_file(&self.path)).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}
