//! `cargo xtask deny`: cargo-deny over the workspace's dependency graph (installed when
//! missing): licenses, bans (duplicate versions are warnings, see `deny.toml`) and sources
//! always; advisories when the RustSec database can be fetched. A machine that cannot reach
//! github.com skips that one check and says so; a fetched database with an advisory fails.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::host::{self, Ctx};

/// The cargo-deny release installed when `cargo deny` is missing.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// The checks that need nothing but the lock file and the crates' manifests.
const OFFLINE_CHECKS: [&str; 3] = ["bans", "licenses", "sources"];

/// Runs the checks; fails naming the first that failed.
pub fn run(ctx: &Ctx) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    ensure_cargo_deny(&cargo)?;
    let deny = |args: &[&str]| {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&ctx.paths.root).arg("deny").args(args);
        cmd
    };
    let mut check = deny(&["check"]);
    check.args(OFFLINE_CHECKS);
    host::run(&mut check).context("cargo deny check bans licenses sources")?;
    if !host::succeeds(&mut deny(&["fetch", "db"])) {
        eprintln!(
            "advisories: skipped, the RustSec advisory database (github.com/RustSec/advisory-db) \
             cannot be fetched from this machine"
        );
        return Ok(());
    }
    if !host::succeeds(&mut deny(&["check", "advisories"])) {
        bail!("cargo deny check advisories found an advisory (its output is above)");
    }
    Ok(())
}

fn ensure_cargo_deny(cargo: &str) -> Result<()> {
    if host::succeeds(Command::new(cargo).args(["deny", "--version"])) {
        return Ok(());
    }
    host::run(Command::new(cargo).args([
        "install",
        "cargo-deny",
        "--version",
        CARGO_DENY_VERSION,
        "--locked",
    ]))
    .context("installing cargo-deny")
}
