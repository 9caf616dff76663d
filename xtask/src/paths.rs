//! Where things are: the workspace root and xtask's own folder under the target directory.

use std::path::{Path, PathBuf};

/// The folders xtask works in.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The workspace root (the folder of the root `Cargo.toml`).
    pub root: PathBuf,
    /// The cargo target directory (`CARGO_TARGET_DIR`, else `<root>/target`).
    pub target: PathBuf,
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
            target,
        }
    }

    /// The file that remembers which services `services up` started.
    pub fn services_state(&self) -> PathBuf {
        self.xtask_dir.join("services.state")
    }

    /// Where `cargo xtask deploy` writes: `<root>/deploy`.
    pub fn deploy_dir(&self) -> PathBuf {
        self.root.join("deploy")
    }

    /// A binary cargo built in `profile` (`debug` or `release`).
    pub fn binary(&self, profile: &str, name: &str) -> PathBuf {
        self.target.join(profile).join(name)
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
        assert!(paths.xtask_dir.starts_with(&paths.target));
        assert_eq!(paths.deploy_dir(), paths.root.join("deploy"));
        assert!(paths.binary("release", "x").ends_with("release/x"));
    }
}
