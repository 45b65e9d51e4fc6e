//! Scaffolding shared by the service's integration tests (`mod common;` in each test file).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

/// A path under the temp directory, unique to this process, `name` and call; not created, and
/// anything left there by an earlier run removed.
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-test-{}-{name}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A directory removed (with its contents) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, created directory (see [`temp_path`]).
    pub fn new(name: &str) -> Self {
        let dir = temp_path(name);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
