//! `cargo xtask bench [--quick] [--only NAME,...]`: the throughput harness of the connectors
//! (`benches/src/bin/throughput/`): the connector binaries and the harness built in release, the
//! services each connector needs made to answer, the harness run; the results land in
//! `target/bench/throughput.md` and `target/bench/throughput.json`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::host::{self, Ctx};
use crate::services;

/// The connectors the harness measures, in its order, with the services each needs (the MQTT
/// runs start a private Mosquitto, the RTSP runs a private GStreamer server: the services make
/// sure they are installed).
pub const CONNECTORS: &[(&str, &[&str])] = &[
    ("mqtt", &["nats", "mosquitto"]),
    ("amqp", &["nats", "rabbitmq"]),
    ("mysql", &["nats", "mariadb"]),
    ("kafka", &["nats", "kafka"]),
    ("rtsp", &["nats", "rtsp"]),
];

/// What `cargo xtask bench` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Ten times fewer records: a smoke run.
    pub quick: bool,
    /// Only these connectors (empty: all of them).
    pub only: Vec<String>,
}

/// Checks that every name of `--only` is a connector the harness knows.
pub fn check_names(names: &[String]) -> Result<()> {
    if let Some(unknown) = names
        .iter()
        .find(|name| !CONNECTORS.iter().any(|(known, _)| known == name))
    {
        let known: Vec<&str> = CONNECTORS.iter().map(|(name, _)| *name).collect();
        bail!(
            "unknown connector `{unknown}` for `bench --only`: the connectors are {}",
            known.join(", ")
        );
    }
    Ok(())
}

/// The selected connectors, in the harness's order.
fn selected(options: &Options) -> Vec<&'static str> {
    CONNECTORS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| options.only.is_empty() || options.only.iter().any(|o| o == name))
        .collect()
}

/// The services the selected connectors need, each once.
fn needed_services(connectors: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, needs) in CONNECTORS {
        if connectors.contains(name) {
            for need in *needs {
                if !names.iter().any(|n| n == need) {
                    names.push((*need).to_owned());
                }
            }
        }
    }
    names
}

/// The `cargo build` arguments: the selected connectors' binaries and the harness, in release.
fn build_args(connectors: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["build", "--release", "--bins"].map(str::to_owned).into();
    for name in connectors {
        args.push("-p".to_owned());
        args.push(format!("kps-connector-{name}"));
    }
    args.extend(["-p", "kps-benches"].map(str::to_owned));
    args
}

/// Builds, brings the services up, runs the harness.
pub fn run(ctx: &Ctx, options: &Options) -> Result<()> {
    check_names(&options.only)?;
    let connectors = selected(options);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    host::run(
        Command::new(&cargo)
            .current_dir(&ctx.paths.root)
            .args(build_args(&connectors)),
    )
    .context("building the connectors and the harness in release")?;
    services::up(ctx, &services::select(&needed_services(&connectors))?)?;

    let release = ctx.paths.target.join("release");
    let out = ctx.paths.target.join("bench");
    let mut harness = Command::new(release.join("throughput"));
    harness
        .current_dir(&ctx.paths.root)
        .arg("--bin-dir")
        .arg(&release)
        .arg("--out")
        .arg(&out)
        .arg("--rtsp-script")
        .arg(
            ctx.paths
                .root
                .join("crates/kps-connector-rtsp/testserver/rtsp_server.py"),
        );
    if options.quick {
        harness.arg("--quick");
    }
    if !options.only.is_empty() {
        harness.args(["--only", &connectors.join(",")]);
    }
    let outcome = host::run(&mut harness).context("the throughput harness");
    println!(
        "results: {} and {}",
        out.join("throughput.md").display(),
        out.join("throughput.json").display()
    );
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connector_needs_nats_and_its_broker_once() {
        assert_eq!(
            needed_services(&["mqtt", "amqp"]),
            ["nats", "mosquitto", "rabbitmq"]
        );
        assert_eq!(needed_services(&selected(&Options::default())).len(), 6);
        for (_, needs) in CONNECTORS {
            services::select(&needs.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("every service exists");
        }
    }

    #[test]
    fn builds_the_selected_connectors_and_the_harness() {
        let only = Options {
            quick: false,
            only: vec!["kafka".into(), "mqtt".into()],
        };
        assert_eq!(selected(&only), ["mqtt", "kafka"]);
        assert_eq!(
            build_args(&selected(&only)).join(" "),
            "build --release --bins -p kps-connector-mqtt -p kps-connector-kafka -p kps-benches"
        );
    }
}
