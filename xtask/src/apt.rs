//! Installing Debian packages: one `apt-get update`, then one `apt-get install` for everything
//! missing, non-interactive. While it runs, a `policy-rc.d` (if the machine has none) keeps the
//! packages from starting their services, so that `services up` starts each one its own way
//! (e.g. NATS with JetStream, which the packaged unit does not enable).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::host::{self, Ctx};

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Debian packages the workspace's build needs besides the C toolchain, each with a file whose
/// presence shows it is installed: the Kafka connector's librdkafka links the system OpenSSL
/// (rdkafka's `ssl` feature), which `openssl-sys` finds with pkg-config.
const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("libssl-dev", "/usr/include/openssl/ssl.h"),
    ("pkg-config", "/usr/bin/pkg-config"),
];

/// The build packages ([`BUILD_PACKAGES`]) missing on this machine; empty once installed, so
/// ensuring them is idempotent.
pub fn missing_build_packages() -> Vec<&'static str> {
    missing(BUILD_PACKAGES, |path| Path::new(path).exists())
}

/// The packages of `packages` whose file `exists` does not find.
fn missing(
    packages: &[(&'static str, &'static str)],
    exists: impl Fn(&str) -> bool,
) -> Vec<&'static str> {
    packages
        .iter()
        .filter(|(_, file)| !exists(file))
        .map(|(package, _)| *package)
        .collect()
}

/// Installs `packages` with apt-get.
pub fn install(ctx: &Ctx, packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let _policy = PolicyGuard::install(ctx)?;
    host::run(&mut ctx.host.privileged(&["apt-get", "update", "-q"], &env))?;
    host::run(&mut ctx.host.privileged(&install_argv(packages), &env))
}

/// The `apt-get install` command line for `packages`.
fn install_argv<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec![
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ];
    argv.extend_from_slice(packages);
    argv
}

/// A `policy-rc.d` that refuses service starts, removed on drop (only if xtask put it there).
struct PolicyGuard<'a> {
    ctx: &'a Ctx,
    installed: bool,
}

impl<'a> PolicyGuard<'a> {
    fn install(ctx: &'a Ctx) -> Result<PolicyGuard<'a>> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(PolicyGuard {
                ctx,
                installed: false,
            });
        }
        let script: PathBuf = ctx.paths.xtask_dir.join("policy-rc.d");
        fs::create_dir_all(&ctx.paths.xtask_dir)
            .with_context(|| format!("cannot create {}", ctx.paths.xtask_dir.display()))?;
        fs::write(&script, "#!/bin/sh\n# cargo xtask: services are started by `cargo xtask services up`\nexit 101\n")
            .with_context(|| format!("cannot write {}", script.display()))?;
        let script = script.to_string_lossy().into_owned();
        host::run(
            &mut ctx
                .host
                .privileged(&["install", "-m", "0755", &script, POLICY_RC_D], &[]),
        )?;
        Ok(PolicyGuard {
            ctx,
            installed: true,
        })
    }
}

impl Drop for PolicyGuard<'_> {
    fn drop(&mut self) {
        if self.installed
            && let Err(err) =
                host::run(&mut self.ctx.host.privileged(&["rm", "-f", POLICY_RC_D], &[]))
        {
            eprintln!("warning: could not remove {POLICY_RC_D}: {err:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_packages_are_only_the_missing_ones() {
        let all = missing(BUILD_PACKAGES, |_| false);
        assert_eq!(all, ["libssl-dev", "pkg-config"]);
        assert!(missing(BUILD_PACKAGES, |_| true).is_empty());
        let headers_only = missing(BUILD_PACKAGES, |file| file.ends_with("ssl.h"));
        assert_eq!(headers_only, ["pkg-config"]);
    }

    #[test]
    fn install_is_non_interactive_and_keeps_configs() {
        let argv = install_argv(&["mosquitto", "nats-server"]);
        assert_eq!(&argv[..3], &["apt-get", "install", "-y"]);
        assert!(argv.contains(&"Dpkg::Options::=--force-confold"));
        assert_eq!(&argv[argv.len() - 2..], &["mosquitto", "nats-server"]);
    }
}
