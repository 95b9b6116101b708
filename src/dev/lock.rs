//! [`DataDirLock`]: one `polos dev` per data directory, because two nats-servers on one
//! JetStream store would corrupt it.

use std::path::{Path, PathBuf};

use super::DevError;

/// `<data dir>/dev.pid` holding this process's id; removed when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    /// The pid file.
    path: PathBuf,
}

impl DataDirLock {
    /// Claims `data_dir`, failing when the pid file names another live process. A stale file
    /// (its process is gone, e.g. after `kill -9`) is taken over.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, DevError> {
        let io = |source: std::io::Error| DevError::DataDir {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let path = data_dir.join("dev.pid");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(pid) = text.trim().parse::<u32>() {
                if pid != std::process::id() && is_running(pid) {
                    return Err(DevError::InUse {
                        path: data_dir.display().to_string(),
                        pid,
                    });
                }
            }
        }
        std::fs::write(&path, format!("{}\n", std::process::id())).map_err(io)?;
        Ok(DataDirLock { path })
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `pid` is a live process (Linux: `/proc/<pid>` exists and is not a zombie). Elsewhere
/// there is no cheap check without extra dependencies, so a pid file always counts as stale.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}
