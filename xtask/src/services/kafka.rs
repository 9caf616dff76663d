//! The Kafka-protocol broker of the Kafka connector's tests: tansu (an Apache-licensed,
//! Kafka-compatible broker written in Rust, from crates.io), with its embedded SQLite storage, on
//! 127.0.0.1:9092. Apache Kafka itself is not installable here (no Maven registry, no Debian
//! package, no container engine); see `crates/kps-connector-kafka/README.md` for the choice.
//!
//! Installing it is building it: `cargo install tansu` (pinned version, `--locked`, only the
//! SQLite storage feature) into `~/.cache/kps-connectors/tools/tansu-<version>-<features>`, as the user
//! running xtask, on the first `services up` only: once the binary is there, nothing is fetched
//! or built again. The Debian packages listed are the C toolchain that build (and librdkafka's,
//! for the connector itself) needs.
//!
//! Why SQLite and not tansu's in-memory storage: the memory engine stores record batches whole
//! and serves a fetch only from batches that *start* at or after the fetch offset, so a consumer
//! group resuming from a committed offset inside a batch gets nothing (the broker test shows it);
//! the SQL engines store records one by one. Each start begins with an empty database
//! (`target/xtask/kafka/tansu.db`): the tests use unique topic and group names.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Argv, Install, Service, Stop};
use crate::host::{self, Ctx};
use crate::probe::Probe;

/// The port of the broker.
pub const PORT: u16 = 9092;

/// The tansu release built; changing it builds the new one beside the old.
const TANSU_VERSION: &str = "0.6.0";

/// Only the embedded SQLite storage engine (`sqlite://`): no PostgreSQL/S3/lake code is built.
const TANSU_FEATURES: &str = "libsql";

/// C compiler and make: tansu's dependencies (ring, aws-lc, zstd) and the connector's bundled
/// librdkafka build C code.
const PACKAGES: &[&str] = &["gcc", "g++", "make"];

/// The `kafka` service entry.
pub fn service() -> Service {
    Service {
        name: "kafka",
        port: PORT,
        probe: Probe::Tcp,
        // The build toolchain; the broker binary itself is built by `start` when missing.
        binary: "/usr/bin/make",
        install: Install::Apt(PACKAGES),
        start,
        stop: Stop::Terminate,
        setup: None,
        start_timeout: Duration::from_secs(60),
    }
}

/// Where the broker is installed: `tools/tansu-<version>-<features>` under the user's cache
/// (`$XDG_CACHE_HOME/kps-connectors`, else `~/.cache/kps-connectors`), so every clone on a
/// machine shares one build (it takes minutes); under `target/xtask` when there is no home.
fn install_root(ctx: &Ctx) -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|cache| cache.join("kps-connectors"))
        .unwrap_or_else(|| ctx.paths.xtask_dir.clone());
    cache
        .join("tools")
        .join(format!("tansu-{TANSU_VERSION}-{TANSU_FEATURES}"))
}

/// The broker's working folder, where its database lives.
fn data_dir(ctx: &Ctx) -> PathBuf {
    ctx.paths.xtask_dir.join("kafka")
}

/// The broker binary.
pub fn broker_binary(ctx: &Ctx) -> PathBuf {
    install_root(ctx).join("bin").join("tansu")
}

/// Builds the broker when it is not built yet, then starts it in the background on an empty
/// database.
fn start(ctx: &Ctx) -> Result<Vec<Argv>> {
    build_once(ctx)?;
    Ok(start_commands(ctx))
}

/// `cargo install tansu` into the install root, unless the binary is already there.
fn build_once(ctx: &Ctx) -> Result<()> {
    if broker_binary(ctx).is_file() {
        return Ok(());
    }
    println!(
        "kafka      {PORT:>5}  building the tansu broker {TANSU_VERSION} (first time only, several minutes; log: {})",
        ctx.paths.start_log("kafka").display()
    );
    // As the user running xtask (not root): the result belongs in this user's target folder.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(install_args(ctx));
    host::run_logged(&mut cmd, &ctx.paths.start_log("kafka"))?;
    if !broker_binary(ctx).is_file() {
        bail!(
            "cargo install tansu finished but {} is missing",
            broker_binary(ctx).display()
        );
    }
    Ok(())
}

/// The arguments of `cargo install` for the broker.
fn install_args(ctx: &Ctx) -> Vec<String> {
    vec![
        "install".into(),
        "tansu".into(),
        "--version".into(),
        format!("={TANSU_VERSION}"),
        "--locked".into(),
        "--no-default-features".into(),
        "--features".into(),
        TANSU_FEATURES.into(),
        "--root".into(),
        install_root(ctx).display().to_string(),
    ]
}

/// A fresh data folder, then `start-stop-daemon` running `tansu broker` in the background on
/// loopback, in that folder, its output in the service's start log.
fn start_commands(ctx: &Ctx) -> Vec<Argv> {
    let data = data_dir(ctx).display().to_string();
    let log = ctx.paths.start_log("kafka");
    let pidfile = ctx.paths.xtask_dir.join("kafka.pid");
    let url = format!("tcp://127.0.0.1:{PORT}");
    let mut daemon: Argv = [
        "start-stop-daemon",
        "--start",
        "--background",
        "--make-pidfile",
        "--pidfile",
    ]
    .map(str::to_owned)
    .into();
    daemon.push(pidfile.display().to_string());
    daemon.push("--output".to_owned());
    daemon.push(log.display().to_string());
    daemon.push("--chdir".to_owned());
    daemon.push(data.clone());
    daemon.push("--startas".to_owned());
    daemon.push(broker_binary(ctx).display().to_string());
    daemon.push("--".to_owned());
    daemon.extend(
        [
            "broker",
            "--cluster-id",
            "kps",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "sqlite://tansu.db",
        ]
        .map(str::to_owned),
    );
    vec![
        // A stale pid file (the broker stopped by `down`) would make start-stop-daemon refuse.
        vec![
            "rm".to_owned(),
            "-rf".to_owned(),
            data.clone(),
            pidfile.display().to_string(),
        ],
        vec!["mkdir".to_owned(), "-p".to_owned(), data],
        daemon,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_pinned_tansu_into_the_target_folder_and_starts_it_on_loopback() {
        let ctx = Ctx::detect().unwrap();
        let install = install_args(&ctx).join(" ");
        assert!(
            install.starts_with(
                "install tansu --version =0.6.0 --locked --no-default-features --features libsql --root "
            ),
            "{install}"
        );
        assert!(install.ends_with("/tools/tansu-0.6.0-libsql"), "{install}");
        let commands = start_commands(&ctx);
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[0][..2], ["rm", "-rf"], "{commands:?}");
        assert!(commands[0][2].ends_with("xtask/kafka"), "{commands:?}");
        assert!(commands[0][3].ends_with("xtask/kafka.pid"), "{commands:?}");
        assert!(
            commands[1].join(" ").ends_with("xtask/kafka"),
            "{commands:?}"
        );
        let line = commands[2].join(" ");
        assert!(
            line.starts_with("start-stop-daemon --start --background --make-pidfile"),
            "{line}"
        );
        assert!(line.contains("logs/kafka.log"), "{line}");
        assert!(line.contains("--chdir /"), "{line}");
        assert!(
            line.ends_with(
                "tools/tansu-0.6.0-libsql/bin/tansu -- broker --cluster-id kps \
                 --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
                 --storage-engine sqlite://tansu.db"
            ),
            "{line}"
        );
        let svc = service();
        assert_eq!((svc.name, svc.port), ("kafka", 9092));
        assert!(svc.packages().contains(&"make"));
    }
}
