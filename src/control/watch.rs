//! Certificate and configuration watching (being replaced by the inotify watcher).

use std::path::{Path, PathBuf};

use crate::config::Config;

/// What to watch for one configuration.
pub fn watched_paths(
    _config: &Config,
    config_path: &Path,
    _secrets_dir: Option<&Path>,
) -> Vec<PathBuf> {
    vec![config_path.to_path_buf()]
}

/// Reports changes to watched paths.
pub struct Watcher;

impl Watcher {
    pub fn spawn(
        _paths: Vec<PathBuf>,
        _on_change: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Watcher> {
        Ok(Watcher)
    }
    pub fn set_paths(&self, _paths: Vec<PathBuf>) {}
    pub fn mode(&self) -> &'static str {
        "off"
    }
}
