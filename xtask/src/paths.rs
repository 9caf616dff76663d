//! Where things are: the workspace root and xtask's own folder under the target directory.

use std::path::{Path, PathBuf};

/// The folders xtask works in.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The workspace root (the folder of the root `Cargo.toml`).
    pub root: PathBuf,
    /// `<target>/xtask`: the services state file, start logs and caches.
    pub xtask_dir: PathBuf,
}

impl Paths {
    /// Finds the workspace from where this crate was built, honouring `CARGO_TARGET_DIR`.
    pub fn detect() -> Paths {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Paths {
            root,
            xtask_dir: target.join("xtask"),
        }
    }

    /// The file that remembers which services `services up` started.
    pub fn services_state(&self) -> PathBuf {
        self.xtask_dir.join("services.state")
    }

    /// The log of the start commands of one service.
    pub fn start_log(&self, service: &str) -> PathBuf {
        self.xtask_dir.join("logs").join(format!("{service}.log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_workspace() {
        let paths = Paths::detect();
        assert!(paths.root.join("xtask").join("Cargo.toml").is_file());
        assert!(paths.services_state().starts_with(&paths.xtask_dir));
        assert!(paths.start_log("nats").ends_with("logs/nats.log"));
    }
}
