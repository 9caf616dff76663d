//! `cargo xtask demo [--duration N]`: NATS and Mosquitto up (as `services up` does), the MQTT
//! connector built, then the demo driver (crates/kps-connector-cli/examples/demo.rs) started: it
//! runs the connector, declares an ingress and an egress stream with kpsctl's library, publishes
//! sensor readings to MQTT and shows them flowing both ways until Ctrl-C or `--duration`.

use std::process::Command;

use anyhow::{Context, Result};

use crate::host::{self, Ctx};
use crate::services;

/// Runs the demo.
pub fn run(ctx: &Ctx, duration: Option<u64>) -> Result<()> {
    let needed = services::select(&["nats".to_owned(), "mosquitto".to_owned()])?;
    services::up(ctx, &needed)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    host::run(Command::new(&cargo).current_dir(&ctx.paths.root).args([
        "build",
        "-p",
        "kps-connector-mqtt",
        "-p",
        "kps-connector-cli",
        "--example",
        "demo",
    ]))
    .context("building the MQTT connector and the demo")?;
    let connector = ctx.paths.target.join("debug").join("kps-connector-mqtt");
    let driver = ctx.paths.target.join("debug").join("examples").join("demo");
    let mut demo = Command::new(driver);
    demo.current_dir(&ctx.paths.root)
        .arg("--connector-bin")
        .arg(&connector)
        .arg("--log")
        .arg(ctx.paths.target.join("demo").join("connector.log"))
        .arg("--state-dir")
        .arg(ctx.paths.target.join("demo").join("state"));
    if let Some(seconds) = duration {
        demo.args(["--duration", &seconds.to_string()]);
    }
    host::run(&mut demo).context("the demo")
}
